"""A static, offline gallery of a generated dataset: ``radvqa browse``.

The gallery is one ``index.html`` with ``gallery.css`` and ``gallery.js`` (shipped under
``radvqa/data/browse/``), the JSON index wrapped as ``data.js`` (browsers refuse ``fetch()`` of
a local JSON file from ``file://``, but run a local script), small PNG thumbnails and the
dataset's charts. With ``single_file`` everything is inlined into ``index.html`` (images as
data URLs). The page makes no network request: there is no CDN, and its Content-Security-Policy
forbids connections.

Selection is a stratified sample: per split and class (modality + RadImageNet label), the
``per_class`` images whose id hash, XORed with a mask drawn from the seed, is smallest (a
bottom-k sample: it does not depend on shard order or size), or every benchmark image. Each
shard is read once, streaming: the caption shards (one line per image) choose the images, then
the question shards are scanned with one slice and one set lookup per line (the image key is
sliced from the ``{"id":"<16 hex>-`` prefix) and only the chosen images' lines are parsed. A
split without captions (the benchmark) is chosen from its question shards, parsing only the
first line of each image. Memory holds the candidates only.

A gallery records the files it wrote in ``radvqa-gallery.json`` (written first, completed
last): ``--overwrite`` removes exactly those, and a non-empty folder without that record is
refused: the shared output-ownership rule of :mod:`radvqa.ownership`.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import io
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import orjson

from .dataset_files import SPLIT_ORDER, Part, dataset_parts, load_manifest, order_key
from .errors import ConfigError, DatasetError, OutputError, SourceError, did_you_mean
from .export import question_stem
from .ownership import check_output, claim_output, read_record
from .progress import NullProgress, ProgressBar
from .streams import mix
from .writers import write_bytes_atomic

RECORD_FILE = "radvqa-gallery.json"  # what a gallery wrote; --overwrite removes exactly these files
ASSETS = ("index.html", "gallery.css", "gallery.js")
DATA_FILE = "data.js"
DATA_PREFIX = b"window.RADVQA_GALLERY = "
THUMB_SIZE = 160
THUMBS, CHARTS = "thumbs", "charts"
_ID_PREFIX = b'{"id":"'
_MASK64 = (1 << 64) - 1
_PURPOSE = 0xB5  # keeps the gallery's order apart from generate's streams of the same seed
_KEY_END = len(_ID_PREFIX) + 16

Record = dict[str, Any]
Stratum = tuple[str, str, str]  # split, modality, label


@dataclass
class GalleryResult:
    """What a gallery build wrote and read."""

    dest: Path
    images: int = 0
    questions: int = 0
    classes: int = 0
    splits: tuple[str, ...] = ()
    shards_read: int = 0
    lines_read: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary (the build time included)."""
        return [
            f"read {self.shards_read} shards ({self.lines_read:,} records), each once",
            f"wrote a gallery of {self.images:,} images ({self.questions:,} questions, {self.classes} classes, "
            f"splits {', '.join(self.splits)}) in {self.dest}: {self.files} files, {self.bytes / 1e6:.1f} MB, "
            f"in {self.seconds:.1f} s",
            f"open {self.dest / 'index.html'} in a browser (works offline, from file://)",
        ]


# ---------------------------------------------------------------- selection


def _seed_mask(seed: int) -> int:
    """The bits each image's id hash is XORed with: SplitMix64 of the seed (radvqa.streams)."""
    return int(mix(np.array([(seed * 0x10001 + _PURPOSE) & _MASK64], dtype=np.uint64))[0])


def _priority(key: bytes, mask: int) -> int:
    """The order of an image within its stratum (smallest first): its 64-bit id hash XOR the seed's mask.

    The id is already a hash of the image path, so this is a uniform, seeded order that costs
    one int() per image; an id that is not hex is hashed first.
    """
    try:
        return int(key, 16) ^ mask
    except ValueError:
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") ^ mask


class _Picker:
    """Bottom-k per stratum over a stream of images, holding the raw lines of current candidates."""

    def __init__(self, per_class: int | None, seed: int) -> None:
        self.per_class = per_class
        self.mask = _seed_mask(seed)
        self.heaps: dict[Stratum, list[tuple[int, bytes]]] = defaultdict(list)
        self.lines: dict[bytes, list[tuple[bytes, Path, int]]] = {}

    def offer(self, stratum: Stratum, key: bytes) -> list[tuple[bytes, Path, int]] | None:
        """The line list of a new candidate image (evicting the stratum's largest hash if full), or None."""
        if self.per_class is not None:
            heap = self.heaps[stratum]
            priority = -_priority(key, self.mask)  # max-heap on the hash
            if len(heap) < self.per_class:
                heapq.heappush(heap, (priority, key))
            elif priority > heap[0][0]:
                _, evicted = heapq.heapreplace(heap, (priority, key))
                del self.lines[evicted]
            else:
                return None
        lines: list[tuple[bytes, Path, int]] = []
        self.lines[key] = lines
        return lines


def _loads(line: bytes, path: Path, row: int) -> Record:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise DatasetError(f"{path}:{row}: not a JSON record ({error})") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{path}:{row}: not a JSON object")
    return record


def _field(record: Record, name: str, path: Path, row: int) -> Any:
    if name not in record:
        raise DatasetError(f"{path}:{row}: record {record.get('id', '?')} has no '{name}' field")
    return record[name]


def _image_key(line: bytes, path: Path, row: int) -> bytes:
    """The 16-hex image part of the record id; sliced from the line when it starts with the id."""
    if line.startswith(_ID_PREFIX) and line[_KEY_END : _KEY_END + 1] == b"-":
        return line[len(_ID_PREFIX) : _KEY_END]
    record_id = str(_field(_loads(line, path, row), "id", path, row))
    return record_id.partition("-")[0].encode()


def _stratum(record: Record, path: Path, row: int) -> Stratum:
    """(split, modality, label) of a record; a missing field raises DatasetError naming the line."""
    values = tuple(_field(record, name, path, row) for name in ("split", "modality", "label"))
    if not all(isinstance(value, str) for value in values):
        raise DatasetError(f"{path}:{row}: split, modality and label must be strings")
    return (values[0], values[1], values[2])


class _Strata:
    """Benchmark counts: images per stratum, correct letters per multiple-choice slot, yes/no per closed slot."""

    def __init__(self) -> None:
        self.images: dict[tuple[str, str, str, bool], set[str]] = defaultdict(set)
        self.letters: dict[str, Counter[str]] = defaultdict(Counter)
        self.yes_no: dict[str, Counter[str]] = defaultdict(Counter)
        self.questions = 0

    def add(self, record: Record) -> None:
        """Count one benchmark record."""
        self.questions += 1
        stratum = (
            str(record.get("modality", "")),
            str(record.get("region", "")),
            str(record.get("pathology", "")),
            bool(record.get("is_abnormal")),
        )
        self.images[stratum].add(str(record.get("image", "")))
        kind, slot = record.get("question_type"), str(record.get("slot", ""))
        if kind == "multiple_choice":
            self.letters[slot][str(record.get("answer", ""))] += 1
        elif kind == "closed":
            self.yes_no[slot][str(record.get("answer", ""))] += 1

    def to_dict(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The strata view's data."""
        rows = [
            {"modality": m, "region": r, "pathology": p, "abnormal": a, "images": len(images)}
            for (m, r, p, a), images in sorted(self.images.items(), key=lambda item: item[0][:3])
        ]
        info = manifest.get("benchmark")
        rule = info.get("rule", "") if isinstance(info, dict) else ""
        return {
            "images": len(set().union(*self.images.values())) if self.images else 0,
            "questions": self.questions,
            "strata": rows,
            "letters": {slot: dict(sorted(c.items())) for slot, c in sorted(self.letters.items())},
            "yes_no": {slot: dict(sorted(c.items())) for slot, c in sorted(self.yes_no.items())},
            "rule": str(rule),
        }


@dataclass
class _Scan:
    """Counts over the shards read, shared by every pass."""

    bar: ProgressBar
    shards: int = 0
    lines: int = 0

    def done(self, lines: int) -> None:
        """One shard read to its end."""
        self.shards += 1
        self.lines += lines
        self.bar.update(lines)


def _scan_select(parts: Iterable[Part], picker: _Picker | None, scan: _Scan, strata: _Strata) -> None:
    """Stream shards once, offering each new image to the picker; every benchmark record is counted.

    The hot loop slices and compares the key of each line: consecutive lines of one image share
    their key, and only an image's first line is parsed (for its class).
    """
    prefix, start, end = _ID_PREFIX, len(_ID_PREFIX), _KEY_END
    loads, json_error = orjson.loads, orjson.JSONDecodeError
    for part in parts:
        benchmark = part.config == "benchmark"
        for path in part.files:
            current, target, row = b"", None, 0
            with open(path, "rb") as handle:
                for row, line in enumerate(handle, 1):
                    record = None
                    if benchmark:
                        if not line.strip():
                            continue
                        record = _loads(line, path, row)
                        strata.add(record)
                    if picker is None:
                        continue
                    key = line[start:end]
                    well_formed = line[end : end + 1] == b"-" and line.startswith(prefix)
                    if key == current and well_formed:
                        if target is not None:
                            target.append((line, path, row))
                        continue
                    if not well_formed:
                        if not line.strip():
                            continue
                        key = _image_key(line, path, row)
                    current = key
                    target = picker.lines.get(key)
                    if target is None:
                        try:
                            record = record or loads(line)
                            stratum = (record["split"], record["modality"], record["label"])
                            hash(stratum)  # a list value would break the heaps: report it instead
                        except (json_error, KeyError, TypeError):
                            stratum = _stratum(_loads(line, path, row), path, row)  # raises, naming file:row
                        target = picker.offer(stratum, key)
                    if target is not None:
                        target.append((line, path, row))
            scan.done(row)


def _scan_keys(parts: Iterable[Part], wanted: set[bytes], scan: _Scan, strata: _Strata) -> dict[bytes, list[Record]]:
    """Stream shards once and parse only the records of ``wanted`` images.

    Per line: one slice, one set lookup and one prefix test (measured faster than cutting keys
    out of whole blocks with numpy or a regular expression).
    """
    found: dict[bytes, list[Record]] = defaultdict(list)
    prefix, start, end = _ID_PREFIX, len(_ID_PREFIX), _KEY_END
    for part in parts:
        benchmark = part.config == "benchmark"  # never the case in generate's layout; kept exact anyway
        for path in part.files:
            row = 0
            with open(path, "rb") as handle:
                for row, line in enumerate(handle, 1):
                    if benchmark and line.strip():
                        strata.add(_loads(line, path, row))
                    well_formed = line.startswith(prefix) and line[end : end + 1] == b"-"
                    if well_formed:
                        if line[start:end] in wanted:
                            found[line[start:end]].append(_loads(line, path, row))
                    elif line.strip() and (key := _image_key(line, path, row)) in wanted:
                        found[key].append(_loads(line, path, row))
            scan.done(row)
    return found


# ---------------------------------------------------------------- cards


def _question(record: Record) -> dict[str, Any]:
    return {
        "slot": record.get("slot", ""),
        "task": record.get("task", ""),
        "type": record.get("question_type", ""),
        "q": question_stem(record) if record.get("choices") else record.get("question", ""),
        "choices": list(record.get("choices") or []),
        "answer": record.get("answer", ""),
        "answer_text": record.get("answer_text", record.get("answer", "")),
        "tid": record.get("template_id", ""),
    }


def _card(key: bytes, records: list[Record]) -> dict[str, Any]:
    """One image's card: its class, caption and questions (in file order)."""
    first = records[0]
    questions = [_question(r) for r in records if r.get("question_type") != "caption"]
    caption = next((r for r in records if r.get("question_type") == "caption"), None)
    return {
        "key": key.decode(),
        "image": first.get("image", ""),
        "split": first.get("split", ""),
        "modality": first.get("modality", ""),
        "region": first.get("region", ""),
        "pathology": first.get("pathology", ""),
        "label": first.get("label", ""),
        "abnormal": bool(first.get("is_abnormal")),
        "caption": caption.get("answer", "") if caption else "",
        "caption_prompt": caption.get("question", "") if caption else "",
        "caption_tid": caption.get("template_id", "") if caption else "",
        "questions": questions,
        "thumb": None,
    }


def _thumbnail(path: Path) -> bytes:
    """A PNG at most THUMB_SIZE pixels on a side (grey images stay grey); raises OSError when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            grey = image.mode in ("1", "L", "LA", "I", "I;16", "F")
            small = image.convert("L" if grey else "RGB")
    except (UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise OSError(str(error)) from None
    small.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- output folder


def _owned(dest: Path) -> list[str] | None:
    """The files a previous gallery in ``dest`` recorded (its record too), or None when it holds no gallery."""
    files = read_record(dest / RECORD_FILE)
    return None if files is None else [*files, RECORD_FILE]


def _record(dest: Path, files: list[str], complete: bool) -> None:
    """The gallery's own record of what it writes, written first (so an interrupted build can be replaced)."""
    data = {"format": "radvqa-gallery", "complete": complete, "files": sorted(files)}
    write_bytes_atomic(dest / RECORD_FILE, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def _asset(name: str) -> bytes:
    return (resources.files("radvqa") / "data" / "browse" / name).read_bytes()


def _script_json(data: Any) -> bytes:
    """JSON safe inside a <script> element: '<' is escaped, so no '</script>' can end it early."""
    return orjson.dumps(data).replace(b"<", b"\\u003c")


def _single_file(index: bytes, payload: bytes) -> bytes:
    """index.html with the CSS, the data and the script inlined."""
    css, js = _asset("gallery.css"), _asset("gallery.js")
    replacements = {
        b'<link rel="stylesheet" href="gallery.css">': b"<style>\n" + css + b"</style>",
        b'<script src="data.js"></script>': b"<script>" + payload + b"</script>",
        b'<script src="gallery.js"></script>': b"<script>\n" + js.replace(b"</", b"<\\/") + b"</script>",
    }
    for tag, inline in replacements.items():
        if tag not in index:
            raise AssertionError(f"index.html lacks {tag!r}")  # a packaging bug, not a user mistake
        index = index.replace(tag, inline)
    return index


# ---------------------------------------------------------------- entry point


def _splits_wanted(parts: list[Part], splits: tuple[str, ...] | None, benchmark: bool, out: Path) -> tuple[str, ...]:
    available = tuple(sorted({p.split for p in parts}, key=lambda s: order_key(s, SPLIT_ORDER)))
    wanted = list(splits or available)
    if benchmark and "test" not in wanted:
        wanted.append("test")
    for split in wanted:
        if split not in available:
            known = ", ".join(available) or "none"
            raise ConfigError(f"--split {split}: {out} has no such split{did_you_mean(split, available)} (it has {known})")
    if benchmark and not any(p.config == "benchmark" for p in parts):
        raise DatasetError(f"{out}: no benchmark (benchmark/test-*.jsonl) for --benchmark")
    return tuple(dict.fromkeys(wanted))


def _read(
    out: Path, parts: list[Part], wanted: tuple[str, ...], per_class: int, benchmark: bool, seed: int,
    progress: Callable[[int, str], ProgressBar] | None, result: GalleryResult,
) -> tuple[list[dict[str, Any]], _Strata]:
    """The cards of the sample and the benchmark counts, reading every shard at most once."""
    total = sum(p.expected or 0 for p in parts if p.split in wanted or p.config == "benchmark")
    strata = _Strata()
    cards: list[dict[str, Any]] = []
    with progress(total, "browse: read") if progress else NullProgress() as bar:
        scan = _Scan(bar)
        for split in wanted:
            # select on the captions (one line per image) when the split has them, then pick the
            # chosen images' questions out of the other configs by key
            captions = [p for p in parts if p.split == split and p.config == "alignment"]
            questions = [p for p in parts if p.split == split and p.config != "alignment"]
            select, rest = (captions, questions) if captions else (questions, [])
            picker = _Picker(None if benchmark and split == "test" else per_class, seed)
            _scan_select(select, picker, scan, strata)
            others = _scan_keys(rest, set(picker.lines), scan, strata)
            for key in sorted(picker.lines):
                records = [_loads(line, path, row) for line, path, row in picker.lines[key]]
                cards.append(_card(key, records + others.get(key, [])))
        # the strata view counts the whole benchmark, even when no benchmark card is wanted
        _scan_select([p for p in parts if p.config == "benchmark" and p.split not in wanted], None, scan, strata)
    result.shards_read, result.lines_read = scan.shards, scan.lines
    cards.sort(key=lambda c: (order_key(c["split"], SPLIT_ORDER), c["modality"], c["region"], c["pathology"], c["key"]))
    return cards, strata


def _write_images(
    cards: list[dict[str, Any]], root: Path, dest: Path, single_file: bool,
    progress: Callable[[int, str], ProgressBar] | None, result: GalleryResult,
) -> list[str]:
    """Thumbnail every card's image (a file, or a data URL); return the files written."""
    written, missing = [], []
    with progress(len(cards), "browse: thumbnails") if progress else NullProgress() as bar:
        for card in cards:
            relative = PurePosixPath(str(card["image"]))
            try:
                if relative.is_absolute() or ".." in relative.parts:  # stay inside the copy
                    raise OSError("not a path inside the RadImageNet copy")
                data = _thumbnail(root / relative)
            except OSError:
                missing.append(card["image"])
            else:
                if single_file:
                    card["thumb"] = _data_url(data)
                else:
                    card["thumb"] = f"{THUMBS}/{card['key']}.png"
                    write_bytes_atomic(dest / card["thumb"], data)
                    written.append(card["thumb"])
            bar.update(1)
    if missing:
        result.warnings.append(
            f"{len(missing)} of {len(cards)} images could not be read under {root} (cards show no image), "
            f"e.g. {missing[0]}"
        )
    return written


def _write_charts(charts: list[Path], dest: Path, single_file: bool) -> list[dict[str, str]]:
    """The dataset's stats charts, copied beside the page or inlined."""
    listed = []
    for path in charts:
        data = path.read_bytes()
        if single_file:
            listed.append({"name": path.stem, "src": _data_url(data)})
        else:
            write_bytes_atomic(dest / CHARTS / path.name, data)
            listed.append({"name": path.stem, "src": f"{CHARTS}/{path.name}"})
    return listed


def build_gallery(
    out: Path,
    dest: Path,
    root: Path | None = None,
    per_class: int = 4,
    splits: tuple[str, ...] | None = None,
    benchmark: bool = False,
    single_file: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    progress: Callable[[int, str], ProgressBar] | None = None,
) -> GalleryResult:
    """Write a static offline gallery of a stratified sample of the dataset at ``out`` into ``dest``."""
    started = time.perf_counter()
    out, dest = Path(out), Path(dest)
    if per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, not {per_class}")
    manifest = load_manifest(out)
    parts = dataset_parts(out, manifest)
    wanted = _splits_wanted(parts, splits, benchmark, out)
    root = Path(root) if root is not None else Path(str(manifest.get("source", {}).get("root", "")))
    if not str(root) or not root.is_dir():
        raise SourceError(f"{root}: RadImageNet copy not found", hint="pass --root with the folder holding radiology_ai/")
    if dest.resolve() == out.resolve():
        raise OutputError(f"{dest}: is the dataset itself; write the gallery into another folder")
    check_output(dest, overwrite, _owned, "gallery", record="gallery")  # before any work

    result = GalleryResult(dest=dest, splits=wanted)
    cards, strata = _read(out, parts, wanted, per_class, benchmark, seed, progress, result)
    charts = sorted((out / "stats").glob("*.png"))
    pages = ["index.html"] if single_file else [*ASSETS, DATA_FILE]
    images = [] if single_file else [f"{THUMBS}/{c['key']}.png" for c in cards]
    images += [] if single_file else [f"{CHARTS}/{p.name}" for p in charts]
    claim_output(dest, overwrite, _owned, "gallery", record="gallery")
    for folder in () if single_file else (THUMBS, CHARTS) if charts else (THUMBS,):
        (dest / folder).mkdir(exist_ok=True)
    _record(dest, pages + images, complete=False)  # first: an interrupted build can still be replaced

    written = _write_images(cards, root, dest, single_file, progress, result)
    chart_list = _write_charts(charts, dest, single_file)
    written += [] if single_file else [f"{CHARTS}/{p.name}" for p in charts]
    index = {
        "format": "radvqa-gallery",
        "format_version": 1,
        "dataset": out.resolve().name,
        "radvqa_version": manifest.get("environment", {}).get("radvqa", ""),
        "seed": seed,
        "per_class": per_class,
        "benchmark_all": benchmark,
        "splits": list(wanted),
        "images": cards,
        "strata": strata.to_dict(manifest) if strata.questions else None,
        "charts": chart_list,
    }
    payload = DATA_PREFIX + _script_json(index) + b";\n"
    if single_file:
        html = _single_file(_asset("index.html"), payload)
    else:
        html = _asset("index.html")
        write_bytes_atomic(dest / DATA_FILE, payload)
        for name in ("gallery.css", "gallery.js"):
            write_bytes_atomic(dest / name, _asset(name))
    write_bytes_atomic(dest / "index.html", html)
    files = pages + written
    _record(dest, files, complete=True)

    result.images = len(cards)
    result.questions = sum(len(c["questions"]) for c in cards)
    result.classes = len({(c["modality"], c["label"]) for c in cards})
    result.files = len(files) + 1
    result.bytes = sum((dest / name).stat().st_size for name in [*files, RECORD_FILE])
    result.seconds = time.perf_counter() - started
    return result
