"""``ingest-dicom``: a folder of DICOM studies -> a RadImageNet-shaped copy ``generate`` reads.

Steps: read LABELS.csv (checked against the taxonomy) -> read every file's header -> group
by SeriesInstanceUID, order by position along the slice normal -> pick slices -> split by
a salted hash of the PatientID -> render each slice (``radvqa.dicom``) -> move the finished
PNGs into ``radiology_ai/`` and write the three ``RadiologyAI_*.csv`` files.

Privacy: no DICOM header value (names, ids, UIDs, dates) reaches a file name, a CSV or a
message. Names are keyed hashes (BLAKE2b keyed with the user's salt); messages name files by
their path under INPUT, which is the user's own naming.

Interruption: PNGs are written under a temporary name inside ``.radvqa-ingest/staging`` and
only moved into ``radiology_ai/`` once every slice is done, followed by the CSVs; an interrupted
copy therefore never looks complete, and a re-run with the same settings reuses what is staged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .dicom import (
    DICOM_WINDOW,
    BlankSlice,
    PixelParams,
    WindowTable,
    check_decoder,
    frame_item,
    frame_view,
    render_frame,
)
from .errors import ConfigError, OutputError, SourceError, did_you_mean
from .executors import Executor, ExecutorSpec, Job, run_tasks
from .progress import NullProgress, ProgressBar
from .source import CSV_NAMES, SPLITS, TOP_FOLDER, hash_split
from .taxonomy import ImageClass, Taxonomy
from .ownership import check_output, claim_output
from .writers import write_bytes_atomic, write_json

STATE_DIR = ".radvqa-ingest"
STAGING = "staging"
MIN_SALT = 8  # characters: a shorter secret can be guessed, and with it every name's series UID
KEY_COLUMNS = ("series_uid", "study_uid", "path")
LABEL_COLUMNS = ("modality", "anatomy", "pathology")
OPTIONAL_COLUMNS = ("window",)
MODALITY_ALIASES = {"MRI": "MR"}
WINDOW_MODES = ("auto", DICOM_WINDOW)
FORMAT_VERSION = 1
_EXAMPLES = 3
_BATCH = 8  # files per pool task (times Executor.per_task on a cluster)
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# What the header scan reads (pydicom skips the rest: about 30% faster than a full header).
_HEADER_TAGS = (
    "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "Modality", "SOPInstanceUID", "InstanceNumber",
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
    "ImageOrientationPatient", "ImagePositionPatient",
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", *_PIXEL_TAGS,
)
_SCAN_CHUNK = 64  # files per pool task while reading headers


# --- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceSpec:
    """Which slices of an ordered series to keep: middle, all, every:N or count:K."""

    mode: str = "middle"
    n: int = 0

    def select(self, total: int) -> list[int]:
        """Indices (into the position-ordered series) of the slices to keep."""
        if total <= 0:
            return []
        if self.mode == "middle":
            return [total // 2]
        if self.mode == "every":
            return list(range(0, total, self.n))
        if self.mode == "count" and self.n < total:
            # Centres of K equal bins: spread evenly, avoiding the first and last slice.
            return sorted({int((i + 0.5) * total / self.n) for i in range(self.n)})
        return list(range(total))

    def __str__(self) -> str:
        return self.mode if self.mode in ("middle", "all") else f"{self.mode}:{self.n}"


def parse_slices(text: str) -> SliceSpec:
    """Parse ``middle``, ``all``, ``every:N`` or ``count:K`` (N, K positive integers)."""
    mode, _, number = text.strip().lower().partition(":")
    if mode in ("middle", "all") and not number:
        return SliceSpec(mode)
    if mode in ("every", "count") and number.isdigit() and int(number) > 0:
        return SliceSpec(mode, int(number))
    raise ConfigError(f"--slices: '{text}' is not one of middle, all, every:N, count:K (N, K > 0)")


@dataclass(frozen=True)
class IngestOptions:
    """Settings of one ingest run. Those that change the output are fingerprinted."""

    salt: str
    size: int = 224
    slices: SliceSpec = SliceSpec()
    window: str = "auto"
    split_ratios: dict[str, float] = field(default_factory=lambda: {"train": 0.889, "val": 0.037, "test": 0.074})
    workers: int = 1
    overwrite: bool = False

    def check(self) -> None:
        """Reject impossible values with one-line errors."""
        if not self.salt:
            raise ConfigError("--salt: give a secret salt (names and the split are keyed hashes of it)")
        if len(self.salt) < MIN_SALT:
            raise ConfigError(
                f"--salt: {len(self.salt)} characters is too short to keep names secret; use at least {MIN_SALT}"
            )
        if not 8 <= self.size <= 4096:
            raise ConfigError(f"--size: {self.size} is outside 8..4096")
        if self.window not in WINDOW_MODES:
            raise ConfigError(f"--window: '{self.window}' is not one of {', '.join(WINDOW_MODES)}")
        if self.workers < 1:
            raise ConfigError(f"--workers: {self.workers} must be at least 1")
        ratios = [self.split_ratios.get(s, -1.0) for s in SPLITS]
        if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
            raise ConfigError("split ratios: train, val and test must be non-negative and sum to 1")


def parse_ratios(text: str) -> dict[str, float]:
    """Parse ``TRAIN,VAL,TEST`` shares (e.g. ``0.8,0.1,0.1``)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != len(SPLITS) or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"--split-ratios: '{text}' must be three shares TRAIN,VAL,TEST that sum to 1")
    return dict(zip(SPLITS, values))


def _digest(salt: str, purpose: bytes, data: str, size: int) -> bytes:
    key = hashlib.sha256(salt.encode()).digest()
    return hashlib.blake2b(data.encode(), digest_size=size, key=key, person=purpose).digest()


def series_tag(salt: str, series_uid: str) -> str:
    """The first part of a series' output names: a keyed hash of its SeriesInstanceUID."""
    return _digest(salt, b"radvqa-series", series_uid, 6).hex()


def slice_tag(salt: str, sop_instance_uid: str, frame: int) -> str:
    """The second part of a slice's output name: a keyed hash of its SOPInstanceUID and frame."""
    return _digest(salt, b"radvqa-slice", f"{sop_instance_uid}\0{frame}", 4).hex()


# --- labels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelRow:
    """One LABELS.csv row: its line, key and resolved class (plus an optional window name)."""

    line: int
    key: str
    image_class: ImageClass
    window: str | None


@dataclass(frozen=True)
class Labels:
    """LABELS.csv, checked: which key column it uses and its rows by key."""

    source: str
    kind: str
    rows: dict[str, LabelRow]


def read_labels(path: Path, taxonomy: Taxonomy, windows: WindowTable) -> Labels:
    """Read and check LABELS.csv; an unknown label or window is an error naming the line."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise SourceError(f"{path}: cannot read CSV ({exc})")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    allowed = (*KEY_COLUMNS, *LABEL_COLUMNS, *OPTIONAL_COLUMNS)
    for column in frame.columns:
        if column not in allowed:
            raise SourceError(f"{path}: unknown column '{column}'{did_you_mean(column, allowed)}")
    keys = [c for c in KEY_COLUMNS if c in frame.columns]
    if len(keys) != 1:
        raise SourceError(f"{path}: needs exactly one key column of {', '.join(KEY_COLUMNS)} (found {len(keys)})")
    for column in LABEL_COLUMNS:
        if column not in frame.columns:
            raise SourceError(f"{path}: missing column '{column}'")
    kind = keys[0]
    rows: dict[str, LabelRow] = {}
    windows_column = frame["window"].tolist() if "window" in frame.columns else [""] * len(frame)
    for i, (key, modality, anatomy, pathology, window) in enumerate(
        zip(frame[kind], frame["modality"], frame["anatomy"], frame["pathology"], windows_column)
    ):
        line = i + 2
        where = f"{path}: line {line}"
        key = _normal_key(key, kind)
        if not key:
            raise SourceError(f"{where}: empty {kind}")
        image_class = _resolve(taxonomy, modality.strip(), anatomy.strip(), pathology.strip(), where)
        window = window.strip() or None
        if window is not None and window != DICOM_WINDOW and window not in windows.windows:
            choices = [*windows.windows, DICOM_WINDOW]
            raise SourceError(f"{where}: unknown window '{window}'{did_you_mean(window, choices)}")
        row = LabelRow(line, key, image_class, window)
        previous = rows.get(key)
        if previous is not None and (previous.image_class, previous.window) != (image_class, window):
            raise SourceError(f"{path}: lines {previous.line} and {line} give different labels to one {kind}")
        rows.setdefault(key, row)
    return Labels(str(path), kind, rows)


def _normal_key(key: str, kind: str) -> str:
    key = key.strip()
    if kind == "path":
        key = key.replace("\\", "/").strip("/")
        while key.startswith("./"):
            key = key[2:]
    return key


def _resolve(taxonomy: Taxonomy, modality: str, anatomy: str, pathology: str, where: str) -> ImageClass:
    modality = MODALITY_ALIASES.get(modality.upper(), modality.upper())
    found = taxonomy.resolve(modality, anatomy, pathology)
    if found is not None:
        return found
    label = f"{modality},{anatomy},{pathology}"
    if modality not in taxonomy.modalities or modality in taxonomy.skipped_modalities:
        raise SourceError(f"{where}: unknown label {label}: modality must be CT or MR")
    anatomies = sorted({c.anatomy for c in taxonomy.classes if c.modality == modality})
    canonical = taxonomy.anatomy_aliases.get((modality, anatomy), anatomy)
    if canonical not in anatomies:
        raise SourceError(
            f"{where}: unknown label {label}: anatomy '{anatomy}' is not a {modality} folder "
            f"({', '.join(anatomies)}){did_you_mean(anatomy, anatomies)}"
        )
    names = [c.pathology for c in taxonomy.classes if c.modality == modality and c.anatomy == canonical]
    folded = [n for n in names if n.lower() == pathology.lower()]
    if len(folded) == 1:  # RadImageNet's own capitals (Nodule, Plantar_plate_tear) need not be typed
        found = taxonomy.resolve(modality, canonical, folded[0])
        assert found is not None
        return found
    raise SourceError(
        f"{where}: unknown label {label}: no pathology '{pathology}' in {modality}/{canonical}"
        f"{did_you_mean(pathology, names)}"
    )


# --- scanning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameRef:
    """One frame of one file, with what is needed to order it."""

    rel: str
    frame: int
    sop: str
    position: tuple[float, float, float] | None
    instance: int | None
    syntax: str


@dataclass
class SeriesInfo:
    """Everything the header scan learnt about one series (never written out)."""

    uid: str
    study: str = ""
    modality: str = ""
    patients: set[str] = field(default_factory=set)
    shapes: set[tuple[int, int]] = field(default_factory=set)
    orientations: list[tuple[float, ...]] = field(default_factory=list)
    frames: list[FrameRef] = field(default_factory=list)

    @property
    def folder(self) -> str:
        """The folder (under INPUT) of the series' first file: how messages name it."""
        first = min(f.rel for f in self.frames)
        return first.rsplit("/", 1)[0] if "/" in first else "."


@dataclass
class IngestReport:
    """Counts per outcome, a few example paths per problem, warnings; no header values."""

    files: int = 0
    images: int = 0
    series: int = 0
    labelled_series: int = 0
    slices: dict[str, int] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    written: int = 0
    reused: int = 0
    removed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notices: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def notice(self, what: str, example: str) -> None:
        """Count something used but worth a warning (e.g. a series ordered by file name)."""
        self.notices[what] = self.notices.get(what, 0) + 1
        kept = self.examples.setdefault(what, [])
        if len(kept) < _EXAMPLES and example not in kept:
            kept.append(example)

    def skip(self, reason: str, example: str, count: int = 1) -> None:
        """Count ``count`` skipped items for ``reason``, keeping a few example paths."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        kept = self.examples.setdefault(reason, [])
        if len(kept) < _EXAMPLES and example not in kept:
            kept.append(example)

    def lines(self) -> list[str]:
        """Human-readable summary."""
        total = sum(self.slices.values())
        rate = (self.written / self.seconds) if self.seconds else 0.0
        out = [
            (
                f"input: {self.files} files, {self.images} DICOM images in {self.series} series "
                f"({self.labelled_series} labelled)"
            ),
            f"slices: {total} (" + ", ".join(f"{s} {self.slices.get(s, 0)}" for s in SPLITS) + "), patients: "
            + ", ".join(f"{s} {self.patients.get(s, 0)}" for s in SPLITS),
            (
                f"wrote {self.written} PNGs, reused {self.reused} from an earlier run, removed {self.removed} "
                f"stale, in {self.seconds:.1f} s ({rate:,.0f} slices/s)"
            ),
        ]
        for reason, n in sorted(self.skipped.items()):
            examples = ", ".join(self.examples.get(reason, []))
            out.append(f"skipped {n}: {reason}" + (f" (e.g. {examples})" if examples else ""))
        for what, n in sorted(self.notices.items()):
            examples = ", ".join(self.examples.get(what, []))
            out.append(f"warning: {n} {what}" + (f" (e.g. {examples})" if examples else ""))
        out.extend(f"warning: {w}" for w in self.warnings)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the state file."""
        return {
            "files": self.files,
            "images": self.images,
            "series": self.series,
            "labelled_series": self.labelled_series,
            "slices": self.slices,
            "patients": self.patients,
            "skipped": self.skipped,
            "notices": self.notices,
        }


def walk_files(root: Path) -> Iterator[str]:
    """Every regular file under ``root`` (relative posix paths, sorted, hidden entries skipped)."""
    stack = [root]
    found: list[str] = []
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    found.append(Path(entry.path).relative_to(root).as_posix())
    yield from sorted(found)


def read_header(path: Path, rel: str) -> tuple[str, list[FrameRef], dict[str, Any]] | str:
    """(series uid, frames, series facts) of one file, or why it cannot be used."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, defer_size="2 KB", specific_tags=list(_HEADER_TAGS))
    except InvalidDicomError:
        return "not a DICOM file"
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged headers
        return f"unreadable DICOM header ({type(exc).__name__})"
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return "no image data (not an image object)"
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:
        return "no SeriesInstanceUID"
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric not in _GREYSCALE:
        return "not a greyscale image (only MONOCHROME1/2 CT and MR are supported)"
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        shape = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError):
        return "no valid Rows/Columns/NumberOfFrames"
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    orientation = _vector(ds.get("ImageOrientationPatient"), 6)
    if orientation is None:
        item = frame_item(ds, 0, "PlaneOrientationSequence")
        orientation = _vector(item.get("ImageOrientationPatient") if item else None, 6)
    sop = str(ds.get("SOPInstanceUID", "") or rel)
    instance = ds.get("InstanceNumber")
    refs = []
    for frame in range(frames):
        if frames == 1:
            position = _vector(ds.get("ImagePositionPatient"), 3)
        else:
            item = frame_item(ds, frame, "PlanePositionSequence")
            position = _vector(item.get("ImagePositionPatient") if item else None, 3)
        refs.append(
            FrameRef(rel, frame, sop, position, int(instance) if instance not in (None, "") else None, syntax)
        )
    facts = {
        "study": str(ds.get("StudyInstanceUID", "") or ""),
        "patient": str(ds.get("PatientID", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
        "shape": shape,
        "orientation": orientation,
    }
    return uid, refs, facts


def _vector(value: Any, length: int) -> Any:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == length else None


def _read_headers(input_dir: str, rels: list[str]) -> list[tuple[str, Any]]:
    return [(rel, read_header(Path(input_dir) / rel, rel)) for rel in rels]


def scan(
    input_dir: Path,
    files: list[str],
    report: IngestReport,
    bar: ProgressBar,
    executor: Executor | None = None,
) -> dict[str, SeriesInfo]:
    """Read the header of each file (batches of files on ``executor``); group the images by SeriesInstanceUID."""
    executor = executor or Executor()  # default: in this process
    size = _SCAN_CHUNK * executor.per_task
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    job = Job(_read_headers, list(enumerate(chunks)), str(input_dir), weight=lambda c, _: len(c), unit="header batches read")
    batches: list[list[tuple[str, Any]]] = run_tasks(executor, job, bar)
    headers = chain.from_iterable(batches)
    series: dict[str, SeriesInfo] = {}
    for rel, result in headers:
        report.files += 1
        if isinstance(result, str):
            report.skip(result, rel)
            continue
        uid, refs, facts = result
        info = series.setdefault(uid, SeriesInfo(uid=uid, study=facts["study"], modality=facts["modality"]))
        info.patients.add(facts["patient"])
        info.shapes.add(facts["shape"])
        if facts["orientation"] is not None:
            info.orientations.append(facts["orientation"])
        info.frames.extend(refs)
        report.images += len(refs)
    report.series = len(series)
    return series


def order_frames(info: SeriesInfo, report: IngestReport) -> list[FrameRef]:
    """Frames sorted along the slice normal (PS3.3 C.7.6.2.1.1), else by InstanceNumber."""
    unique: dict[tuple[str, int], FrameRef] = {}
    for ref in sorted(info.frames, key=lambda f: (f.rel, f.frame)):
        if (ref.sop, ref.frame) in unique:
            report.skip("duplicate image (same SOPInstanceUID as another file; first kept)", ref.rel)
            continue
        unique[(ref.sop, ref.frame)] = ref
    frames = list(unique.values())
    if info.orientations and all(f.position is not None for f in frames):
        o = np.asarray(info.orientations[0])
        normal = np.cross(o[:3], o[3:])
        return sorted(
            frames, key=lambda f: (float(np.dot(np.asarray(f.position), normal)), f.instance or 0, f.rel, f.frame)
        )
    if all(f.instance is not None for f in frames):
        return sorted(frames, key=lambda f: (f.instance, f.frame, f.rel))
    report.notice("series without positions or instance numbers, ordered by file name", info.folder)
    return frames


def _geometry_problem(info: SeriesInfo) -> str | None:
    if len(info.shapes) > 1:
        return "series with inconsistent geometry (different Rows/Columns)"
    if info.orientations:
        first = np.asarray(info.orientations[0])
        if any(np.abs(np.asarray(o) - first).max() > 1e-3 for o in info.orientations):
            return "series with inconsistent geometry (different orientations)"
    if len(info.patients) > 1:
        return "series with several PatientIDs"
    return None


# --- planning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileTask:
    """The slices to render from one file, where they go, and how."""

    path: str
    rel: str
    frames: tuple[tuple[int, str], ...]
    params: PixelParams
    stage: str


@dataclass(frozen=True)
class PlannedSlice:
    """One output slice: its path relative to ROOT, split and CSV label."""

    out: str
    split: str
    label: str


@dataclass
class Plan:
    """Every slice to produce, grouped by source file."""

    slices: dict[str, PlannedSlice] = field(default_factory=dict)
    files: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    params: dict[str, PixelParams] = field(default_factory=dict)


def _match(labels: Labels, info: SeriesInfo) -> tuple[LabelRow | None, str | None]:
    if labels.kind == "series_uid":
        return labels.rows.get(info.uid), None
    if labels.kind == "study_uid":
        return labels.rows.get(info.study), None
    found: dict[str, LabelRow | None] = {}
    for ref in info.frames:
        parts = ref.rel.split("/")
        best = None
        for depth in range(len(parts), 0, -1):
            best = labels.rows.get("/".join(parts[:depth]))
            if best is not None:
                break
        found[ref.rel] = best
    rows = set(found.values())
    if rows == {None}:
        return None, None
    if None in rows or len({(r.image_class, r.window) for r in rows if r is not None}) > 1:
        return None, "series whose files match different LABELS.csv rows"
    return min((r for r in rows if r is not None), key=lambda r: r.line), None


def _params(row: LabelRow, windows: WindowTable, options: IngestOptions) -> PixelParams:
    cls = row.image_class
    use_file = options.window == DICOM_WINDOW or row.window == DICOM_WINDOW
    window = None
    if cls.modality == "CT":
        name = row.window if row.window not in (None, DICOM_WINDOW) else windows.for_anatomy(cls.anatomy)
        if name is None:
            raise ConfigError(
                f"{windows.source}: no CT window for anatomy '{cls.anatomy}' (add it under ct.by_anatomy)"
            )
        window = windows.windows[name]
    return PixelParams(cls.modality, window, use_file, windows.mr_percentiles, options.size)


def plan_ingest(
    series: dict[str, SeriesInfo],
    labels: Labels,
    windows: WindowTable,
    options: IngestOptions,
    report: IngestReport,
) -> Plan:
    """Label, check, order, select and name the slices of every series; split by patient."""
    plan = Plan()
    used: set[int] = set()
    chosen: list[tuple[SeriesInfo, LabelRow, list[FrameRef]]] = []
    syntaxes: dict[str, str] = {}
    for uid in sorted(series, key=lambda u: series[u].folder):
        info = series[uid]
        row, conflict = _match(labels, info)
        if conflict:
            report.skip(conflict, info.folder)
            continue
        if row is None:
            report.skip("unlabelled series (no LABELS.csv row)", info.folder)
            continue
        used.add(row.line)
        cls = row.image_class
        if info.modality and info.modality != cls.modality:
            report.skip(f"label modality differs from the files' (DICOM modality {info.modality})", info.folder)
            continue
        problem = _geometry_problem(info)
        if problem:
            report.skip(problem, info.folder)
            continue
        frames = order_frames(info, report)
        picked = [frames[i] for i in options.slices.select(len(frames))]
        for ref in picked:
            syntaxes.setdefault(ref.syntax, ref.rel)
        chosen.append((info, row, picked))
    unsupported = {}
    for syntax in sorted(syntaxes):
        reason = check_decoder(syntax)  # raises MissingDependencyError before any work
        if reason:
            unsupported[syntax] = reason
    patient_keys: dict[str, str] = {}
    for info, row, picked in chosen:
        patient = next(iter(info.patients)) or f"study:{info.study}"
        if not next(iter(info.patients)):
            report.notice("series without PatientID, split by study instead", info.folder)
        patient_keys[info.uid] = patient
    splits = _patient_splits(sorted(set(patient_keys.values())), options)
    per_split_patients: dict[str, set[str]] = {s: set() for s in SPLITS}
    for info, row, picked in chosen:
        bad = [ref for ref in picked if ref.syntax in unsupported]
        for ref in bad:
            report.skip(unsupported[ref.syntax], ref.rel)
        picked = [ref for ref in picked if ref.syntax not in unsupported]
        if not picked:
            continue
        report.labelled_series += 1
        cls = row.image_class
        split = splits[patient_keys[info.uid]]
        per_split_patients[split].add(patient_keys[info.uid])
        params = _params(row, windows, options)
        prefix = f"{TOP_FOLDER}/{cls.folder}/{series_tag(options.salt, info.uid)}-"
        for ref in picked:
            out = f"{prefix}{slice_tag(options.salt, ref.sop, ref.frame)}.png"
            plan.slices[out] = PlannedSlice(out, split, cls.label)
            plan.files.setdefault(ref.rel, []).append((ref.frame, out))
            plan.params[ref.rel] = params
    unused = sorted({r.line for r in labels.rows.values()} - used)
    if unused:
        report.warnings.append(f"{len(unused)} LABELS.csv rows match no series (e.g. line {unused[0]})")
    report.patients = {s: len(p) for s, p in per_split_patients.items()}
    report.slices = {s: sum(1 for p in plan.slices.values() if p.split == s) for s in SPLITS}
    return plan


def _patient_splits(patients: list[str], options: IngestOptions) -> dict[str, str]:
    keys = np.fromiter(
        (int.from_bytes(_digest(options.salt, b"radvqa-split", p, 8), "little") for p in patients),
        dtype=np.uint64,
        count=len(patients),
    )
    return dict(zip(patients, hash_split(keys, options.split_ratios).tolist()))


# --- rendering -----------------------------------------------------------------------------


@dataclass
class FileResult:
    """What happened to the slices of one file."""

    rel: str
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text.split(" - ")[0][:100]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def convert_file(task: FileTask) -> FileResult:
    """Decode one file and write its selected slices (each PNG via a temporary name)."""
    import pydicom
    from pydicom.pixels import pixel_array

    result = FileResult(task.rel)
    try:
        ds = pydicom.dcmread(task.path)
        frames_in_file = int(ds.get("NumberOfFrames", 1) or 1)
        if frames_in_file == 1 or len(task.frames) * 2 > frames_in_file:
            stack = ds.pixel_array.reshape(frames_in_file, int(ds.Rows), int(ds.Columns))
            arrays = {frame: stack[frame] for frame, _ in task.frames}
        else:
            arrays = {frame: pixel_array(ds, index=frame) for frame, _ in task.frames}
    except Exception as exc:  # noqa: BLE001 - any decode failure is this file's problem, not the run's
        result.failed = [(out, f"cannot decode pixel data ({_short(exc)})") for _, out in task.frames]
        return result
    stage = Path(task.stage)
    for frame, out in task.frames:
        try:
            data = render_frame(arrays[frame], frame_view(ds, frame), task.params)
        except BlankSlice as exc:
            result.failed.append((out, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - odd pixel modules fail one slice, not the run
            result.failed.append((out, f"cannot convert ({_short(exc)})"))
            continue
        target = stage / out
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
        result.written.append(out)
    return result


def _convert_batch(_: None, tasks: list[FileTask]) -> list[FileResult]:
    return [convert_file(task) for task in tasks]


def run_file_tasks(tasks: list[FileTask], executor: Executor, bar: ProgressBar) -> list[FileResult]:
    """Convert every file on ``executor`` (batches of files per task); results in file order."""
    size = _BATCH * executor.per_task
    batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    job = Job(
        _convert_batch,
        list(enumerate(batches)),
        weight=lambda batch, _: sum(len(t.frames) for t in batch),
        unit="batches converted",
    )
    results: list[list[FileResult]] = run_tasks(executor, job, bar)
    return list(chain.from_iterable(results))


# --- output --------------------------------------------------------------------------------


def fingerprint(options: IngestOptions, windows: WindowTable, taxonomy: Taxonomy) -> str:
    """Keyed hash of every setting that changes pixels, names or the split (not the salt itself)."""
    settings = {
        "format_version": FORMAT_VERSION,
        "size": options.size,
        "slices": str(options.slices),
        "window": options.window,
        "windows_sha256": windows.sha256,
        "taxonomy_sha256": taxonomy.sha256,
        "split_ratios": options.split_ratios,
    }
    return _digest(options.salt, b"radvqa-settings", orjson.dumps(settings).decode(), 16).hex()


def _state_path(root: Path) -> Path:
    return root / STATE_DIR / "state.json"


def ingest_files(root: Path) -> list[str] | None:
    """What an earlier ingest wrote in ``root``: the PNGs its CSVs list, the CSVs, its state folder.

    None when ``root`` holds no ingest state file (not written by ingest-dicom).
    """
    if not _state_path(root).is_file():
        return None
    files = [f"{STATE_DIR}/{Path(d, n).relative_to(root / STATE_DIR).as_posix()}"
             for d, _, names in os.walk(root / STATE_DIR) for n in names]
    for name in CSV_NAMES.values():
        if (root / name).is_file():
            files.append(name)
            lines = (root / name).read_text(encoding="utf-8", errors="replace").splitlines()[1:]
            files += [line.rsplit(",", 1)[0] for line in lines if line]
    return files


def _resumable(root: Path, print_: str, overwrite: bool) -> bool:
    """True to resume a previous run in ``root``; raises when ``root`` cannot be used."""
    if overwrite or not root.exists() or (root.is_dir() and not any(root.iterdir())):
        check_output(root, overwrite, ingest_files, "ingest folder")
        return False
    state = _state_path(root)
    if not state.is_file():
        check_output(root, overwrite, ingest_files, "ingest folder")  # raises: not radvqa's
        return False
    try:
        previous = orjson.loads(state.read_bytes()).get("fingerprint")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        previous = None
    if previous != print_:
        raise OutputError(
            f"{root}: holds an ingest made with other settings (size, slices, window, windows table, "
            "taxonomy, split ratios or salt); pass --overwrite to start clean"
        )
    return True


def _clear_temporaries(folder: Path) -> None:
    if not folder.is_dir():
        return
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name.startswith(".") and ".tmp" in name:
                os.unlink(os.path.join(dirpath, name))


def _write_csvs(root: Path, slices: dict[str, PlannedSlice], written: set[str]) -> None:
    for split in SPLITS:
        rows = sorted((p.out, p.label) for p in slices.values() if p.split == split and p.out in written)
        text = "filename,label\n" + "".join(f"{out},{label}\n" for out, label in rows)
        write_bytes_atomic(root / CSV_NAMES[split], text.encode())


def _remove_stale(root: Path, keep: set[str]) -> int:
    removed = 0
    top = root / TOP_FOLDER
    if not top.is_dir():
        return 0
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel not in keep:
                os.unlink(os.path.join(dirpath, name))
                removed += 1
        if dirpath != str(top) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    return removed


def _file_tasks(plan: Plan, input_dir: Path, root: Path, stage: Path) -> tuple[list[FileTask], set[str]]:
    """Tasks for the slices not yet written (finished or staged by an earlier run), and those."""
    tasks, done = [], set()
    for rel, frames in sorted(plan.files.items()):
        todo = []
        for frame, out in frames:
            if (root / out).is_file() or (stage / out).is_file():
                done.add(out)
            else:
                todo.append((frame, out))
        if todo:
            tasks.append(FileTask(str(input_dir / rel), rel, tuple(todo), plan.params[rel], str(stage)))
    return tasks, done


def _publish(root: Path, stage: Path, plan: Plan, done: set[str], report: IngestReport) -> None:
    """Move staged PNGs into place, then write the CSVs, then drop what the plan no longer has."""
    for out in sorted(done):
        staged = stage / out
        if staged.is_file():
            (root / out).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, root / out)
    _write_csvs(root, plan.slices, done)
    report.removed = _remove_stale(root, done)
    shutil.rmtree(stage, ignore_errors=True)


@dataclass
class IngestResult:
    """What an ingest run produced."""

    root: Path
    report: IngestReport
    resumed: bool


def ingest_dicom(
    input_dir: Path,
    root: Path,
    labels_path: Path,
    taxonomy: Taxonomy,
    windows: WindowTable,
    options: IngestOptions,
    progress: Callable[[int, str], ProgressBar] | None = None,
    executor: ExecutorSpec | None = None,
) -> IngestResult:
    """Turn the DICOM files under ``input_dir`` into a RadImageNet-shaped copy at ``root``.

    One set of workers (``executor``, ``options.workers`` of them) reads headers and converts.
    """
    started = time.perf_counter()
    options.check()
    input_dir, root = Path(input_dir), Path(root)
    if not input_dir.is_dir():
        raise SourceError(f"{input_dir}: not a folder")
    if root.resolve().is_relative_to(input_dir.resolve()):
        raise OutputError(f"{root}: must not be inside INPUT ({input_dir})")
    labels = read_labels(labels_path, taxonomy, windows)
    print_ = fingerprint(options, windows, taxonomy)
    resumed = _resumable(root, print_, options.overwrite)
    make_bar = progress or (lambda total, desc: NullProgress())
    report = IngestReport()
    spec = replace(executor or ExecutorSpec(), workers=options.workers)
    stage = root / STATE_DIR / STAGING
    rerun = "rerun the same command to resume"
    with Executor(spec, paths=(input_dir, root), temporaries=(stage,), rerun=rerun) as pool:
        files = list(walk_files(input_dir))
        with make_bar(len(files), "read headers") as bar:
            series = scan(input_dir, files, report, bar, pool)
        plan = plan_ingest(series, labels, windows, options, report)
        if not resumed:
            claim_output(root, options.overwrite, ingest_files, "ingest folder")
        stage = root / STATE_DIR / STAGING
        stage.mkdir(parents=True, exist_ok=True)
        _clear_temporaries(stage)
        write_json(_state_path(root), {"format_version": FORMAT_VERSION, "fingerprint": print_, "complete": False})
        tasks, done = _file_tasks(plan, input_dir, root, stage)
        report.reused = len(done)
        with make_bar(sum(len(t.frames) for t in tasks), "convert") as bar:
            results = run_file_tasks(tasks, pool, bar)
    for result in results:
        report.written += len(result.written)
        done.update(result.written)
        for _, reason in result.failed:
            report.skip(reason, result.rel)
    _publish(root, stage, plan, done, report)
    failed = {out for r in results for out, _ in r.failed}
    for split in SPLITS:
        report.slices[split] = sum(1 for p in plan.slices.values() if p.split == split and p.out not in failed)
    report.seconds = time.perf_counter() - started
    write_json(
        _state_path(root),
        {"format_version": FORMAT_VERSION, "fingerprint": print_, "complete": True, "summary": report.to_dict()},
    )
    return IngestResult(root, report, resumed)
