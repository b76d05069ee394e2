"""End-to-end ``ingest-dicom``: folders of DICOM files -> a copy that ``generate`` reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pydicom
import pytest
from dicom_helpers import (
    PHI_DATE,
    PHI_NAME,
    copy_bundled,
    ct_file,
    lax_pydicom,
    percentile_grey,
    ct_multiframe,
    quadrants,
    raw_copy,
    window_grey,
    write_labels,
)
from PIL import Image
from pydicom.pixels.decoders.base import Decoder
from typer.testing import CliRunner

import radvqa.ingest as ingest_module
import radvqa.ingest_tasks as ingest_tasks
from radvqa.cli import app
from radvqa.config import Config
from radvqa.dataset import generate_dataset
from radvqa.dicom import Window, load_windows
from radvqa.errors import MissingDependencyError, OutputError, SourceError
from radvqa.executors import Interrupted
from radvqa.ingest_tasks import SKIP_BURNED_IN, SKIP_DERIVED, SKIP_LOCALIZER, SKIP_SECONDARY_CAPTURE
from radvqa.ingest import (
    IngestOptions,
    IngestResult,
    SliceSpec,
    ingest_dicom,
    parse_ratios,
    parse_slices,
    series_tag,
)
from radvqa.source import read_source
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet

SALT = "test-salt"
runner = CliRunner()


def run(
    taxonomy: Taxonomy, input_dir: Path, root: Path, labels: Path, **options: object
) -> IngestResult:
    opts = IngestOptions(salt=str(options.pop("salt", SALT)), **options)  # type: ignore[arg-type]
    return ingest_dicom(input_dir, root, labels, taxonomy, load_windows(), opts)


def linear_grey(hu: float, window: Window) -> int:
    """PS3.3 C.11.2.1.2.1 LINEAR window onto 0..255, written out independently of pydicom."""
    c, w = window.center - 0.5, window.width - 1
    if hu <= c - w / 2:
        return 0
    if hu > c + w / 2:
        return 255
    return int(np.rint(((hu - c) / w + 0.5) * 255))


def pngs(root: Path) -> list[Path]:
    return sorted((root / "radiology_ai").rglob("*.png"))


def csv_rows(root: Path) -> dict[str, list[str]]:
    return {s: pd.read_csv(root / f"RadiologyAI_{s}.csv")["filename"].tolist() for s in ("train", "val", "test")}


def marker_series(folder: Path, series: str, order: list[int], patient: str = "PID-1") -> None:
    """Five CT slices: slice k (by position) has a square of HU 100k - 150; file names scramble the order."""
    for name, k in zip("caebd", order):
        image = np.full((32, 32), -1000.0)
        image[8:24, 8:24] = 100.0 * k - 150.0
        ct_file(folder / f"{name}.dcm", image, series=series, z=10.0 * k, instance=5 - k, patient=patient)


@pytest.fixture()
def abd_labels(tmp_path: Path) -> Path:
    return write_labels(tmp_path / "labels.csv", "path,modality,anatomy,pathology", ["series,CT,abd,normal"])


def test_middle_slice_is_chosen_by_position_not_file_name(
    tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path
) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.100", order=[3, 0, 4, 1, 2])
    result = run(taxonomy, tmp_path / "in", tmp_path / "root", abd_labels, size=32)
    [png] = pngs(tmp_path / "root")
    grey = np.asarray(Image.open(png))
    # The middle slice by position is k=2: HU 50 -> ((50 - 39.5) / 399 + 0.5) * 255 = 134.2
    assert grey[16, 16] == 134 and grey[0, 0] == 0
    assert png.parent.relative_to(tmp_path / "root").as_posix() == "radiology_ai/CT/abd/normal"
    assert result.report.slices == {"train": 0, "val": 0, "test": 0} | {
        s: 1 for s, n in csv_rows(tmp_path / "root").items() if n
    }


def test_all_slices_keep_position_order_and_every_n(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.101", order=[3, 0, 4, 1, 2])
    plans = {}
    for spec in ("all", "every:2", "count:2"):
        root = tmp_path / spec.replace(":", "")
        run(taxonomy, tmp_path / "in", root, abd_labels, size=32, slices=parse_slices(spec))
        greys = sorted(int(np.asarray(Image.open(p))[16, 16]) for p in pngs(root))
        plans[spec] = greys
    k = [6, 70, 134, 198, 255]  # HU -150, -50, 50, 150, 250 in the abdomen window (40/400)
    assert plans["all"] == k
    assert plans["every:2"] == [k[0], k[2], k[4]]
    assert plans["count:2"] == [k[1], k[3]]


def test_multiframe_file_is_split_and_ordered_by_frame_position(
    tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path
) -> None:
    frames = np.full((3, 32, 32), -1000.0)
    for i, hu in enumerate((240.0, -100.0, 40.0)):
        frames[i, 8:24, 8:24] = hu
    # Positions put frame 1 first and frame 0 last: the middle slice is frame 2 (HU 40).
    ct_multiframe(tmp_path / "in" / "series" / "mf.dcm", frames, positions=[30.0, 10.0, 20.0])
    run(taxonomy, tmp_path / "in", tmp_path / "one", abd_labels, size=32)
    [middle] = pngs(tmp_path / "one")
    assert np.asarray(Image.open(middle))[16, 16] == 128
    result = run(taxonomy, tmp_path / "in", tmp_path / "all", abd_labels, size=32, slices=SliceSpec("all"))
    assert result.report.images == 3 and result.report.written == 3
    assert sorted(int(np.asarray(Image.open(p))[16, 16]) for p in pngs(tmp_path / "all")) == [38, 128, 255]


def test_compressed_bundled_files_decode_like_the_uncompressed_one(tmp_path: Path, taxonomy: Taxonomy) -> None:
    variants = {
        "MR_small.dcm": "brain",
        "MR_small_RLE.dcm": "knee",
        "MR_small_jp2klossless.dcm": "hip",
        "MR_small_jpeg_ls_lossless.dcm": "spine",
    }
    rows = []
    for i, (name, anatomy) in enumerate(variants.items()):
        copy_bundled(name, tmp_path / "in" / anatomy / "f.dcm", series=f"1.2.3.20{i}")
        rows.append(f"{anatomy},MR,{anatomy},normal")
    labels = write_labels(tmp_path / "labels.csv", "path,modality,anatomy,pathology", rows)
    # MR_small is ImageType DERIVED\SECONDARY: skipped by default, admitted by --include-derived
    skipped = run(taxonomy, tmp_path / "in", tmp_path / "default", labels, size=64).report
    assert skipped.written == 0 and skipped.skipped == {SKIP_DERIVED: 4}
    result = run(taxonomy, tmp_path / "in", tmp_path / "root", labels, size=64, include_derived=True)
    assert result.report.written == 4 and not result.report.skipped
    images = {p.parts[-3]: np.asarray(Image.open(p)) for p in pngs(tmp_path / "root")}
    for anatomy in ("knee", "hip", "spine"):
        assert np.array_equal(images[anatomy], images["brain"]), anatomy


REAL_FILES = {  # output size = native size, so each PNG is the grey image itself
    512: {"j2k": ("693_J2KR.dcm", "CT,abd,normal,"),  # JPEG 2000, Pixel Padding Value -2000 in use
          "own": ("693_UNCR.dcm", "CT,abd,normal,dicom")},  # the file's own window, 40/100
    128: {"ct": ("CT_small.dcm", "CT,abd,normal,")},
    64: {"mr": ("MR_small.dcm", "MR,brain,normal,"),
         **{f"emri{i}": (name, "MR,brain,normal,") for i, name in enumerate(
             ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm",
              "emri_small_RLE.dcm"))}},
}


@pytest.mark.parametrize("size", sorted(REAL_FILES))
def test_real_files_match_the_standards_formulas(tmp_path: Path, taxonomy: Taxonomy, size: int) -> None:
    """pydicom's and pydicom-data's real CT/MR files, each PNG against the formulas of PS3.3 C.11."""
    files = REAL_FILES[size]
    for i, (folder, (name, _)) in enumerate(files.items()):
        copy_bundled(name, tmp_path / "in" / folder / "f.dcm", series=f"1.2.3.42{i}", patient=f"P{i}")
    labels = write_labels(tmp_path / "l.csv", "path,modality,anatomy,pathology,window",
                          [f"{folder},{row}" for folder, (_, row) in files.items()])
    root = tmp_path / "root"
    report = run(taxonomy, tmp_path / "in", root, labels, size=size, slices=SliceSpec("all"), include_derived=True).report
    assert not report.skipped
    checked = 0
    for i, folder in enumerate(files):
        ds = pydicom.dcmread(tmp_path / "in" / folder / "f.dcm")
        for frame, pixels in enumerate(ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)):
            if ds.Modality == "CT":  # modality LUT (C.11.1), then the window (C.11.2.1.2)
                hu = pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                expected = window_grey(hu, 40, 100) if folder == "own" else window_grey(hu, 40, 400)
                expected[pixels == int(ds.get("PixelPaddingValue", -(1 << 20)))] = 0  # padding: background
            else:
                expected = percentile_grey(pixels, pixels)
            out = f"{series_tag(SALT, f'1.2.3.42{i}')}-{ingest_module.slice_tag(SALT, ds.SOPInstanceUID, frame)}.png"
            [png] = list(root.rglob(out))
            assert np.array_equal(np.asarray(Image.open(png)), expected), (folder, frame)
            checked += 1
    assert checked == report.written == {512: 2, 128: 1, 64: 41}[size]


def test_patient_level_split(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    patients = {}
    for p in range(16):
        for s in range(2):
            uid = f"1.2.3.{p}.{s}"
            patients[uid] = f"PID-{p}"
            image = np.full((16, 16), -1000.0)
            image[4:12, 4:12] = 40.0 + s
            ct_file(tmp_path / "in" / "series" / f"p{p}s{s}.dcm", image, series=uid, patient=f"PID-{p}")
    ratios = {"train": 0.5, "val": 0.25, "test": 0.25}
    splits_by_salt = []
    for salt in (SALT, "other-salt"):
        root = tmp_path / salt
        run(taxonomy, tmp_path / "in", root, abd_labels, size=16, slices=SliceSpec("all"), split_ratios=ratios, salt=salt)
        tags = {series_tag(salt, uid): uid for uid in patients}
        split_of_patient: dict[str, set[str]] = {}
        for split, files in csv_rows(root).items():
            for name in files:
                uid = tags[Path(name).name.split("-")[0]]
                split_of_patient.setdefault(patients[uid], set()).add(split)
        assert len(split_of_patient) == 16
        assert all(len(s) == 1 for s in split_of_patient.values())  # never straddles splits
        assert {next(iter(s)) for s in split_of_patient.values()} == {"train", "val", "test"}
        assert sum(len(f) for f in csv_rows(root).values()) == 16 * 2
        splits_by_salt.append({p: next(iter(s)) for p, s in split_of_patient.items()})
    assert splits_by_salt[0] != splits_by_salt[1]  # the salt, not the id, decides


def test_bad_files_and_series_are_reported_and_skipped(tmp_path: Path, taxonomy: Taxonomy) -> None:
    good = tmp_path / "in" / "good"
    ct_file(good / "1.dcm", quadrants((-1000, 40, 140, 1000)), series="1.2.3.1")
    raw_copy("MR_truncated.dcm", tmp_path / "in" / "trunc" / "t.dcm")
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    raw_copy("rtplan.dcm", tmp_path / "in" / "plan" / "rtplan.dcm")
    ct_file(tmp_path / "in" / "blank" / "b.dcm", np.full((16, 16), 40.0), series="1.2.3.3")
    geometry = tmp_path / "in" / "geom"
    ct_file(geometry / "a.dcm", quadrants((0, 40, 80, 120), 16), series="1.2.3.4", z=0)
    ct_file(geometry / "b.dcm", quadrants((0, 40, 80, 120), 32), series="1.2.3.4", z=1)
    ct_file(tmp_path / "in" / "unlabelled" / "u.dcm", quadrants((0, 40, 80, 120)), series="1.2.3.5")
    ct_file(tmp_path / "in" / "wrongmod" / "w.dcm", quadrants((0, 40, 80, 120)), series="1.2.3.6")
    labels = write_labels(
        tmp_path / "labels.csv",
        "path,modality,anatomy,pathology",
        ["good,CT,abd,normal", "trunc,MR,brain,normal", "blank,CT,abd,normal", "geom,CT,lung,normal",
         "wrongmod,MR,knee,normal", "nowhere,CT,abd,normal"],
    )
    report = run(taxonomy, tmp_path / "in", tmp_path / "root", labels, size=16, include_derived=True).report
    assert report.written == 1 and len(pngs(tmp_path / "root")) == 1
    skipped = {reason.split(" (")[0]: n for reason, n in report.skipped.items()}
    assert skipped["not a DICOM file"] == 1
    assert skipped["no image data"] == 1
    assert skipped["cannot decode pixel data"] == 1
    assert skipped["blank slice"] == 1
    assert skipped["series with inconsistent geometry"] == 1
    assert skipped["unlabelled series"] == 1
    assert skipped["label modality differs from the files'"] == 1
    text = "\n".join(report.lines())
    assert "trunc/t.dcm" in text and "notes.txt" in text and "e.g. unlabelled" in text
    assert "1 LABELS.csv rows match no series (e.g. line 7)" in text


def test_unknown_label_is_an_error_naming_the_line(tmp_path: Path, taxonomy: Taxonomy) -> None:
    ct_file(tmp_path / "in" / "a" / "1.dcm", quadrants((0, 40, 80, 120)))
    labels = write_labels(
        tmp_path / "labels.csv", "series_uid,modality,anatomy,pathology", ["1.2.3,CT,abd,normal", "1.2.4,CT,abd,livr_lesion"]
    )
    with pytest.raises(SourceError, match=r"line 3: unknown label CT,abd,livr_lesion.*did you mean 'liver_lesion'"):
        run(taxonomy, tmp_path / "in", tmp_path / "root", labels)
    result = runner.invoke(
        app, ["ingest-dicom", str(tmp_path / "in"), "-o", str(tmp_path / "root"), "--labels", str(labels), "--salt", SALT]
    )
    assert result.exit_code == 1
    assert "line 3" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "root").exists()
    for header, row, message in [
        ("series_uid,modality,anatomy,pathology", "x,US,abd,normal", "modality must be CT or MR"),
        ("series_uid,modality,anatomy,pathology", "x,CT,brian,normal", "anatomy 'brian'"),
        ("series_uid,modality,anatomy,pathology,window", "x,CT,abd,normal,lungs", "did you mean 'lung'"),
        ("series_uid,path,modality,anatomy,pathology", "x,y,CT,abd,normal", "exactly one key column"),
        ("series_uid,modality,anatomy,pathologie", "x,CT,abd,normal", "did you mean 'pathology'"),
    ]:
        write_labels(labels, header, [row])
        with pytest.raises(SourceError, match=message):
            run(taxonomy, tmp_path / "in", tmp_path / "root", labels)


def test_window_column_overrides_the_anatomy_window(tmp_path: Path, taxonomy: Taxonomy) -> None:
    image = quadrants((-1000.0, 400.0, 40.0, 1000.0))
    ct_file(tmp_path / "in" / "bone" / "1.dcm", image, series="1.2.3.401")
    ct_file(tmp_path / "in" / "plain" / "1.dcm", image, series="1.2.3.402")
    labels = write_labels(
        tmp_path / "l.csv", "path,modality,anatomy,pathology,window", ["bone,CT,abd,normal,bone", "plain,CT,abd,ascites,"]
    )
    run(taxonomy, tmp_path / "in", tmp_path / "root", labels, size=32)
    greys = {p.parts[-2]: np.asarray(Image.open(p)) for p in pngs(tmp_path / "root")}
    assert greys["normal"][4, 28] == 128  # HU 400 is the centre of the bone window (400/1800)
    assert greys["ascites"][4, 28] == 255 and greys["ascites"][28, 4] == 128  # abdomen window (40/400)


def test_series_and_study_keys_and_mri_alias(tmp_path: Path, taxonomy: Taxonomy) -> None:
    copy_bundled("MR_small.dcm", tmp_path / "in" / "x" / "f.dcm", series="1.2.3.500")
    labels = write_labels(tmp_path / "l.csv", "series_uid,modality,anatomy,pathology", ["1.2.3.500,MRI,abd,normal"])
    run(taxonomy, tmp_path / "in", tmp_path / "r1", labels, include_derived=True)
    assert [p.parent.relative_to(tmp_path / "r1").as_posix() for p in pngs(tmp_path / "r1")] == [
        "radiology_ai/MR/mriabd/normal"
    ]
    labels = write_labels(tmp_path / "l.csv", "study_uid,modality,anatomy,pathology", ["1.2.3.500.9,MR,knee,normal"])
    run(taxonomy, tmp_path / "in", tmp_path / "r2", labels, include_derived=True)
    assert len(list((tmp_path / "r2" / "radiology_ai" / "MR" / "knee" / "normal").glob("*.png"))) == 1


def test_missing_decoder_stops_before_writing(
    tmp_path: Path, taxonomy: Taxonomy, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_bundled("MR_small_RLE.dcm", tmp_path / "in" / "rle" / "f.dcm", series="1.2.3.600")
    labels = write_labels(tmp_path / "l.csv", "path,modality,anatomy,pathology", ["rle,MR,brain,normal"])
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: not self.UID.is_compressed))
    with pytest.raises(MissingDependencyError, match=r"RLE Lossless.*pip install \"radvqa\[dicom\]\""):
        run(taxonomy, tmp_path / "in", tmp_path / "root", labels, include_derived=True)
    assert not (tmp_path / "root").exists()
    result = runner.invoke(
        app,
        ["ingest-dicom", str(tmp_path / "in"), "-o", str(tmp_path / "root"), "--labels", str(labels), "--salt", SALT,
         "--include-derived"],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert "'RLE Lossless'" in line and 'pip install "radvqa[dicom]"' in line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh interpreter: worker processes' stderr is captured too."""
    return subprocess.run(
        [sys.executable, "-c", "from radvqa.cli import app; app()", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "RADVQA_SALT": SALT},
    )


def test_no_identifier_in_names_csvs_report_or_any_message(tmp_path: Path) -> None:
    """Invalid UIDs and an over-long PatientID make pydicom warn with their values: none may leak."""
    uids = {
        "series": "1.2.826.0.1.3680043.10.1.20240102.SECRETx",
        "study": "1.2.826.0.1.3680043.10.1.20240109.SECRETy",
        "unlabelled": "1.2.826.0.1.3680043.10.1.20240103.SECRETz",
    }
    patient = "PID-SECRET-" + "4" * 70  # LO allows 64 characters
    with lax_pydicom():
        for z in range(3):
            ct_file(tmp_path / "in" / "s" / f"{z}.dcm", quadrants((0, 40, 80, 120)), series=uids["series"],
                    study=uids["study"], patient=patient, z=z, SOPInstanceUID=f"1.2.3.4.{z}.SECRETs")
        ct_file(tmp_path / "in" / "u" / "1.dcm", quadrants((0, 40, 80, 120)), series=uids["unlabelled"], patient=patient)
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):  # the fixture does make pydicom warn
        assert "SECRET" in str(pydicom.dcmread(tmp_path / "in" / "s" / "0.dcm").SeriesInstanceUID)
    labels = write_labels(tmp_path / "l.csv", "path,modality,anatomy,pathology", ["s,CT,abd,normal"])
    outputs = {}
    for mode in ("loud", "quiet"):
        extra = ["--quiet"] if mode == "quiet" else []
        done = _cli("ingest-dicom", str(tmp_path / "in"), "-o", str(tmp_path / mode), "--labels", str(labels),
                    "--slices", "all", "--workers", "2", *extra)
        assert done.returncode == 0, done.stderr
        outputs[mode] = done.stdout + done.stderr
        assert "skipped 1: unlabelled series (no LABELS.csv row) (e.g. u)" in outputs[mode]
    assert "slices: 3 " in outputs["loud"] and "slices:" not in outputs["quiet"]
    secrets = ("SECRET", "4444", "Doe", "Jane", PHI_DATE, "20240102", "20240103", "20240109", "Invalid value",
               "exceeds the maximum length", *uids.values())
    written = [p for p in (tmp_path / "loud").rglob("*") if p.is_file()]
    assert len(written) == 3 + 3 + 2  # PNGs, CSVs, report.json + state.json
    texts = list(outputs.values()) + [p.relative_to(tmp_path).as_posix() for p in written]
    texts += [p.read_text() for p in written if p.suffix != ".png"]
    for secret in secrets:
        assert all(secret not in text for text in texts), secret
    for png in (p for p in written if p.suffix == ".png"):
        assert PHI_NAME.encode() not in png.read_bytes() and b"SECRET" not in png.read_bytes()
    report = orjson.loads((tmp_path / "quiet" / ".radvqa-ingest" / "report.json").read_bytes())
    assert report["skipped"] == {"unlabelled series (no LABELS.csv row)": {"count": 1, "examples": ["u"]}}
    assert report["slices"]["train"] + report["slices"]["val"] + report["slices"]["test"] == 3


def test_burned_in_localizer_and_secondary_images_are_skipped(tmp_path: Path, taxonomy: Taxonomy) -> None:
    image = quadrants((-1000, 40, 140, 1000))
    sc = "1.2.840.10008.5.1.4.1.1.7"
    # a CT dose screen: Secondary Capture, screen save, text burned in
    ct_file(tmp_path / "in" / "s" / "dose.dcm", image, series="1.2.3.1", SOPClassUID=sc,
            ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"], BurnedInAnnotation="YES")
    ct_file(tmp_path / "in" / "s" / "sc.dcm", image, series="1.2.3.2", SOPClassUID=sc)
    ct_file(tmp_path / "in" / "s" / "scout.dcm", image, series="1.2.3.3", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    ct_file(tmp_path / "in" / "s" / "burned.dcm", image, series="1.2.3.4", BurnedInAnnotation="YES",
            ImageType=["DERIVED", "SECONDARY", "AXIAL"])
    ct_file(tmp_path / "in" / "s" / "mpr.dcm", image, series="1.2.3.5", ImageType=["DERIVED", "SECONDARY", "MPR"])
    ct_file(tmp_path / "in" / "s" / "axial.dcm", image, series="1.2.3.6", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    labels = write_labels(tmp_path / "l.csv", "path,modality,anatomy,pathology", ["s,CT,abd,normal"])
    always = {SKIP_BURNED_IN: 2, SKIP_SECONDARY_CAPTURE: 1, SKIP_LOCALIZER: 1}
    default = run(taxonomy, tmp_path / "in", tmp_path / "default", labels, size=32).report
    assert default.skipped == always | {SKIP_DERIVED: 1} and default.written == 1
    derived = run(taxonomy, tmp_path / "in", tmp_path / "derived", labels, size=32, include_derived=True).report
    assert derived.skipped == always and derived.written == 2  # burned-in text never, whatever the option


def test_first_duplicate_that_decodes_wins(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.150", order=[0, 1, 2, 3, 4])
    middle = tmp_path / "in" / "series" / "e.dcm"  # k = 2 (file names "caebd")
    data = middle.read_bytes()
    (tmp_path / "in" / "series" / "a-copy.dcm").write_bytes(data[: len(data) - 700])  # sorts first, truncated
    report = run(taxonomy, tmp_path / "in", tmp_path / "root", abd_labels, size=32).report
    [png] = pngs(tmp_path / "root")
    assert np.asarray(Image.open(png))[16, 16] == linear_grey(50.0, Window(40, 400))
    assert report.skipped == {"duplicate image (same SOPInstanceUID as another file; the first copy that decodes is used)": 1}
    assert report.examples["duplicate copy that does not decode (another copy was used)"] == ["series/a-copy.dcm"]


def test_name_collision_is_an_error_never_an_overwrite(
    tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.160", order=[0, 1, 2, 3, 4])
    assert len(ingest_module.slice_tag(SALT, "1.2.3", 0)) == 16 and len(series_tag(SALT, "1.2.3")) == 16  # 64 bits
    monkeypatch.setattr(ingest_module, "slice_tag", lambda salt, sop, frame: "0" * 16)
    with pytest.raises(OutputError, match="hash to one output name"):
        run(taxonomy, tmp_path / "in", tmp_path / "root", abd_labels, slices=SliceSpec("all"))
    assert not (tmp_path / "root").exists()


def test_mixed_plane_enhanced_file_is_split_per_plane(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    axial, sagittal = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    frames = np.full((6, 32, 32), -1000.0)
    hu = (-100.0, 40.0, 240.0, 0.0, 100.0, 200.0)
    for i, value in enumerate(hu):
        frames[i, 8:24, 8:24] = value
    ct_multiframe(tmp_path / "in" / "series" / "mf.dcm", frames, positions=[1.0, 2.0, 3.0, 3.0, 1.0, 2.0],
                  orientations=[axial] * 3 + [sagittal] * 3)
    report = run(taxonomy, tmp_path / "in", tmp_path / "root", abd_labels, size=32).report
    assert report.series == 1 and report.labelled_series == 2 and not report.skipped
    middles = sorted(int(np.asarray(Image.open(p))[16, 16]) for p in pngs(tmp_path / "root"))
    # axial stack by z: frames 0, 1, 2 -> middle HU 40; sagittal by x: frames 4, 5, 3 -> middle HU 200
    assert middles == sorted(linear_grey(v, Window(40, 400)) for v in (40.0, 200.0))


def test_file_without_preamble_is_read(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    ct_file(tmp_path / "in" / "series" / "bare", quadrants((-1000, 40, 140, 1000)), preamble=False)
    assert (tmp_path / "in" / "series" / "bare").read_bytes()[128:132] != b"DICM"
    report = run(taxonomy, tmp_path / "in", tmp_path / "root", abd_labels, size=32).report
    assert report.written == 1 and not report.skipped
    grey = np.asarray(Image.open(pngs(tmp_path / "root")[0]))
    assert [grey[4, 4], grey[4, 28], grey[28, 4], grey[28, 28]] == [linear_grey(v, Window(40, 400)) for v in (-1000, 40, 140, 1000)]


def test_middle_takes_the_nearest_non_blank_slice(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    for k in range(5):
        image = np.full((32, 32), -1000.0)
        if k != 2:
            image[8:24, 8:24] = 100.0 * k - 150.0
        ct_file(tmp_path / "in" / "series" / f"{k}.dcm", image, series="1.2.3.170", z=float(k))
    report = run(taxonomy, tmp_path / "in", tmp_path / "root", abd_labels, size=32).report
    [png] = pngs(tmp_path / "root")
    assert np.asarray(Image.open(png))[16, 16] == linear_grey(-50.0, Window(40, 400))  # k = 1, then 3
    assert report.written == 1 and not report.skipped
    assert report.notices == {"--slices middle: blank slice, the nearest usable slice was taken": 1}


def test_several_label_rows_for_one_series_are_all_used(tmp_path: Path, taxonomy: Taxonomy) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.180", order=[0, 1, 2, 3, 4])
    rows = [f"series/{name}.dcm,CT,abd,normal" for name in "caebd"]
    labels = write_labels(tmp_path / "l.csv", "path,modality,anatomy,pathology", [*rows, "elsewhere,CT,abd,normal"])
    report = run(taxonomy, tmp_path / "in", tmp_path / "root", labels, size=16).report
    assert report.written == 1 and report.warnings == ["1 LABELS.csv rows match no series (e.g. line 7)"]


def test_nothing_ingested_exits_1_with_the_reasons_and_a_report(tmp_path: Path, abd_labels: Path) -> None:
    ct_file(tmp_path / "in" / "other" / "1.dcm", quadrants((0, 40, 80, 120)))
    raw_copy("rtplan.dcm", tmp_path / "in" / "other" / "plan.dcm")
    args = ["ingest-dicom", str(tmp_path / "in"), "-o", str(tmp_path / "root"), "--labels", str(abd_labels), "--salt", SALT]
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0] == "skipped 1: no image data (not an image object) (e.g. other/plan.dcm)"
    assert lines[1] == "skipped 1: unlabelled series (no LABELS.csv row) (e.g. other)"
    assert lines[-1].startswith("ERROR: ") and "no slice was ingested" in lines[-1] and "report.json" in lines[-1]
    report = orjson.loads((tmp_path / "root" / ".radvqa-ingest" / "report.json").read_bytes())
    assert report["files"] == 2 and report["skipped"]["no image data (not an image object)"]["examples"] == ["other/plan.dcm"]


def test_workers_import_no_pandas(tmp_path: Path) -> None:
    """A spawned worker re-imports the console script (``from radvqa.cli import app``) and its task module."""
    script = tmp_path / "console.py"
    script.write_text(
        "import sys\n"
        "from radvqa.cli import app  # what the installed 'radvqa' script does at import time\n"
        "def probe():\n"
        "    import radvqa.ingest_tasks\n"
        "    return sorted(m for m in ('pandas', 'radvqa.ingest') if m in sys.modules)\n"
        "if __name__ == '__main__':\n"
        "    import multiprocessing\n"
        "    from concurrent.futures import ProcessPoolExecutor\n"
        "    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:\n"
        "        print(pool.submit(probe).result())\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_interrupted_run_leaves_nothing_partial_and_resumes(
    tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for s in range(4):
        marker_series(tmp_path / "in" / "series" / str(s), f"1.2.3.7{s}", order=[3, 0, 4, 1, 2], patient=f"P{s}")
    clean = tmp_path / "clean"
    run(taxonomy, tmp_path / "in", clean, abd_labels, size=16, slices=SliceSpec("all"))
    calls = {"n": 0}
    real = ingest_tasks.render_frame

    def flaky(*args: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_tasks, "render_frame", flaky)
    root = tmp_path / "root"
    with pytest.raises(Interrupted, match=r"interrupted: 0 of \d+ batches converted; rerun the same command"):
        run(taxonomy, tmp_path / "in", root, abd_labels, size=16, slices=SliceSpec("all"))
    on_disk = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert not list(root.glob("*.csv")) and not (root / "radiology_ai").exists()
    assert not any(".tmp" in p for p in on_disk)
    staged = [p for p in on_disk if p.endswith(".png")]
    assert len(staged) == 6 and all(p.startswith(".radvqa-ingest/staging/") for p in staged)
    # read_source cannot mistake the interrupted copy for a RadImageNet copy
    with pytest.raises(SourceError):
        read_source(root, taxonomy, Config().split_ratios)
    # a file cut off by a hard kill: a temporary name, removed on resume
    leftover = root / staged[0].replace(".png", ".png.tmp") 
    leftover = leftover.with_name("." + leftover.name + "999")
    leftover.write_bytes(b"partial")
    monkeypatch.setattr(ingest_tasks, "render_frame", real)
    result = run(taxonomy, tmp_path / "in", root, abd_labels, size=16, slices=SliceSpec("all"))
    assert result.resumed and result.report.reused == 6 and result.report.written == 14
    assert not leftover.exists() and not (root / ".radvqa-ingest" / "staging").exists()
    assert csv_rows(root) == csv_rows(clean)
    for p in pngs(clean):
        assert (root / p.relative_to(clean)).read_bytes() == p.read_bytes()
    again = run(taxonomy, tmp_path / "in", root, abd_labels, size=16, slices=SliceSpec("all"))
    assert again.report.written == 0 and again.report.reused == 20


def test_output_folder_rules(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.800", order=[0, 1, 2, 3, 4])
    root = tmp_path / "root"
    root.mkdir()
    (root / "mine.txt").write_text("x")
    for overwrite in (False, True):  # not written by ingest-dicom: never replaced
        with pytest.raises(OutputError, match=r"holds no radvqa record \(mine.txt\)"):
            run(taxonomy, tmp_path / "in", root, abd_labels, size=16, overwrite=overwrite)
    (root / "mine.txt").unlink()
    run(taxonomy, tmp_path / "in", root, abd_labels, size=16)
    (root / "mine.txt").write_text("x")
    run(taxonomy, tmp_path / "in", root, abd_labels, size=16, overwrite=True)
    assert (root / "mine.txt").exists() and len(pngs(root)) == 1
    with pytest.raises(OutputError, match="other settings"):
        run(taxonomy, tmp_path / "in", root, abd_labels, size=32)
    # relabelling resumes: the old PNG is removed, the new one written
    relabelled = write_labels(tmp_path / "r.csv", "path,modality,anatomy,pathology", ["series,CT,abd,ascites"])
    result = run(taxonomy, tmp_path / "in", root, relabelled, size=16)
    assert result.report.removed == 1
    assert [p.parts[-2] for p in pngs(root)] == ["ascites"]
    with pytest.raises(OutputError, match="inside INPUT"):
        run(taxonomy, tmp_path / "in", tmp_path / "in" / "out", abd_labels)


def test_workers_give_the_same_copy(tmp_path: Path, taxonomy: Taxonomy, abd_labels: Path) -> None:
    for s in range(3):
        marker_series(tmp_path / "in" / "series" / str(s), f"1.2.3.9{s}", order=[0, 1, 2, 3, 4], patient=f"P{s}")
    one, two = tmp_path / "one", tmp_path / "two"
    run(taxonomy, tmp_path / "in", one, abd_labels, size=16, slices=SliceSpec("all"))
    run(taxonomy, tmp_path / "in", two, abd_labels, size=16, slices=SliceSpec("all"), workers=2)
    assert csv_rows(one) == csv_rows(two) and len(pngs(one)) == 15
    assert all((two / p.relative_to(one)).read_bytes() == p.read_bytes() for p in pngs(one))


def test_generate_runs_on_the_ingested_copy(
    tmp_path: Path, taxonomy: Taxonomy, templates: TemplateSet, config: Config
) -> None:
    rows = []
    for p in range(12):
        anatomy, pathology = [("abd", "normal"), ("lung", "nodule"), ("abd", "liver_lesion")][p % 3]
        uid = f"1.2.3.{p}"
        for z in range(3):
            image = np.full((16, 16), -1000.0)
            image[4:12, 4:12] = 40.0 + 10 * z
            ct_file(tmp_path / "in" / f"p{p}" / f"{z}.dcm", image, series=uid, z=z, patient=f"P{p}")
        rows.append(f"{uid},CT,{anatomy},{pathology}")
    labels = write_labels(tmp_path / "l.csv", "series_uid,modality,anatomy,pathology", rows)
    root = tmp_path / "root"
    result = runner.invoke(
        app,
        ["ingest-dicom", str(tmp_path / "in"), "-o", str(root), "--labels", str(labels), "--salt", SALT,
         "--slices", "all", "--size", "16", "--split-ratios", "0.6,0.4,0"],
    )
    assert result.exit_code == 0, result.output
    assert "slices: 36" in result.output
    table, report = read_source(root, taxonomy, config.split_ratios)
    assert len(table) == 36 and not report.skipped and not report.warnings
    assert "CT/lung/Nodule" in set(table["image_id"].str.rsplit("/", n=1).str[0])  # label matched case-blind
    assert set(table["split"]) <= {"train", "val"} and (table["split"] == "train").any()
    out = tmp_path / "dataset"
    generated = generate_dataset(root, out, config.with_overrides(benchmark_images=0), taxonomy, templates)
    assert sum(generated.records["instruct"].values()) == 36 * 9
    assert (out / "manifest.json").is_file()


def test_option_parsing() -> None:
    assert parse_slices("middle") == SliceSpec("middle") and str(parse_slices("every:3")) == "every:3"
    assert SliceSpec("count", 3).select(9) == [1, 4, 7]
    assert SliceSpec("count", 20).select(4) == [0, 1, 2, 3]
    assert SliceSpec("middle").select(4) == [2] and SliceSpec("every", 2).select(5) == [0, 2, 4]
    assert parse_ratios("0.8,0.1,0.1") == {"train": 0.8, "val": 0.1, "test": 0.1}
    from radvqa.errors import ConfigError

    for bad in ("first", "every:0", "count:x", "all:2"):
        with pytest.raises(ConfigError, match="--slices"):
            parse_slices(bad)
    with pytest.raises(ConfigError, match="--split-ratios"):
        parse_ratios("0.5,0.5")


def test_cli_requires_a_salt_and_documents_options(tmp_path: Path, abd_labels: Path) -> None:
    result = runner.invoke(
        app, ["ingest-dicom", str(tmp_path), "-o", str(tmp_path / "r"), "--labels", str(abd_labels)], env={"RADVQA_SALT": ""}
    )
    assert result.exit_code == 2 and "--salt" in result.output
    help_text = runner.invoke(app, ["ingest-dicom", "--help"], terminal_width=200).output
    for option in ("--labels", "--salt", "--slices", "--size", "--window", "--windows", "--split-ratios",
                   "--workers", "--overwrite", "--quiet", "--taxonomy"):
        assert option in help_text
    shutil.rmtree(tmp_path / "r", ignore_errors=True)


def test_a_short_salt_is_refused_before_any_work(tmp_path: Path, abd_labels: Path) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.700", order=[0, 1, 2])
    root = tmp_path / "root"
    result = runner.invoke(
        app, ["ingest-dicom", str(tmp_path / "in"), "-o", str(root), "--labels", str(abd_labels), "--salt", "abc"]
    )
    assert result.exit_code == 1
    assert result.output == "ERROR: --salt: 3 characters is too short to keep names secret; use at least 8\n"
    assert not root.exists()


def test_ingest_destination_under_a_file_is_one_line(tmp_path: Path, abd_labels: Path) -> None:
    marker_series(tmp_path / "in" / "series", "1.2.3.701", order=[0, 1, 2])
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = runner.invoke(
        app, ["ingest-dicom", str(tmp_path / "in"), "-o", str(blocker / "root"), "--labels", str(abd_labels), "--salt", SALT]
    )
    assert result.exit_code == 1
    assert result.output == f"ERROR: {blocker / 'root'}: cannot be created, {blocker} is a file\n"
