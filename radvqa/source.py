"""Read a local RadImageNet copy into an image table (one row per usable CT/MRI image).

The copy is ``ROOT/radiology_ai/{CT,MR,US}/...`` plus optional ``RadiologyAI_{train,val,test}.csv``
files (SPEC section 1). Class and modality come from the path, never from the CSV label. Every
problem row is counted in a :class:`SourceReport` with a few examples, and the run goes on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections import deque
from collections.abc import Collection, Sequence
from itertools import compress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import SourceError
from .executors import Executor, Job, run_tasks
from .file_cache import load_known, save_known, stat_keys
from .taxonomy import Taxonomy

SPLITS = ("train", "val", "test")
CSV_NAMES = {split: f"RadiologyAI_{split}.csv" for split in SPLITS}
TOP_FOLDER = "radiology_ai"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
_EXAMPLES = 3
# The first path component that is CT, MR or US starts the canonical image id.
_CANONICAL_RE = re.compile(r"^(?:.*?/)?((?:CT|MR|US)/.*)$")
_MODALITY_PREFIXES = frozenset({"CT/", "MR/", "US/"})


@dataclass
class SourceReport:
    """What the reader found: counts per outcome, a few examples of each problem, warnings."""

    root: str = ""
    data_dir: str = ""
    split_source: str = ""
    files_on_disk: int = 0
    images: int = 0
    per_split: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def skip(self, reason: str, items: list[str], count: int | None = None) -> None:
        """Record ``count`` (default: len(items)) skipped entries for ``reason``."""
        n = len(items) if count is None else count
        if n == 0:
            return
        self.skipped[reason] = self.skipped.get(reason, 0) + n
        kept = self.examples.setdefault(reason, [])
        kept.extend(items[: _EXAMPLES - len(kept)] if len(kept) < _EXAMPLES else [])

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"source: {self.data_dir} ({self.files_on_disk} image files, splits from {self.split_source})",
            f"images used: {self.images} ("
            + ", ".join(f"{s} {n}" for s, n in self.per_split.items())
            + ")",
        ]
        for reason, n in self.skipped.items():
            examples = ", ".join(self.examples.get(reason, []))
            out.append(f"skipped {n}: {reason}" + (f" (e.g. {examples})" if examples else ""))
        return out

    def to_dict(self) -> dict[str, object]:
        """Plain dict for the manifest."""
        return {
            "split_source": self.split_source,
            "files_on_disk": self.files_on_disk,
            "images": self.images,
            "per_split": self.per_split,
            "skipped": self.skipped,
            "examples": self.examples,
        }


@dataclass(frozen=True)
class Layout:
    """Where the image folders and split CSVs of a copy are."""

    root: Path
    data_dir: Path
    prefix: str
    csvs: dict[str, Path]


def locate(root: Path | str) -> Layout:
    """Find the folder holding CT/MR/US (ROOT, ROOT/radiology_ai or a renamed top folder)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder")

    def has_modalities(folder: Path) -> bool:
        return any((folder / m).is_dir() for m in ("CT", "MR", "US"))

    if has_modalities(root):
        data_dir = root
    elif (root / TOP_FOLDER).is_dir() and has_modalities(root / TOP_FOLDER):
        data_dir = root / TOP_FOLDER
    else:
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and has_modalities(p))
        if len(candidates) != 1:
            found = "several" if candidates else "no"
            raise SourceError(
                f"{root}: found {found} folder with CT/, MR/ or US/ inside; pass the RadImageNet "
                f"folder (the one holding {TOP_FOLDER}/)"
            )
        data_dir = candidates[0]
    prefix = "" if data_dir == root else data_dir.relative_to(root).as_posix() + "/"
    csvs = {}
    # ROOT, radiology_ai/, and, when ROOT is radiology_ai/ itself, the folder beside it.
    folders = (root, data_dir) if data_dir != root else (root, root.parent)
    for split, name in CSV_NAMES.items():
        for folder in folders:
            if (folder / name).is_file():
                csvs[split] = folder / name
                break
    return Layout(root=root, data_dir=data_dir, prefix=prefix, csvs=csvs)


# The first bytes of each image format the walk accepts (PNG: RFC 2083 section 3.1).
SIGNATURES = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
    ".bmp": (b"BM",),
}
_ADVISE = hasattr(os, "posix_fadvise")
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_DANGLING, _NOT_AN_IMAGE = -1, 0  # sizes that are outcomes
NOT_AN_IMAGE = "not an image file (empty, wrong signature or not a regular file)"
DANGLING = "dangling link"
_OUTCOMES = ((_NOT_AN_IMAGE, NOT_AN_IMAGE), (_DANGLING, DANGLING))
FOLDER_LINK = "folder link not followed (a loop would list the copy again)"
BAD_NAME = "name is not valid UTF-8 (shown escaped)"


def printable(name: str) -> str:
    """A name read from disk as printable text: undecodable bytes become \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


@dataclass
class Listing:
    """The image files a walk found (ids) and what it skipped, by reason."""

    images: set[str]
    problems: dict[str, list[str]]

    def rejected(self) -> set[str]:
        """Every id skipped by the walk (a CSV row naming one is not 'missing': it has its own reason)."""
        return {item for items in self.problems.values() for item in items}


def walk_images(data_dir: Path) -> Listing:
    """List every image file under CT/, MR/ and US/ by name, without opening one (see :func:`image_sizes`).

    Safe on hostile copies: folder links are never followed (a loop cannot multiply the
    listing) and names that are not UTF-8 are skipped. A name with an image suffix is taken
    as listed; whether it is a regular file is checked when it is opened, by the few calls
    that read its signature anyway. Other names are looked at (lstat) to find subfolders.
    """
    problems: dict[str, list[str]] = {FOLDER_LINK: [], BAD_NAME: []}
    images: set[str] = set()
    for modality in ("CT", "MR", "US"):
        top = data_dir / modality
        if not top.is_dir():
            continue
        stack = [(str(top), modality)]
        while stack:
            path, rel = stack.pop()
            try:
                names = os.listdir(path)
            except OSError as error:
                raise SourceError(f"{path}: cannot list this folder ({error.strerror})") from None
            for name in names:
                if name[0] == ".":
                    continue
                if not name.isascii() and not _utf8(name):
                    problems[BAD_NAME].append(printable(f"{rel}/{name}"))
                elif name[name.rfind(".") :].lower() in IMAGE_SUFFIXES:
                    images.add(f"{rel}/{name}")
                else:
                    full = os.path.join(path, name)
                    try:
                        mode = os.lstat(full).st_mode
                    except OSError:
                        continue  # gone since the listing
                    if stat.S_ISDIR(mode):
                        stack.append((full, f"{rel}/{name}"))
                    elif stat.S_ISLNK(mode) and os.path.isdir(full):
                        problems[FOLDER_LINK].append(f"{rel}/{name}")
    return Listing(images, problems)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def image_sizes(data_dir: Path, ids: Sequence[str], stats: list[tuple[int, ...]] | None = None) -> np.ndarray:
    """Per image id: its size in bytes if it is a regular file (or a link to one) that starts
    with its format's signature, else _NOT_AN_IMAGE or _DANGLING (a link to nothing).

    Cheap (stat plus signature, no decode): one open, fstat and 8-byte read per file. A first
    page already in memory is read without waiting (``RWF_NOWAIT``, Linux 4.14+). A miss has
    started the read of that page, so the file stays open and is read _IN_FLIGHT files later:
    on a cold copy many reads wait on the disk side by side, without threads (which on a warm
    copy only fight over the GIL). After a miss, the folder's files are read without readahead
    (8 bytes are needed, not whole files); a warm copy is spared that extra call.
    ``ids`` in path order, so that each folder is opened once. ``stats`` collects
    (position, device, inode, size, mtime_ns, ctime_ns) of every regular file opened.
    """
    sizes = [_NOT_AN_IMAGE] * len(ids)
    cold: deque[tuple[int, int, str, int]] = deque()  # (position, open file, name, size): first page on its way
    head = bytearray(8)
    nowait = _NOWAIT
    folder, descriptor, cold_folder = "", -1, not _NOWAIT
    try:
        for position, image_id in enumerate(ids):
            cut = image_id.rfind("/")
            if image_id[:cut] != folder:
                folder, cold_folder = image_id[:cut], not nowait
                descriptor = _reopen(descriptor, data_dir / folder)
            name = image_id[cut + 1 :]
            handle = _open_file(name, descriptor)
            if handle < 0:
                sizes[position] = _DANGLING if handle == _LINK_TO_NOTHING else _NOT_AN_IMAGE
                continue
            try:
                status = os.fstat(handle)
                if not stat.S_ISREG(status.st_mode):
                    os.close(handle)
                    continue
                if stats is not None:
                    stats.append((position, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns))
                if cold_folder and _ADVISE:
                    os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_RANDOM)
                count = os.preadv(handle, [head], 0, nowait) if nowait else os.readv(handle, [head])
            except BlockingIOError:
                cold_folder = True
                cold.append((position, handle, name, status.st_size))
                if len(cold) > _IN_FLIGHT:
                    _finish(sizes, *cold.popleft())
                continue
            except OSError as error:
                if nowait and error.errno == errno.EOPNOTSUPP:  # this file system cannot say: read blocking
                    nowait, cold_folder = 0, True
                    _finish(sizes, position, handle, name, status.st_size)
                else:
                    os.close(handle)
                continue
            os.close(handle)
            if _signed(name, head[:count]):
                sizes[position] = status.st_size
        while cold:
            _finish(sizes, *cold.popleft())
    finally:
        _reopen(descriptor, None)
        for _, handle, _, _ in cold:
            os.close(handle)
    return np.asarray(sizes, dtype=np.int64)


def _reopen(descriptor: int, folder: Path | None) -> int:
    """Open the next folder (if any), then close the one open (if any): files are named relative to it.

    In this order a folder that cannot be opened leaves the old one to the caller's cleanup.
    """
    opened = -1 if folder is None else _open_folder(folder)
    if descriptor >= 0:
        os.close(descriptor)
    return opened


def checked_sizes(shared: tuple[Path, np.ndarray], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, keys): :func:`image_sizes` of ``ids``, opening only the files not verified before.

    ``shared`` is (data dir, sorted keys of the files an earlier run found sound, see
    :mod:`radvqa.file_cache`); a file whose lstat key is among them takes its size from the
    lstat. ``keys`` holds each sound file's key (0 for the others), for the next run.
    """
    data_dir, known = shared
    sizes = np.full(len(ids), _NOT_AN_IMAGE, dtype=np.int64)
    keys = np.zeros(len(ids), dtype=np.uint64)
    hit = np.zeros(len(ids), dtype=bool)
    if len(known):
        fields = np.zeros((len(ids), 5), dtype=np.int64)
        _lstat_fields(data_dir, ids, fields)
        keys = stat_keys(fields)
        found = np.searchsorted(known, keys).clip(max=len(known) - 1)
        hit = (known[found] == keys) & (keys != 0)
        sizes[hit] = fields[hit, 2]
    rest = np.flatnonzero(~hit)
    stats: list[tuple[int, ...]] = []
    sizes[rest] = image_sizes(data_dir, [ids[i] for i in rest], stats)
    keys[rest] = 0
    if stats:  # the keys of the files opened now, from the fstat image_sizes did anyway
        opened = np.asarray(stats, dtype=np.int64)
        keys[rest[opened[:, 0]]] = stat_keys(opened[:, 1:])
    keys[sizes <= 0] = 0
    return sizes, keys


def _lstat_fields(data_dir: Path, ids: Sequence[str], fields: np.ndarray) -> None:
    """(device, inode, size, mtime_ns, ctime_ns) of each id that is a regular file (not a link)."""
    rows: list[tuple[int, ...]] = []
    folder, descriptor = "", -1
    try:
        for position, image_id in enumerate(ids):
            cut = image_id.rfind("/")
            if image_id[:cut] != folder:
                folder = image_id[:cut]
                descriptor = _reopen(descriptor, data_dir / folder)
            try:
                status = os.stat(image_id[cut + 1 :], dir_fd=descriptor, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                rows.append((position, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns))
    finally:
        _reopen(descriptor, None)
    if rows:
        found = np.asarray(rows, dtype=np.int64)
        fields[found[:, 0]] = found[:, 1:]


def check_images(data_dir: Path, ids: list[str], executor: Executor | None = None) -> np.ndarray:
    """Sizes of ``ids`` (see :func:`image_sizes`), in batches over the executor's workers when it has some.

    Files found sound by an earlier run on this copy, and unchanged since, are only lstat'd
    (:mod:`radvqa.file_cache`); this run's sound files replace the cache.
    The check is syscalls, not Python: two workers take about 60% of one's time.
    """
    shared = (data_dir, load_known(data_dir))
    if executor is None or executor.in_process or len(ids) < _BATCH:
        sizes, keys = checked_sizes(shared, ids)
    else:
        count = min(max(1, len(ids) // _BATCH), _BATCHES_PER_WORKER * executor.spec.workers)
        edges = [len(ids) * i // count for i in range(count + 1)]
        job = Job(checked_sizes, [(i, ids[edges[i] : edges[i + 1]]) for i in range(count)], shared, unit="image batches checked")
        parts = run_tasks(executor, job)  # at least one batch
        sizes, keys = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    save_known(data_dir, keys)
    return sizes


_BATCH = 20_000  # fewest images worth a task of their own
_BATCHES_PER_WORKER = 4  # so that a slow worker does not hold up the rest
_OPEN = os.O_RDONLY | os.O_NONBLOCK  # O_NONBLOCK: opening a fifo cannot hang the walk
_IN_FLIGHT = 128  # cold first pages read at once
_LINK_TO_NOTHING, _NO_FILE = -2, -1


def _open_folder(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise SourceError(f"{path}: cannot open this folder ({error.strerror})") from None


def _open_file(name: str, folder: int) -> int:
    """An open handle on ``name``, following a link only after checking its target exists;
    _LINK_TO_NOTHING or _NO_FILE when there is nothing to open."""
    try:
        return os.open(name, _OPEN | os.O_NOFOLLOW, dir_fd=folder)
    except OSError as error:
        if error.errno != errno.ELOOP:  # ELOOP: a link (O_NOFOLLOW, POSIX.1-2008 open())
            return _NO_FILE
    try:
        os.stat(name, dir_fd=folder)
        return os.open(name, _OPEN, dir_fd=folder)
    except OSError:
        return _LINK_TO_NOTHING


def _finish(sizes: list[int], position: int, handle: int, name: str, size: int) -> None:
    """Read a file whose first page was not in memory (blocking: it has had time to arrive); closes it."""
    try:
        head = os.read(handle, 8)
    except OSError:
        head = b""
    finally:
        os.close(handle)
    if _signed(name, head):
        sizes[position] = size


def _signed(name: str, head: bytes | bytearray) -> bool:
    """Whether a file's first bytes are the signature its suffix promises."""
    return head.startswith(SIGNATURES[name[name.rfind(".") :].lower()])


def path_hash(ids: list[str] | pd.Series) -> np.ndarray:
    """Stable 64-bit hash of each image id (blake2b): seeds per-image randomness and hash splits."""
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(s.encode(), digest_size=8).digest() for s in ids])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def hash_split(keys: np.ndarray, ratios: dict[str, float]) -> np.ndarray:
    """Assign train/val/test from each key's position in [0, 1) (independent of the seed)."""
    unit = (keys >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    edges = np.cumsum([ratios[s] for s in SPLITS])
    codes = np.searchsorted(edges, unit, side="right").clip(0, len(SPLITS) - 1)
    return np.asarray(SPLITS, dtype=object)[codes]


def canonical_id(filename: str) -> str | None:
    """The image id of a CSV filename: the path from its first CT/MR/US component, or None."""
    match = _CANONICAL_RE.match(filename.replace("\\", "/").strip())
    return match.group(1) if match else None


def read_source(
    root: Path | str,
    taxonomy: Taxonomy,
    split_ratios: dict[str, float],
    with_sizes: bool = False,
    executor: Executor | None = None,
) -> tuple[pd.DataFrame, SourceReport]:
    """Build the image table of a copy, sorted by image id.

    Columns: image_id (``CT/abd/normal/x.png``), image (path relative to ROOT), split,
    class_index (into ``taxonomy.classes``), modality, anatomy, pathology, region, key
    (uint64 hash of image_id) and, with ``with_sizes``, size in bytes.
    Plain Python loops over lists: on 1.35M rows they beat pandas string methods.
    ``executor``: the workers that check the files' signatures (default: this process).
    """
    layout = locate(root)
    report = SourceReport(root=str(layout.root), data_dir=str(layout.data_dir))
    listing = walk_images(layout.data_dir)
    on_disk = listing.images
    report.files_on_disk = len(on_disk)
    if layout.csvs:
        ids, splits, labels = _from_csvs(layout, on_disk, listing.rejected(), report)
    else:
        report.split_source = "a hash of each path (no RadiologyAI_*.csv found)"
        ids = sorted(on_disk)
        splits = hash_split(path_hash(ids), split_ratios).tolist()
        labels = None
    ids, splits, classes = _resolve_classes(ids, splits, labels, taxonomy, report)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ids = [ids[i] for i in order]
    # Only the images that would become rows are opened: not ultrasound, not unlisted files.
    sizes = check_images(layout.data_dir, ids, executor)
    checked = {reason: list(compress(ids, (sizes == outcome).tolist())) for outcome, reason in _OUTCOMES}
    for reason, items in (checked | listing.problems).items():
        report.skip(reason, sorted(items))
    usable = sizes > 0
    ids, order, sizes = list(compress(ids, usable.tolist())), list(compress(order, usable.tolist())), sizes[usable]
    codes = np.asarray(classes, dtype=np.int64)[order] if order else np.zeros(0, dtype=np.int64)
    # Object columns: converting 1M strings to pandas' string dtype costs more than it saves.
    table = pd.DataFrame(
        {
            "image_id": pd.Series(ids, dtype=object),
            "image": pd.Series([layout.prefix + i for i in ids], dtype=object),
            "split": pd.Series([splits[i] for i in order], dtype=object),
            "class_index": codes,
        }
    )
    for column in ("modality", "anatomy", "pathology", "region"):
        values = [getattr(c, column) for c in taxonomy.classes]
        categories = list(dict.fromkeys(values))
        lookup = np.array([categories.index(v) for v in values], dtype=np.int64)
        table[column] = pd.Categorical.from_codes(lookup[codes], categories=categories)
    table["key"] = path_hash(ids)
    if with_sizes:
        table["size"] = sizes
    if table["key"].duplicated().any():
        raise SourceError(f"{layout.root}: two image ids share a 64-bit hash; please report this")
    report.images = len(table)
    report.per_split = {s: int((table["split"] == s).sum()) for s in SPLITS}
    return table, report


def require_images(table: pd.DataFrame, report: SourceReport) -> None:
    """Refuse a copy without one usable CT/MRI image (an ultrasound-only or empty copy gives no record)."""
    if len(table) == 0:
        skipped = "; ".join(f"{n} {reason}" for reason, n in report.skipped.items()) or "no image files found"
        raise SourceError(f"{report.data_dir}: no usable CT/MRI image ({skipped})")


def _from_csvs(
    layout: Layout, on_disk: Collection[str], rejected: set[str], report: SourceReport
) -> tuple[list[str], list[str], list[str]]:
    missing_csvs = [CSV_NAMES[s] for s in SPLITS if s not in layout.csvs]
    report.split_source = ", ".join(str(p) for p in layout.csvs.values())
    if missing_csvs:
        report.warnings.append(f"no {', '.join(missing_csvs)} found: those splits will be empty")
    candidates: list[str | None] = []
    splits: list[str] = []
    labels: list[str] = []
    where: list[tuple[str, int]] = []  # (csv name, first data row) per file, for messages
    for split, path in layout.csvs.items():
        try:
            frame = pd.read_csv(path, dtype=object, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise SourceError(f"{path}: cannot read CSV ({exc})")
        if "filename" not in frame.columns:
            raise SourceError(f"{path}: no 'filename' column (header must be filename,label)")
        names = frame["filename"].tolist()
        where.append((path.name, len(candidates)))
        prefix = _common_prefix(names)
        cut = len(prefix)
        if prefix and all([name.startswith(prefix) for name in names]):
            candidates.extend([name[cut:] for name in names])
        else:
            candidates.extend([canonical_id(name) for name in names])
        splits.extend([split] * len(names))
        labels.extend(frame["label"].tolist() if "label" in frame.columns else [""] * len(names))
    # One pass per rule over 1.35M rows: comprehensions and compress() beat a branchy loop.
    parsed = [c is not None and c[:3] in _MODALITY_PREFIXES for c in candidates]
    unparsed = [_row_ref(where, i) for i in compress(range(len(candidates)), [not p for p in parsed])]
    repeated = pd.Series(candidates, dtype=object).duplicated(keep="first").tolist()
    first = [p and not r for p, r in zip(parsed, repeated)]
    duplicated = [c for c, p, f in zip(candidates, parsed, first) if p and not f and c is not None]
    seen = set(compress(candidates, parsed))
    present = [f and c in on_disk for c, f in zip(candidates, first)]
    missing = [c for c, f, p in zip(candidates, first, present) if f and not p and c is not None and c not in rejected]
    ids = [c for c, p in zip(candidates, present) if p and c is not None]
    report.skip("CSV path without a CT/, MR/ or US/ folder", unparsed)
    report.skip("listed more than once in the CSVs (first kept)", duplicated)
    report.skip("CSV row whose image file is missing", missing)
    not_listed = sorted(i for i in on_disk if i not in seen and not i.startswith("US/"))
    report.skip("image on disk but in no split CSV", not_listed)
    return ids, list(compress(splits, present)), list(compress(labels, present))


def _row_ref(where: list[tuple[str, int]], index: int) -> str:
    """'RadiologyAI_train.csv row 7' for a position in the concatenated CSV rows."""
    name, start = max((w for w in where if w[1] <= index), key=lambda w: w[1])
    return f"{name} row {index - start + 2}"


def _common_prefix(names: list[str]) -> str:
    """The folder prefix before CT/MR/US of the first CSV row ('radiology_ai/' usually)."""
    for name in names[:1]:
        image_id = canonical_id(name)
        if image_id is not None and name.endswith(image_id):
            return name[: len(name) - len(image_id)]
    return ""


_UNKNOWN, _SKIPPED_MODALITY, _WRONG_DEPTH = -1, -2, -3


def _folder_class(folder: str, taxonomy: Taxonomy, skipped_modalities: set[str]) -> tuple[int, tuple[str, ...]]:
    parts = folder.split("/")
    if parts[0] in skipped_modalities:
        return _SKIPPED_MODALITY, ()
    if len(parts) != 3:
        return _WRONG_DEPTH, ()
    index = taxonomy.class_index(parts[0], parts[1], parts[2])
    if index < 0:
        return _UNKNOWN, ()
    return index, (f"{parts[1]}-{parts[2]}", taxonomy.classes[index].label)


def _resolve_classes(
    ids: list[str],
    splits: list[str],
    labels: list[str] | None,
    taxonomy: Taxonomy,
    report: SourceReport,
) -> tuple[list[str], list[str], list[int]]:
    skipped_modalities = set(taxonomy.skipped_modalities)
    # Per class folder: (class index or a skip code, labels that agree with the folder).
    folder_info: dict[str, tuple[int, tuple[str, ...]]] = {}
    kept_ids: list[str] = []
    kept_splits: list[str] = []
    classes: list[int] = []
    skipped_modality = 0
    wrong_depth: list[str] = []
    unknown: list[str] = []
    disagree: list[str] = []
    for i, image_id in enumerate(ids):
        folder = image_id[: image_id.rfind("/")]
        info = folder_info.get(folder)
        if info is None:
            info = folder_info[folder] = _folder_class(folder, taxonomy, skipped_modalities)
        index, agreeing = info
        if index < 0:
            if index == _SKIPPED_MODALITY:
                skipped_modality += 1
            elif index == _WRONG_DEPTH:
                wrong_depth.append(image_id)
            else:
                unknown.append(folder)
            continue
        if labels is not None:
            label = labels[i]
            if label and label not in agreeing:
                disagree.append(f"{image_id} labelled {label}")
        kept_ids.append(image_id)
        kept_splits.append(splits[i])
        classes.append(index)
    report.skip("ultrasound (not part of the VQA dataset)", [], count=skipped_modality)
    report.skip("image not at MODALITY/anatomy/pathology/file", wrong_depth)
    report.skip("unknown class folder (not in the taxonomy)", sorted(set(unknown)), count=len(unknown))
    if disagree:
        report.warnings.append(
            f"{len(disagree)} CSV labels disagree with their folder (the folder is used), e.g. {disagree[0]}"
        )
        report.examples["label disagrees with folder (folder used)"] = disagree[:_EXAMPLES]
    return kept_ids, kept_splits, classes
