"""``ingest-dicom``: a folder of DICOM studies -> a RadImageNet-shaped copy ``generate`` reads.

Steps: read LABELS.csv (checked against the taxonomy) -> read every file's header, skipping
what is not an acquired CT/MR slice -> group by SeriesInstanceUID (one stack per plane of a
mixed-plane enhanced file), order by position along the slice normal -> pick slices -> split
by a salted hash of the PatientID -> render each slice -> move the finished PNGs into
``radiology_ai/``, write the three ``RadiologyAI_*.csv`` files and ``.radvqa-ingest/report.json``.
Reading headers and rendering run in ``radvqa.ingest_tasks`` (worker processes import only
that module and ``radvqa.dicom``: no pandas).

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

from .dicom import DICOM_WINDOW, PixelParams, WindowTable, check_decoder
from .errors import ConfigError, OutputError, SourceError, did_you_mean
from .executors import Executor, ExecutorSpec, Job, run_tasks
from .ingest_tasks import (
    Candidate,
    FileTask,
    FrameRef,
    SKIP_DERIVED,
    JobResult,
    SliceJob,
    convert_tasks,
    plane_key,
    read_headers,
)
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
FORMAT_VERSION = 2  # 2: 64-bit name hashes
REPORT_NAME = "report.json"
_EXAMPLES = 3
_BATCH = 8  # files per pool task (times Executor.per_task on a cluster)
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
    include_derived: bool = False

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
    return _digest(salt, b"radvqa-series", series_uid, 8).hex()


def slice_tag(salt: str, sop_instance_uid: str, frame: int) -> str:
    """The second part of a slice's output name: a keyed hash of its SOPInstanceUID and frame.

    64 bits each for the series and slice parts: within one series, the chance that two of
    n slices share a name is about n^2 / 2^65 (and a collision is detected, never overwritten).
    """
    return _digest(salt, b"radvqa-slice", f"{sop_instance_uid}\0{frame}", 8).hex()


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


@dataclass
class SeriesInfo:
    """Everything the header scan learnt about one stack (never written out).

    A stack is a series, or one plane of an enhanced multi-frame file whose frames lie in
    several planes (``key`` then adds the plane to the SeriesInstanceUID ``uid``).
    """

    key: str
    uid: str
    study: str = ""
    modality: str = ""
    patients: set[str] = field(default_factory=set)
    shapes: set[tuple[int, int]] = field(default_factory=set)
    planes: dict[tuple[float, ...], tuple[float, ...]] = field(default_factory=dict)
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
        """Human-readable summary, then the problem lines."""
        total = sum(self.slices.values())
        rate = (self.written / self.seconds) if self.seconds else 0.0
        return [
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
            *self.problem_lines(),
        ]

    def problem_lines(self) -> list[str]:
        """The skip reasons and warnings, with example paths: printed even with --quiet."""
        out = []
        for reason, n in sorted(self.skipped.items()):
            examples = ", ".join(self.examples.get(reason, []))
            out.append(f"skipped {n}: {reason}" + (f" (e.g. {examples})" if examples else ""))
        for what, n in sorted(self.notices.items()):
            examples = ", ".join(self.examples.get(what, []))
            out.append(f"warning: {n} {what}" + (f" (e.g. {examples})" if examples else ""))
        out.extend(f"warning: {w}" for w in self.warnings)
        return out

    @property
    def ingested(self) -> int:
        """Slices in the copy (written now or kept from an earlier run)."""
        return sum(self.slices.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for report.json and the state file: counts, and example paths under INPUT."""

        def detailed(counts: dict[str, int]) -> dict[str, Any]:
            return {k: {"count": n, "examples": self.examples.get(k, [])} for k, n in sorted(counts.items())}

        return {
            "files": self.files,
            "images": self.images,
            "series": self.series,
            "labelled_series": self.labelled_series,
            "slices": self.slices,
            "patients": self.patients,
            "written": self.written,
            "reused": self.reused,
            "removed": self.removed,
            "skipped": detailed(self.skipped),
            "notices": detailed(self.notices),
            "warnings": list(self.warnings),
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




def scan(
    input_dir: Path,
    files: list[str],
    report: IngestReport,
    bar: ProgressBar,
    executor: Executor | None = None,
    include_derived: bool = False,
) -> dict[str, SeriesInfo]:
    """Read the header of each file (batches of files on ``executor``); group the images into stacks.

    A stack is a SeriesInstanceUID, split by plane when one enhanced file holds several.
    """
    executor = executor or Executor()  # default: in this process
    size = _SCAN_CHUNK * executor.per_task
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    job = Job(read_headers, list(enumerate(chunks)), str(input_dir), weight=lambda c, _: len(c), unit="header batches read")
    batches: list[list[tuple[str, Any]]] = run_tasks(executor, job, bar)
    headers = chain.from_iterable(batches)
    series: dict[str, SeriesInfo] = {}
    for rel, result in headers:
        report.files += 1
        if isinstance(result, str):
            report.skip(result, rel)
            continue
        uid, refs, facts = result
        if facts["derived"] and not include_derived:
            report.skip(SKIP_DERIVED, rel)
            continue
        planes = {plane_key(r.orientation) for r in refs}
        for ref in refs:
            plane = plane_key(ref.orientation)
            key = uid if len(planes) == 1 else f"{uid}\0{plane}"
            info = series.get(key)
            if info is None:
                info = series[key] = SeriesInfo(key, uid, study=facts["study"], modality=facts["modality"])
            info.patients.add(facts["patient"])
            info.shapes.add(facts["shape"])
            if plane is not None and ref.orientation is not None:
                info.planes.setdefault(plane, ref.orientation)
            info.frames.append(ref)
        report.images += len(refs)
    report.series = len({info.uid for info in series.values()})
    return series


Sources = tuple[tuple[str, int], ...]


def order_frames(info: SeriesInfo, report: IngestReport) -> list[tuple[FrameRef, Sources]]:
    """Frames sorted along the slice normal (PS3.3 C.7.6.2.1.1), else by InstanceNumber.

    Copies of one SOP instance (same SOPInstanceUID and frame) become one frame whose sources
    are the copies in path order: the first that decodes is used.
    """
    unique: dict[tuple[str, int], FrameRef] = {}
    copies: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for ref in sorted(info.frames, key=lambda f: (f.rel, f.frame)):
        key = (ref.sop, ref.frame)
        if key in unique:
            report.skip("duplicate image (same SOPInstanceUID as another file; the first copy that decodes is used)", ref.rel)
        else:
            unique[key] = ref
        copies.setdefault(key, []).append((ref.rel, ref.frame))
    frames = list(unique.values())
    if info.planes and all(f.position is not None for f in frames):
        o = np.asarray(next(iter(info.planes.values())))
        normal = np.cross(o[:3], o[3:])
        frames.sort(key=lambda f: (float(np.dot(np.asarray(f.position), normal)), f.instance or 0, f.rel, f.frame))
    elif all(f.instance is not None for f in frames):
        frames.sort(key=lambda f: (f.instance, f.frame, f.rel))
    else:
        report.notice("series without positions or instance numbers, ordered by file name", info.folder)
    return [(f, tuple(copies[(f.sop, f.frame)])) for f in frames]


def _geometry_problem(info: SeriesInfo) -> str | None:
    if len(info.shapes) > 1:
        return "series with inconsistent geometry (different Rows/Columns)"
    if len(info.planes) > 1:
        return "series with inconsistent geometry (different orientations)"
    if len(info.patients) > 1:
        return "series with several PatientIDs"
    return None


# --- planning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedSlice:
    """One output slice: its path relative to ROOT, split and CSV label."""

    out: str
    split: str
    label: str


@dataclass
class Plan:
    """Every slice job, and every name a job may write (with its split and label)."""

    slices: dict[str, PlannedSlice] = field(default_factory=dict)
    jobs: list[SliceJob] = field(default_factory=list)


def _match(labels: Labels, info: SeriesInfo) -> tuple[LabelRow | None, str | None, set[int]]:
    """The label row of a series, a conflict reason, and the lines of every row that matched it."""
    if labels.kind in ("series_uid", "study_uid"):
        row = labels.rows.get(info.uid if labels.kind == "series_uid" else info.study)
        return row, None, ({row.line} if row else set())
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
    lines = {r.line for r in rows if r is not None}
    if rows == {None}:
        return None, None, lines
    if None in rows or len({(r.image_class, r.window) for r in rows if r is not None}) > 1:
        return None, "series whose files match different LABELS.csv rows", lines
    return min((r for r in rows if r is not None), key=lambda r: r.line), None, lines


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


def _picks(frames: list[tuple[FrameRef, Sources]], spec: SliceSpec) -> list[list[tuple[FrameRef, Sources]]]:
    """The selected slices, each with its fall-backs: for middle, every frame by distance from it."""
    picked = spec.select(len(frames))
    if spec.mode != "middle" or not picked:
        return [[frames[i]] for i in picked]
    middle = picked[0]
    return [[frames[i] for i in sorted(range(len(frames)), key=lambda i: (abs(i - middle), i))]]


def plan_ingest(
    series: dict[str, SeriesInfo],
    labels: Labels,
    windows: WindowTable,
    options: IngestOptions,
    report: IngestReport,
) -> Plan:
    """Label, check, order, select and name the slices of every stack; split by patient.

    Raises OutputError when two different slices would get one name (a hash collision).
    """
    plan = Plan()
    used: set[int] = set()
    chosen: list[tuple[SeriesInfo, LabelRow, list[list[tuple[FrameRef, Sources]]]]] = []
    syntaxes: dict[str, str] = {}
    for key in sorted(series, key=lambda k: (series[k].folder, k)):
        info = series[key]
        row, conflict, lines = _match(labels, info)
        used |= lines
        if conflict:
            report.skip(conflict, info.folder)
            continue
        if row is None:
            report.skip("unlabelled series (no LABELS.csv row)", info.folder)
            continue
        cls = row.image_class
        if info.modality and info.modality != cls.modality:
            report.skip(f"label modality differs from the files' (DICOM modality {info.modality})", info.folder)
            continue
        problem = _geometry_problem(info)
        if problem:
            report.skip(problem, info.folder)
            continue
        picks = _picks(order_frames(info, report), options.slices)
        for candidates in picks:
            syntaxes.setdefault(candidates[0][0].syntax, candidates[0][0].rel)
        chosen.append((info, row, picks))
    unsupported = {}
    for syntax in sorted(syntaxes):
        reason = check_decoder(syntax)  # raises MissingDependencyError before any work
        if reason:
            unsupported[syntax] = reason
    patient_keys: dict[str, str] = {}
    for info, _, _ in chosen:
        patient = next(iter(info.patients)) or f"study:{info.study}"
        if not next(iter(info.patients)):
            report.notice("series without PatientID, split by study instead", info.folder)
        patient_keys[info.key] = patient
    splits = _patient_splits(sorted(set(patient_keys.values())), options)
    per_split_patients: dict[str, set[str]] = {s: set() for s in SPLITS}
    owners: dict[str, tuple[str, str, int]] = {}
    for info, row, picks in chosen:
        kept = []
        for candidates in picks:
            first = candidates[0][0]
            if first.syntax in unsupported:
                report.skip(unsupported[first.syntax], first.rel)
                continue
            kept.append([c for c in candidates if c[0].syntax not in unsupported])
        if not kept:
            continue
        report.labelled_series += 1
        cls = row.image_class
        split = splits[patient_keys[info.key]]
        per_split_patients[split].add(patient_keys[info.key])
        params = _params(row, windows, options)
        prefix = f"{TOP_FOLDER}/{cls.folder}/{series_tag(options.salt, info.key)}-"
        for candidates in kept:
            job = []
            for ref, sources in candidates:
                out = f"{prefix}{slice_tag(options.salt, ref.sop, ref.frame)}.png"
                owner = owners.setdefault(out, (info.key, ref.sop, ref.frame))
                if owner != (info.key, ref.sop, ref.frame):
                    raise OutputError(
                        f"two slices of {info.folder} hash to one output name ({out.rsplit('/', 1)[-1]}); "
                        "nothing was written: run again with another --salt"
                    )
                plan.slices[out] = PlannedSlice(out, split, cls.label)
                job.append(Candidate(out, sources))
            plan.jobs.append(SliceJob(tuple(job), params))
    unused = sorted({r.line for r in labels.rows.values()} - used)
    if unused:
        report.warnings.append(f"{len(unused)} LABELS.csv rows match no series (e.g. line {unused[0]})")
    report.patients = {s: len(p) for s, p in per_split_patients.items()}
    return plan


def _patient_splits(patients: list[str], options: IngestOptions) -> dict[str, str]:
    keys = np.fromiter(
        (int.from_bytes(_digest(options.salt, b"radvqa-split", p, 8), "little") for p in patients),
        dtype=np.uint64,
        count=len(patients),
    )
    return dict(zip(patients, hash_split(keys, options.split_ratios).tolist()))


# --- rendering -----------------------------------------------------------------------------


def run_file_tasks(tasks: list[FileTask], executor: Executor, bar: ProgressBar) -> list[JobResult]:
    """Convert every task on ``executor`` (batches of files per task); results in file order."""
    size = _BATCH * executor.per_task
    batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    job = Job(
        convert_tasks,
        list(enumerate(batches)),
        weight=lambda batch, _: sum(len(t.jobs) for t in batch),
        unit="batches converted",
    )
    results: list[list[list[JobResult]]] = run_tasks(executor, job, bar)
    return [r for batch in results for task in batch for r in task]


def _record(results: list[JobResult], report: IngestReport) -> None:
    """Count what the workers met: a failed slice is skipped, a replaced one is a warning."""
    for result in results:
        if result.written is None:
            if result.problems:
                rel, reason = result.problems[0]
                report.skip(reason, rel)
            continue
        report.written += 1
        for rel, reason in result.problems:
            if result.replaced:
                report.notice(f"--slices middle: {reason.split(' (')[0]}, the nearest usable slice was taken", rel)
            else:
                report.notice("duplicate copy that does not decode (another copy was used)", rel)


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


def _pngs_under(base: Path, folder: Path) -> set[str]:
    """PNG paths under ``folder``, relative to ``base`` (one walk instead of a stat per candidate)."""
    found: set[str] = set()
    for dirpath, _, filenames in os.walk(folder):
        prefix = Path(dirpath).relative_to(base).as_posix()
        found.update(f"{prefix}/{name}" for name in filenames if name.endswith(".png") and not name.startswith("."))
    return found


def _file_tasks(plan: Plan, input_dir: Path, root: Path, stage: Path) -> tuple[list[FileTask], set[str], int]:
    """Tasks for the jobs not yet done (finished or staged by an earlier run), those names, and their count."""
    by_file: dict[str, list[SliceJob]] = {}
    done: set[str] = set()
    finished = 0
    existing = _pngs_under(root, root / TOP_FOLDER) | _pngs_under(stage, stage / TOP_FOLDER)
    for job in plan.jobs:
        earlier = [c.out for c in job.candidates if c.out in existing]
        if earlier:
            done.add(earlier[0])
            finished += 1
        else:
            by_file.setdefault(job.candidates[0].sources[0][0], []).append(job)
    tasks = [FileTask(str(input_dir), rel, tuple(jobs), str(stage)) for rel, jobs in sorted(by_file.items())]
    return tasks, done, finished


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

    @property
    def report_path(self) -> Path:
        """ROOT/.radvqa-ingest/report.json: counts and example paths per reason, written every run."""
        return self.root / STATE_DIR / REPORT_NAME


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
            series = scan(input_dir, files, report, bar, pool, options.include_derived)
        plan = plan_ingest(series, labels, windows, options, report)
        if not resumed:
            claim_output(root, options.overwrite, ingest_files, "ingest folder")
        stage = root / STATE_DIR / STAGING
        stage.mkdir(parents=True, exist_ok=True)
        _clear_temporaries(stage)
        write_json(_state_path(root), {"format_version": FORMAT_VERSION, "fingerprint": print_, "complete": False})
        tasks, done, report.reused = _file_tasks(plan, input_dir, root, stage)
        with make_bar(sum(len(t.jobs) for t in tasks), "convert") as bar:
            results = run_file_tasks(tasks, pool, bar)
    _record(results, report)
    done.update(r.written for r in results if r.written is not None)
    _publish(root, stage, plan, done, report)
    for split in SPLITS:
        report.slices[split] = sum(1 for out in done if plan.slices[out].split == split)
    report.seconds = time.perf_counter() - started
    summary = report.to_dict()
    write_json(root / STATE_DIR / REPORT_NAME, summary)
    write_json(
        _state_path(root),
        {"format_version": FORMAT_VERSION, "fingerprint": print_, "complete": True, "summary": summary},
    )
    return IngestResult(root, report, resumed)
