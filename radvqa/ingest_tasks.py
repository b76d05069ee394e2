"""The work ``ingest-dicom`` hands to worker processes: read one header, convert slices to PNG.

Worker processes import this module (and ``radvqa.dicom``) only: no pandas, no labels, no
taxonomy, so a spawned worker starts in a fraction of a second. Every function here is
top-level and takes and returns plain picklable values.

Privacy: pydicom's validation warnings quote header values (UIDs, over-long PatientIDs), so
reading runs with validation off and every warning and log record silenced (``quiet_pydicom``),
here and in the workers alike; failures are reported by exception type and a short text that
never holds a value read from the file.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dicom import BlankSlice, PixelParams, frame_item, frame_view, render_frame
from .writers import write_bytes_atomic

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# What the header scan reads (pydicom skips the rest: about 30% faster than a full header).
HEADER_TAGS = (
    "SOPClassUID", "ImageType", "BurnedInAnnotation",
    "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "Modality", "SOPInstanceUID", "InstanceNumber",
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
    "ImageOrientationPatient", "ImagePositionPatient",
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", *PIXEL_TAGS,
)
# CT and MR image storage SOP classes (PS3.4 B.5); anything else is not an acquired slice.
IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
})
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its .1-.4 multi-frame variants
SKIP_BURNED_IN = "burned-in annotation (BurnedInAnnotation YES: text in the pixels)"
SKIP_SECONDARY_CAPTURE = "Secondary Capture image (a screen or scan, not an acquired slice)"
SKIP_LOCALIZER = "localizer image (ImageType LOCALIZER)"
SKIP_SCREEN_SAVE = "screen save (ImageType SCREEN SAVE)"
SKIP_DERIVED = "secondary image (ImageType SECONDARY; --include-derived admits it)"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_PLANE_DECIMALS = 3  # orientations equal to 1e-3 are one plane


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Read with pydicom's value validation off and its warnings and log records silenced.

    Its messages quote header values (``Invalid value for VR UI: '<uid>'``); radvqa reports
    problems by reason only. Restores the previous settings on exit.
    """
    from pydicom import config

    logger = logging.getLogger("pydicom")
    mode, disabled = config.settings.reading_validation_mode, logger.disabled
    config.settings.reading_validation_mode = config.IGNORE
    logger.disabled = True  # (setLevel would clear every logger's cache on each call)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = mode
        logger.disabled = disabled


# --- header scan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameRef:
    """One frame of one file, with what is needed to group and order it."""

    rel: str
    frame: int
    sop: str
    position: tuple[float, float, float] | None
    instance: int | None
    syntax: str
    orientation: tuple[float, ...] | None = None


def _text(value: Any) -> str:
    return str(value or "").strip()


def _vector(value: Any, length: int) -> Any:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == length else None


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)
    return [_text(v).upper() for v in items]


def content_skip(ds: Any) -> str | None:
    """Why an image is not a training slice (burned-in text, not CT/MR, localizer...), or None.

    Always skipped: BurnedInAnnotation YES (PS3.3 C.7.6.1: identifying text in the pixels),
    Secondary Capture and other non-CT/MR SOP classes, ImageType LOCALIZER or SCREEN SAVE.
    ImageType SECONDARY is returned as SKIP_DERIVED, which the caller may admit.
    """
    from pydicom.uid import UID

    if _text(ds.get("BurnedInAnnotation")).upper() == "YES":
        return SKIP_BURNED_IN
    sop_class = _text(ds.get("SOPClassUID")) or _text(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID"))
    if sop_class and sop_class not in IMAGE_SOP_CLASSES:
        if sop_class == SECONDARY_CAPTURE or sop_class.startswith(SECONDARY_CAPTURE + "."):
            return SKIP_SECONDARY_CAPTURE
        name = UID(sop_class).name
        return f"not a CT or MR image ({name if name != sop_class else 'unknown SOP class'})"
    image_type = _values(ds.get("ImageType"))
    if "LOCALIZER" in image_type:
        return SKIP_LOCALIZER
    if "SCREEN SAVE" in image_type:
        return SKIP_SCREEN_SAVE
    if "SECONDARY" in image_type:
        return SKIP_DERIVED
    return None


def _read(path: Path, **kwargs: Any) -> Any:
    """dcmread, then again with ``force`` for files without the 128-byte preamble (PS3.10 7.1)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True, **kwargs)
        if "SOPClassUID" not in ds and not any(tag in ds for tag in PIXEL_TAGS):
            raise
        return ds


def transfer_syntax(ds: Any) -> str:
    """The file's transfer syntax, or the encoding pydicom found when it has no file meta."""
    syntax = _text(getattr(ds, "file_meta", {}).get("TransferSyntaxUID"))
    if syntax:
        return syntax
    implicit, little = getattr(ds, "original_encoding", (True, True))
    return _IMPLICIT_LE if implicit else (_EXPLICIT_LE if little else _EXPLICIT_BE)


def read_header(path: Path, rel: str) -> tuple[str, list[FrameRef], dict[str, Any]] | str:
    """(series uid, frames, series facts) of one file, or why it cannot be used.

    Call it inside ``quiet_pydicom`` (``read_headers`` does).
    """
    from pydicom.errors import InvalidDicomError

    try:
        ds = _read(path, defer_size="2 KB", specific_tags=list(HEADER_TAGS))
    except InvalidDicomError:
        return "not a DICOM file"
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged headers
        return f"unreadable DICOM header ({type(exc).__name__})"
    try:
        return _header_facts(ds, rel)
    except Exception as exc:  # noqa: BLE001 - a malformed value is this file's problem
        return f"unreadable DICOM header ({type(exc).__name__})"


def _header_facts(ds: Any, rel: str) -> tuple[str, list[FrameRef], dict[str, Any]] | str:
    if not any(tag in ds for tag in PIXEL_TAGS):
        return "no image data (not an image object)"
    skip = content_skip(ds)
    if skip is not None and skip != SKIP_DERIVED:
        return skip
    uid = _text(ds.get("SeriesInstanceUID"))
    if not uid:
        return "no SeriesInstanceUID"
    photometric = _text(ds.get("PhotometricInterpretation"))
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric not in GREYSCALE:
        return "not a greyscale image (only MONOCHROME1/2 CT and MR are supported)"
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        shape = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError):
        return "no valid Rows/Columns/NumberOfFrames"
    syntax = transfer_syntax(ds)
    top_orientation = _vector(ds.get("ImageOrientationPatient"), 6)
    sop = _text(ds.get("SOPInstanceUID")) or rel
    instance = ds.get("InstanceNumber")
    number = int(instance) if instance not in (None, "") else None
    refs = []
    for frame in range(frames):
        if frames == 1:
            position = _vector(ds.get("ImagePositionPatient"), 3)
        else:
            item = frame_item(ds, frame, "PlanePositionSequence")
            position = _vector(item.get("ImagePositionPatient") if item else None, 3)
        orientation = top_orientation
        if orientation is None:
            item = frame_item(ds, frame, "PlaneOrientationSequence")  # per frame, then shared
            orientation = _vector(item.get("ImageOrientationPatient") if item else None, 6)
        refs.append(FrameRef(rel, frame, sop, position, number, syntax, orientation))
    facts = {
        "study": _text(ds.get("StudyInstanceUID")),
        "patient": _text(ds.get("PatientID")),
        "modality": _text(ds.get("Modality")),
        "shape": shape,
        "derived": skip == SKIP_DERIVED,
    }
    return uid, refs, facts


def plane_key(orientation: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """An orientation rounded so that frames of one plane share it."""
    return None if orientation is None else tuple(round(v, _PLANE_DECIMALS) + 0.0 for v in orientation)


def read_headers(input_dir: str, rels: list[str]) -> list[tuple[str, Any]]:
    """read_header for a chunk of files (one executor task; INPUT is the shared value), pydicom quiet."""
    with quiet_pydicom():
        return [(rel, read_header(Path(input_dir) / rel, rel)) for rel in rels]


# --- conversion ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One output slice and the copies it may come from: (file under INPUT, frame), first decoding wins."""

    out: str
    sources: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class SliceJob:
    """Write the first candidate that is not blank (several only for ``--slices middle``)."""

    candidates: tuple[Candidate, ...]
    params: PixelParams


@dataclass(frozen=True)
class FileTask:
    """Slice jobs whose first source lies in one file, and where they go."""

    input_dir: str
    rel: str
    jobs: tuple[SliceJob, ...]
    stage: str


@dataclass
class JobResult:
    """What happened to one slice job: the PNG written (or None) and the problems met on the way."""

    planned: str
    written: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file under INPUT, reason)
    replaced: bool = False  # written from another candidate than the first (nearest non-blank)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text.split(" - ")[0][:100]
    if "'" in text or '"' in text:  # quoted values may be header values: keep the type only
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Decoded:
    """The last file opened by a task and its decoded frames (one file kept at a time)."""

    def __init__(self, input_dir: str, wanted: dict[str, int]) -> None:
        self.input_dir, self.wanted = input_dir, wanted
        self.rel: str | None = None
        self.ds: Any = None
        self.stack: np.ndarray | None = None

    def frame(self, rel: str, frame: int) -> tuple[np.ndarray, Any]:
        """Stored values of one frame and its view; raises on any decode failure."""
        from pydicom.pixels import pixel_array

        if rel != self.rel:
            self.rel, self.ds, self.stack = rel, None, None
            ds = _read(Path(self.input_dir) / rel)
            if "TransferSyntaxUID" not in ds.file_meta:
                ds.file_meta.TransferSyntaxUID = transfer_syntax(ds)
            self.ds = ds
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            if frames == 1 or self.wanted.get(rel, 1) * 2 > frames:
                self.stack = ds.pixel_array.reshape(frames, int(ds.Rows), int(ds.Columns))
        if self.ds is None:
            raise ValueError("file did not decode")
        pixels = self.stack[frame] if self.stack is not None else pixel_array(self.ds, index=frame)
        return pixels, frame_view(self.ds, frame)


def convert_task(task: FileTask) -> list[JobResult]:
    """Decode and write each job's slice (each PNG via a temporary name)."""
    wanted: dict[str, int] = {}
    for job in task.jobs:
        rel = job.candidates[0].sources[0][0]
        wanted[rel] = wanted.get(rel, 0) + 1
    decoded = _Decoded(task.input_dir, wanted)
    with quiet_pydicom():
        return [_run_job(job, decoded, Path(task.stage)) for job in task.jobs]


def _run_job(job: SliceJob, decoded: _Decoded, stage: Path) -> JobResult:
    result = JobResult(job.candidates[0].out)
    for n, candidate in enumerate(job.candidates):
        data = _render(candidate, job.params, decoded, result)
        if data is None:
            continue
        target = stage / candidate.out
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
        result.written, result.replaced = candidate.out, n > 0
        break
    return result


def _render(candidate: Candidate, params: PixelParams, decoded: _Decoded, result: JobResult) -> bytes | None:
    """PNG bytes of a candidate from the first copy that decodes, or None (problems recorded)."""
    for rel, frame in candidate.sources:
        try:
            pixels, view = decoded.frame(rel, frame)
        except Exception as exc:  # noqa: BLE001 - a damaged copy: try the next one
            result.problems.append((rel, f"cannot decode pixel data ({_short(exc)})"))
            continue
        try:
            return render_frame(pixels, view, params)
        except BlankSlice as exc:
            result.problems.append((rel, str(exc)))
        except Exception as exc:  # noqa: BLE001 - odd pixel modules fail one slice, not the run
            result.problems.append((rel, f"cannot convert ({_short(exc)})"))
        return None
    return None


def convert_tasks(_: None, tasks: list[FileTask]) -> list[list[JobResult]]:
    """convert_task for a batch of tasks (one executor task; nothing is shared)."""
    return [convert_task(task) for task in tasks]
