"""``radvqa validate`` and ``radvqa validate-distractors``: read every shard once, check every record.

Shards are streamed in chunks (hashed as they are read) and each line is parsed with orjson.
Memory does not grow with the dataset except for the id index: 8 bytes per record (the
16-hex image key of each id, one array per slot, sorted once at the end to find duplicates).
Per-record rules live in :mod:`radvqa.checks`; their outcome is a pure function of the
record minus its id and image, so it is cached on those bytes (bounded): most questions
repeat verbatim across images of a class.

Shards are independent, so they are checked as tasks of :mod:`radvqa.executors` (a process
pool or a Dask cluster); the benchmark is read first, here, so train/val shards can be checked
against its images.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .checks import (
    MC_SLOTS,
    RULES,
    SLOTS,
    VIOLATION,
    WARNING,
    Checker,
    Outcome,
    StatKey,
    evaluate,
)
from .config import MATCHED
from .errors import ConfigError, DatasetError
from .executors import Executor, ExecutorSpec, Job, run_tasks
from .generate import INSTRUCT_SLOTS
from .progress import NullProgress, ProgressBar
from .taxonomy import Taxonomy, load_taxonomy, taxonomy_from_dict

CONFIG_SLOTS = {"alignment": ("caption",), "instruct": INSTRUCT_SLOTS, "benchmark": INSTRUCT_SLOTS}
SHARD_GLOBS = {"alignment": "*.jsonl", "instruct": "*.jsonl", "benchmark": "test-*.jsonl"}
MAX_EXAMPLES = 20  # kept per rule and shard; the report keeps MAX_EXAMPLES per rule
_CHUNK = 1 << 20
_CACHE_LIMIT = 100_000
_PREFIX = re.compile(rb'\{"id":"([^"\\]*)","image":"([^"\\]*)",(?="split":)')
_ANY_ID = re.compile(rb'"id"\s*:\s*"([^"\\]*)"')
_HEX16 = re.compile(r"[0-9a-f]{16}")
_FAST = re.compile(rb'\{"id":"([0-9a-f]{16})-([a-z_]+)","image":"([^"\\]*)",(?="split":)')
_SLOT_OF = {slot.encode(): slot for slot in SLOTS}
_HITS_LIMIT = 10_000  # distinct outcomes counted before folding into the statistics


@dataclass(frozen=True)
class Finding:
    """One broken rule: where (sample id, shard file, line) and what (the offending text)."""

    rule: str
    severity: str
    detail: str
    id: str | None = None
    file: str | None = None
    line: int | None = None

    def text(self) -> str:
        """One report line."""
        where = self.file + (f":{self.line}" if self.line else "") if self.file else "-"
        return f"{self.severity:<9} {self.rule:<24} {self.id or '-'}  {where}  {self.detail}"


@dataclass(frozen=True)
class Shard:
    """A shard file found on disk."""

    path: str  # relative to the dataset folder, posix
    config: str
    split: str


@dataclass
class ShardResult:
    """Everything one pass over a shard produced."""

    shard: Shard
    records: int = 0
    bytes: int = 0
    sha256: str = ""
    stats: Counter[StatKey] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    examples: list[Finding] = field(default_factory=list)
    ids: dict[str, array[int]] = field(default_factory=dict)
    loose_ids: Counter[str] = field(default_factory=Counter)
    images: set[str] = field(default_factory=set)


@dataclass
class Report:
    """The result of a validation run."""

    out: Path
    command: str
    records: int = 0
    shards: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {VIOLATION: Counter(), WARNING: Counter()})
    examples: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no rule was violated (warnings allowed)."""
        return not self.counts[VIOLATION]

    def add(self, finding: Finding, count: int = 1) -> None:
        """Count a finding, keeping at most MAX_EXAMPLES examples per rule."""
        counts = self.counts[finding.severity]
        if counts[finding.rule] < MAX_EXAMPLES:
            self.examples.append(finding)
        counts[finding.rule] += count

    def lines(self, per_rule: int = 5) -> list[str]:
        """Human-readable report: example findings (violations first), then the summary."""
        out: list[str] = []
        for severity in (VIOLATION, WARNING):
            shown: Counter[str] = Counter()
            for finding in self.examples:
                if finding.severity == severity and shown[finding.rule] < per_rule:
                    shown[finding.rule] += 1
                    out.append(finding.text())
        for name, entry in sorted(self.stats.get("option_sets", {}).items()):
            worst = entry["largest_set_deviation"]
            line = f"option sets {name}: {entry['sets']} sets, unavoidable residual +{entry['unavoidable_residual']:.1f} points"
            if worst is not None:
                line += f"; largest deviation '{worst['option']}' right {worst['right_rate']:.1%} of {worst['questions']} (z {worst['z']:+.1f})"
            out.append(line)
        rate = self.records / self.seconds if self.seconds else 0.0
        out.append(
            f"checked {self.records:,} records in {self.shards} shards in {self.seconds:.1f} s ({rate:,.0f} records/s)"
        )
        for severity in (VIOLATION, WARNING):
            counts = self.counts[severity]
            summary = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()))
            out.append(f"{severity}s: {sum(counts.values())}" + (f" ({summary})" if summary else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "dataset": str(self.out),
            "command": self.command,
            "ok": self.ok,
            "records": self.records,
            "shards": self.shards,
            "seconds": round(self.seconds, 3),
            "violations": dict(sorted(self.counts[VIOLATION].items())),
            "warnings": dict(sorted(self.counts[WARNING].items())),
            "rules": {rule: RULES[rule] for rule in sorted(set(self.counts[VIOLATION]) | set(self.counts[WARNING]))},
            "examples": [{k: v for k, v in asdict(f).items() if v is not None} for f in self.examples],
            "stats": self.stats,
        }


@dataclass(frozen=True)
class Dataset:
    """A dataset folder opened for validation: its manifest and the taxonomy it was made with."""

    out: Path
    manifest: dict[str, Any]
    taxonomy: Taxonomy
    no_pathology_rate: float | str


def open_dataset(out: Path | str) -> Dataset:
    """Read ``OUT/manifest.json`` and the taxonomy it records; DatasetError when unreadable."""
    out = Path(out)
    if not out.is_dir():
        raise DatasetError(f"{out}: not a folder")
    path = out / "manifest.json"
    try:
        manifest = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc}); is {out} a radvqa dataset?")
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed JSON ({exc})")
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    recorded = manifest.get("taxonomy")
    try:
        if isinstance(recorded, dict) and isinstance(recorded.get("data"), dict):
            taxonomy = taxonomy_from_dict(recorded["data"], f"{path} (taxonomy)", str(recorded.get("sha256", "")))
        else:
            taxonomy = load_taxonomy()
    except ConfigError as exc:
        raise DatasetError(f"recorded taxonomy is invalid: {exc}")
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a hand-edited structure
        raise DatasetError(f"{path}: recorded taxonomy is malformed ({type(exc).__name__}: {exc})")
    config = manifest.get("config")
    rate = config.get("no_pathology_option_rate", MATCHED) if isinstance(config, dict) else MATCHED
    if rate != MATCHED and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
        raise DatasetError(
            f"{path}: config.no_pathology_option_rate must be '{MATCHED}' or a number in [0, 1], not {rate!r}"
        )
    return Dataset(out=out, manifest=manifest, taxonomy=taxonomy, no_pathology_rate=rate)


def find_shards(out: Path, configs: tuple[str, ...]) -> list[Shard]:
    """Shard files on disk, benchmark first (its images are needed to check train and val)."""
    shards = []
    for config in sorted(configs, key=lambda c: c != "benchmark"):
        for path in sorted((out / config).glob(SHARD_GLOBS[config])):
            shards.append(Shard(path.relative_to(out).as_posix(), config, path.name.split("-", 1)[0]))
    return shards


# -- one shard --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What a shard pass needs; sent once to each worker."""

    out: Path
    taxonomy: Taxonomy
    full: bool
    root: Path | None
    benchmark_images: frozenset[str]


class _Scanner:
    """Checks shards one line at a time, with a bounded cache of record outcomes."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.checker = Checker(context.taxonomy, context.full)
        self.cache: dict[bytes, Outcome] = {}

    def scan(self, shard: Shard) -> ShardResult:
        result = ShardResult(shard)
        result.ids = {slot: array("Q") for slot in CONFIG_SLOTS[shard.config]}
        context, checker, cache = self.context, self.checker, self.cache
        full, root, leaks = context.full, context.root, context.benchmark_images
        allowed = set(CONFIG_SLOTS[shard.config])
        is_benchmark = shard.config == "benchmark"
        stats = result.stats
        hits: dict[Outcome, int] = {}  # outcomes are hashed by identity: cached ones repeat
        last_image, image_ok = None, True

        def emit(rule: str, detail: str, sample: str | None, number: int) -> None:
            if result.rules[rule] < MAX_EXAMPLES:
                result.examples.append(Finding(rule, VIOLATION, detail, sample, shard.path, number))
            result.rules[rule] += 1

        # The fast path: a generator-shaped line whose outcome is cached and clean, and whose id,
        # slot, split and image pass; anything else takes the general path below, which reports.
        split_name, ids_of, slot_of = shard.split, result.ids, _SLOT_OF
        leaks_b = frozenset(i.encode() for i in leaks)
        root_b = os.fsencode(root) if root is not None else None
        last_b, fine_b = b"", False
        digest = hashlib.sha256()
        number = 0
        for line in chain.from_iterable(_chunks(context.out / shard.path, digest, result)):
            number += 1
            fast = _FAST.match(line)
            if fast is not None:
                tail = line[fast.end() :]
                outcome = cache.get(tail) or self._check_tail(tail)
                if (
                    outcome is not None
                    and not outcome.problems
                    and outcome.split == split_name
                    and outcome.slot in allowed
                    and slot_of.get(fast.group(2)) == outcome.slot
                ):
                    key_b, _, image_b = fast.groups()
                    if image_b != last_b:
                        last_b = image_b
                        fine_b = image_b not in leaks_b and (
                            root_b is None or os.path.isfile(os.path.join(root_b, image_b))
                        )
                    if fine_b:
                        hits[outcome] = hits.get(outcome, 0) + 1
                        if len(hits) > _HITS_LIMIT:
                            _fold(hits, stats)
                        if full:
                            ids_of[outcome.slot].append(int(key_b, 16))  # type: ignore[index]
                        if is_benchmark:
                            result.images.add(image_b.decode())
                        continue
            outcome = None
            match = _PREFIX.match(line)
            if match:
                tail = line[match.end() :]
                outcome = cache.get(tail)
                if outcome is None:
                    outcome = self._check_tail(tail)
                try:
                    sample: Any = match.group(1).decode()
                    image: Any = match.group(2).decode()
                except UnicodeDecodeError:
                    outcome = None
            if outcome is None:
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    found = _ANY_ID.search(line)
                    emit(
                        "bad_json",
                        f"{exc}" if line.strip() else "empty line",
                        found.group(1).decode(errors="replace") if found else None,
                        number,
                    )
                    continue
                if not isinstance(rec, dict):
                    emit("bad_json", "not a JSON object", None, number)
                    continue
                sample, image = rec.get("id"), rec.get("image")
                outcome = checker.check(rec)
                for name, value in (("id", sample), ("image", image)):
                    if name not in rec:
                        emit("missing_field", name, sample if isinstance(sample, str) else None, number)
                    elif not isinstance(value, str):
                        emit("bad_type", f"{name}: expected str, got {type(value).__name__}", None, number)
                if not isinstance(sample, str):
                    sample = None
                if not isinstance(image, str):
                    image = None
            for rule, detail in outcome.problems:
                emit(rule, detail, sample, number)
            hits[outcome] = hits.get(outcome, 0) + 1
            if len(hits) > _HITS_LIMIT:
                _fold(hits, stats)
            slot = outcome.slot
            if slot is not None and slot not in allowed:
                emit("config_mismatch", f"slot {slot} in {shard.config}/", sample, number)
            if outcome.split is not None and outcome.split != shard.split:
                emit("split_mismatch", f"split {outcome.split!r} in a {shard.split} shard", sample, number)
            if not full:
                continue
            if sample is not None:
                key, _, suffix = sample.partition("-")
                ids = result.ids.get(suffix)
                if slot is not None and suffix == slot and ids is not None and _HEX16.fullmatch(key):
                    ids.append(int(key, 16))
                else:
                    emit("bad_id", f"{sample!r}", sample, number)
                    result.loose_ids[sample] += 1
            if image is None:
                continue
            if root is not None:
                if image != last_image:
                    last_image, image_ok = image, os.path.isfile(os.path.join(root, image))
                if not image_ok:
                    emit("missing_image", image, sample, number)
            if is_benchmark:
                result.images.add(image)
            elif image in leaks:
                emit("benchmark_leak", image, sample, number)
        _fold(hits, stats)
        result.sha256 = digest.hexdigest()
        return result

    def _check_tail(self, tail: bytes) -> Outcome | None:
        """Check a record from the bytes after its id and image; None if they do not parse alone."""
        try:
            rec = orjson.loads(b"{" + tail)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(rec, dict) or "id" in rec or "image" in rec:
            return None
        outcome = self.checker.check(rec)
        # Multiple-choice records rarely repeat (their options are shuffled): not worth a slot.
        if outcome.slot not in MC_SLOTS and len(self.cache) < _CACHE_LIMIT:
            self.cache[tail] = outcome
        return outcome


def _fold(hits: dict[Outcome, int], stats: Counter[StatKey]) -> None:
    """Add counted outcomes' statistics keys to ``stats`` and empty ``hits``."""
    for outcome, n in hits.items():
        for key in outcome.stats:
            stats[key] += n
    hits.clear()


def _chunks(path: Path, digest: Any, result: ShardResult) -> Iterator[list[bytes]]:
    """Lines of a shard (without newlines) a chunk at a time, hashing and counting bytes and records."""
    try:
        with open(path, "rb") as handle:
            rest = b""
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                result.bytes += len(chunk)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                result.records += len(lines)
                yield lines
            if rest:
                result.records += 1
                yield [rest]
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})")


_SCANNER: list[tuple[_Context, _Scanner]] = []  # this worker's scanner, built once per context


def _scan(context: _Context, shard: Shard) -> ShardResult:
    """A worker's task: check one shard (the scanner and its outcome cache persist across shards)."""
    if not _SCANNER or _SCANNER[0][0] is not context:
        _SCANNER[:] = [(context, _Scanner(context))]
    return _SCANNER[0][1].scan(shard)


def _scan_all(
    shards: list[Shard], context: _Context, executor: Executor, bar: ProgressBar, sizes: dict[str, int]
) -> list[ShardResult]:
    job = Job(
        _scan,
        [(shard.path, shard) for shard in shards],
        context,
        weight=lambda shard, result: sizes.get(shard.path, result.records),
        unit="shards checked",
    )
    return run_tasks(executor, job, bar)


# -- the whole dataset ------------------------------------------------------------------------


def validate_distractors(
    out: Path | str,
    workers: int = 1,
    progress: Callable[[int, str], ProgressBar] | None = None,
    executor: ExecutorSpec | None = None,
) -> Report:
    """Check every multiple-choice and closed question of the instruct and benchmark shards."""
    spec = replace(executor or ExecutorSpec(), workers=workers)
    return _validate(Path(out), None, spec, progress, full=False)


def validate_dataset(
    out: Path | str,
    root: Path | str | None = None,
    workers: int = 1,
    progress: Callable[[int, str], ProgressBar] | None = None,
    executor: ExecutorSpec | None = None,
) -> Report:
    """Every check: records, text, ids, images (under ``root``), shards vs manifest, leaks, distractors."""
    spec = replace(executor or ExecutorSpec(), workers=workers)
    return _validate(Path(out), Path(root) if root is not None else None, spec, progress, full=True)


def _validate(
    out: Path, root: Path | None, spec: ExecutorSpec, progress: Callable[[int, str], ProgressBar] | None, full: bool
) -> Report:
    started = time.perf_counter()
    dataset = open_dataset(out)
    if root is not None and not root.is_dir():
        raise DatasetError(f"--root {root}: not a folder")
    configs = ("alignment", "instruct", "benchmark") if full else ("instruct", "benchmark")
    shards = find_shards(out, configs)
    if not shards:
        raise DatasetError(f"{out}: no shards under {', '.join(c + '/' for c in configs)}")
    listed = _listed_shards(dataset.manifest)
    sizes = {
        path: int(entry.get("records", 0)) for path, entry in listed.items() if isinstance(entry.get("records"), int)
    }
    report = Report(out=out, command="validate" if full else "validate-distractors", shards=len(shards))
    context = _Context(out, dataset.taxonomy, full, root, frozenset())
    bench = [s for s in shards if s.config == "benchmark"]
    rest = [s for s in shards if s.config != "benchmark"]
    total = sum(sizes.get(s.path, 0) for s in shards)
    bar = progress(total, "validate") if progress else NullProgress()
    spec.check()
    paths = (out,) if root is None else (out, root)
    with bar, Executor(spec if len(rest) > 1 else ExecutorSpec(), paths=paths) as pool:
        results = _scan_all(bench, context, Executor(), bar, sizes)  # here: later shards need its images
        images = frozenset(i for r in results for i in r.images)
        context = _Context(out, dataset.taxonomy, full, root, images)
        results += _scan_all(rest, context, pool, bar, sizes)
    _SCANNER.clear()  # in-process runs: do not keep the last dataset's cache alive
    stats: Counter[StatKey] = Counter()
    for result in results:
        report.records += result.records
        stats.update(result.stats)
        report.examples.extend(result.examples)
        report.counts[VIOLATION].update(result.rules)
    _trim_examples(report)
    if full:
        _check_ids(results, report)
        _check_manifest(dataset.manifest, listed, results, report)
    findings, report.stats = evaluate(stats, dataset.taxonomy, dataset.no_pathology_rate)
    for finding in findings:
        report.add(Finding(finding.rule, finding.severity, finding.detail))
    report.seconds = time.perf_counter() - started
    return report


def _trim_examples(report: Report) -> None:
    kept: Counter[str] = Counter()
    examples = []
    for finding in report.examples:
        if kept[finding.rule] < MAX_EXAMPLES:
            kept[finding.rule] += 1
            examples.append(finding)
    report.examples = examples


def _listed_shards(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return {}
    return {str(s.get("path")): s for s in shards if isinstance(s, dict)}


def _check_ids(results: list[ShardResult], report: Report) -> None:
    """Duplicate ids: sort each slot's keys once (8 bytes per record)."""
    for slot in SLOTS:
        parts = [np.frombuffer(r.ids[slot], dtype=np.uint64) for r in results if slot in r.ids and len(r.ids[slot])]
        if not parts:
            continue
        keys = np.sort(np.concatenate(parts))
        repeated = keys[1:][keys[1:] == keys[:-1]]
        for key in np.unique(repeated).tolist():
            copies = int(np.count_nonzero(repeated == key))
            report.add(Finding("duplicate_id", VIOLATION, f"appears {copies + 1} times", f"{key:016x}-{slot}"), copies)
    loose: Counter[str] = Counter()
    for result in results:
        loose.update(result.loose_ids)
    for sample, n in loose.items():
        if n > 1:
            report.add(Finding("duplicate_id", VIOLATION, f"appears {n} times", sample), n - 1)


def _check_manifest(
    manifest: dict[str, Any], listed: dict[str, dict[str, Any]], results: list[ShardResult], report: Report
) -> None:
    """Shard files against manifest.json: presence, sha256, record counts, records per config/split."""
    on_disk = {r.shard.path: r for r in results}
    for path, result in on_disk.items():
        entry = listed.get(path)
        if entry is None:
            report.add(Finding("unlisted_shard", VIOLATION, "not in manifest.json", file=path))
            continue
        if entry.get("sha256") != result.sha256:
            report.add(
                Finding(
                    "shard_checksum",
                    VIOLATION,
                    f"sha256 {result.sha256[:12]}..., manifest {str(entry.get('sha256'))[:12]}...",
                    file=path,
                )
            )
        if entry.get("records") != result.records:
            report.add(
                Finding(
                    "shard_records", VIOLATION, f"{result.records} records, manifest {entry.get('records')}", file=path
                )
            )
    for path in listed:
        if path not in on_disk and path.split("/")[0] in CONFIG_SLOTS:
            report.add(Finding("missing_shard", VIOLATION, "listed in manifest.json, not on disk", file=path))
    counted: Counter[tuple[str, str]] = Counter()
    for result in results:
        counted[(result.shard.config, result.shard.split)] += result.records
    expected: Counter[tuple[str, str]] = Counter()
    records = manifest.get("records")
    if isinstance(records, dict):
        for config, splits in records.items():
            if isinstance(splits, dict):
                for split, n in splits.items():
                    expected[(str(config), str(split))] = n if isinstance(n, int) else -1
    for key in sorted(set(counted) | set(expected)):
        if counted[key] != expected[key]:
            report.add(
                Finding(
                    "records_mismatch",
                    VIOLATION,
                    f"{key[0]} {key[1]}: {counted[key]} records, manifest {expected[key]}",
                )
            )
