"""Tiny DICOM files for tests, made from pydicom's bundled CT_small.dcm / MR_small.dcm."""

from __future__ import annotations

import io
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

PHI_NAME = "Doe^Jane"
PHI_DATE = "19990101"


def bundled(name: str) -> Path:
    """A test file shipped inside the pydicom wheel (never downloaded)."""
    path = pydicom.data.get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom"
    return Path(str(path))


@cache
def _template_bytes(name: str) -> bytes:
    return bundled(name).read_bytes()


def _template(name: str) -> Dataset:
    return pydicom.dcmread(io.BytesIO(_template_bytes(name)))


def _identify(ds: Dataset, patient: str, series: str, study: str | None) -> None:
    ds.PatientID = patient
    ds.PatientName = PHI_NAME
    ds.PatientBirthDate = PHI_DATE
    ds.StudyDate = PHI_DATE
    ds.SeriesInstanceUID = series
    ds.StudyInstanceUID = study or f"{series}.9"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def ct_file(
    path: Path,
    hu: np.ndarray,
    *,
    patient: str = "PID-1",
    series: str = "1.2.826.0.1.3680043.10.1.1",
    study: str | None = None,
    z: float = 0.0,
    instance: int = 1,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    preamble: bool = True,
    **extra: object,
) -> Path:
    """A CT slice with the given Hounsfield values (stored = (HU - intercept) / slope).

    ``extra`` sets more attributes by keyword (None deletes one); ``preamble=False`` writes the
    bare dataset (no 128-byte preamble, no file meta), as some archives do.
    """
    ds = _template("CT_small.dcm")
    del ds.PixelPaddingValue  # CT_small's -2000; tests that want padding set it
    _identify(ds, patient, series, study)
    ds.Modality = modality
    stored = np.rint((np.asarray(hu, dtype=np.float64) - intercept) / slope).astype(np.int16)
    ds.set_pixel_data(stored, photometric, 16)
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.InstanceNumber = instance
    for keyword, value in extra.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
            if keyword.startswith("PixelPadding"):
                ds[keyword].VR = "SS"  # US or SS by Pixel Representation (signed here)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.preamble = None
        pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    return path


def ct_multiframe(
    path: Path,
    frames_hu: np.ndarray,
    positions: list[float],
    *,
    patient: str = "PID-MF",
    series: str = "1.2.826.0.1.3680043.10.1.77",
    intercept: float = -1024.0,
    orientations: list[list[float]] | None = None,
) -> Path:
    """An enhanced-style multi-frame CT: per-frame positions, rescale in shared functional groups."""
    ds = _template("CT_small.dcm")
    _identify(ds, patient, series, None)
    stored = np.rint(np.asarray(frames_hu, dtype=np.float64) - intercept).astype(np.int16)
    ds.set_pixel_data(stored, "MONOCHROME2", 16)
    for keyword in ("RescaleSlope", "RescaleIntercept", "ImagePositionPatient", "ImageOrientationPatient"):
        if keyword in ds:
            delattr(ds, keyword)
    transform = Dataset()
    transform.RescaleSlope = 1
    transform.RescaleIntercept = intercept
    transform.RescaleType = "HU"
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    if orientations is not None:
        del shared.PlaneOrientationSequence
    per_frame = []
    for i, z in enumerate(positions):
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, z] if orientations is None or orientations[i][0] else [z, 0.0, 0.0]
        item = Dataset()
        item.PlanePositionSequence = Sequence([position])
        if orientations is not None:  # per-frame planes (PS3.3 C.7.6.16.2.4)
            plane = Dataset()
            plane.ImageOrientationPatient = orientations[i]
            item.PlaneOrientationSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def copy_bundled(
    name: str, path: Path, *, series: str, patient: str = "PID-MR", modality: str | None = None
) -> Path:
    """A bundled file re-identified as its own series (pixel data untouched, compressed or not)."""
    ds = pydicom.dcmread(bundled(name))
    _identify(ds, patient, series, None)
    if modality:
        ds.Modality = modality
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def raw_copy(name: str, path: Path) -> Path:
    """A byte-for-byte copy of a bundled file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundled(name), path)
    return path


def quadrants(values: tuple[float, float, float, float], side: int = 32) -> np.ndarray:
    """A side x side image whose four quadrants hold the four values (TL, TR, BL, BR)."""
    half = side // 2
    image = np.empty((side, side), dtype=np.float64)
    image[:half, :half], image[:half, half:], image[half:, :half], image[half:, half:] = values
    return image


def write_labels(path: Path, header: str, rows: list[str]) -> Path:
    """A LABELS.csv file."""
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


@contextmanager
def lax_pydicom() -> Iterator[None]:
    """Let pydicom write invalid values (bad UIDs, over-long PatientIDs) without warnings."""
    from pydicom import config

    modes = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = modes


# --- the standard's formulas, written out independently of pydicom and radvqa ------------------


def window_grey(x: np.ndarray | float, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI window onto 0..255: PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.1 (LINEAR_EXACT), C.11.2.1.3.2 (SIGMOID)."""
    x = np.asarray(x, dtype=np.float64)
    if function == "SIGMOID":
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = np.where(x <= center - width / 2, 0.0, np.where(x > center + width / 2, 255.0, ((x - center) / width + 0.5) * 255))
    else:
        c, w = center - 0.5, width - 1
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, ((x - c) / w + 0.5) * 255))
    return np.rint(y).astype(np.uint8)


def linear_grey(hu: float, window: object) -> int:
    """One value through the LINEAR window (PS3.3 C.11.2.1.2.1) of a radvqa Window."""
    return int(window_grey(hu, window.center, window.width))  # type: ignore[attr-defined]


def percentile_grey(x: np.ndarray, content: np.ndarray, low_p: float = 0.5, high_p: float = 99.5) -> np.ndarray:
    """MR scaling: LINEAR_EXACT between two nearest-rank percentiles of ``content``."""
    ordered = np.sort(content.ravel())
    rank = [min(ordered.size - 1, int(p / 100.0 * (ordered.size - 1) + 0.5)) for p in (low_p, high_p)]
    low, high = float(ordered[rank[0]]), float(ordered[rank[1]])
    return window_grey(x, (low + high) / 2, high - low, "LINEAR_EXACT")
