"""The text-only shortcut audit: can a model that never sees the image beat the unavoidable prior?

Text-only attackers (:mod:`radvqa.attacks`) learn from the instruct train split and answer the
benchmark and the instruct val split, each question alone, with the same scorer as ``radvqa
evaluate``. Each is compared with the no-information baseline of its slot on that split:

* multiple choice: 1/4 plus the exact residual the split's class shares force on any sampler
  (0 on the benchmark, whose caps make every option set exactly exchangeable);
* closed questions of a task, yes and no slots pooled: 1/2 plus the same kind of residual;
* open questions and the abnormality question: the best constant answer learned from train,
  per region when the question names the region.

A slot fails when an attacker beats its baseline by more than ``max_gain`` points (3 on the
benchmark, 2 on val by default) AND by at least ``Z`` standard errors. Standard errors and
95% intervals are clustered by image (the two closed questions of an image are not
independent). A separate section reports what the questions of one image give away about each
other; evaluators ask them one per context, so it is not a failure.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .attacks import MC_ATTACKS, OPEN_ATTACKS, Context, _sklearn, constant_by_region, cross_question, image_of
from .distractors import pool_residual
from .errors import EvaluateError
from .evaluate import LETTERS, AnswerKey, answer_key, dataset_taxonomy, read_jsonl, score
from .progress import NullProgress, ProgressBar
from .taxonomy import Taxonomy

AUDIT_SLOTS: dict[str, tuple[str, ...]] = {
    "anatomy_open": ("anatomy_open",),
    "anatomy_closed": ("anatomy_closed_yes", "anatomy_closed_no"),
    "anatomy_mc": ("anatomy_mc",),
    "abnormality_closed": ("abnormality_closed",),
    "pathology_open": ("pathology_open",),
    "pathology_closed": ("pathology_closed_yes", "pathology_closed_no"),
    "pathology_mc": ("pathology_mc",),
}
Z = 3.0  # standard errors a gain must clear before it can fail the audit
DEFAULT_MAX_GAIN = {"benchmark": 3.0, "val": 2.0}
DEFAULT_MAX_TRAIN = 50_000  # train questions per audit slot (a hash-chosen subset beyond that)
_KEEP = ("id", "slot", "task", "question_type", "question", "choices", "answer", "region", "modality")
_SLOT_GROUP = {slot: group for group, slots in AUDIT_SLOTS.items() for slot in slots}


def is_available() -> bool:
    """Whether scikit-learn (the ``audit`` extra) is installed."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


# --- data ---------------------------------------------------------------------------------


@dataclass
class Split:
    """Audit-slot groups of slimmed records from one split."""

    source: str
    files: list[str]
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {g: [] for g in AUDIT_SLOTS})

    @property
    def size(self) -> int:
        """Questions kept."""
        return sum(len(v) for v in self.groups.values())


def _records(files: list[Path], bar: ProgressBar) -> Iterator[dict[str, Any]]:
    unreported = 0
    for path in files:
        for number, record in read_jsonl(path):
            unreported += 1
            if unreported == 10_000:  # a bar update per record would cost seconds on a full dataset
                bar.update(unreported)
                unreported = 0
            missing = [k for k in _KEEP if k not in record]
            if missing:
                raise EvaluateError(f"{path}:{number}: missing field '{missing[0]}'")
            if record["question_type"] == "multiple_choice" and (
                record["answer"] not in LETTERS[: len(record["choices"])] or len(record["choices"]) < 2
            ):
                raise EvaluateError(f"{path}:{number}: multiple-choice answer must be a letter of one of its choices")
            yield record
    bar.update(unreported)


def _train_rates(dataset: Path, max_train: int) -> dict[str, float]:
    """Share of each audit slot's train questions to keep, from the manifest's counts."""
    rates = {g: 1.0 for g in AUDIT_SLOTS}
    try:
        manifest = orjson.loads((dataset / "manifest.json").read_bytes())
        counts = manifest["slots"]["train"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return rates
    for group, slots in AUDIT_SLOTS.items():
        total = sum(int(counts.get(s, 0)) for s in slots)
        if total > max_train:
            rates[group] = max_train / total
    return rates


def load_split(
    files: list[Path], source: str, rates: dict[str, float] | None = None, bar: ProgressBar | None = None
) -> Split:
    """Read the nine-slot records of ``files`` into audit groups, sampling by id hash at ``rates``."""
    split = Split(source=source, files=[str(f) for f in files])
    for record in _records(files, bar or NullProgress()):
        group = _SLOT_GROUP.get(record["slot"])
        if group is None:
            continue
        if rates and rates[group] < 1.0 and zlib.crc32(record["id"].encode()) / 2**32 >= rates[group]:
            continue
        split.groups[group].append({k: record[k] for k in _KEEP})
    return split


def _manifest_records(dataset: Path, parts: list[tuple[str, str]]) -> int | None:
    """Records of these (config, split) parts by the manifest, for a progress total; None if unknown."""
    try:
        records = orjson.loads((dataset / "manifest.json").read_bytes())["records"]
        return sum(int(records[config][split]) for config, split in parts)
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def dataset_splits(
    dataset: Path, max_train: int = DEFAULT_MAX_TRAIN, progress: Callable[[int | None, str], ProgressBar] | None = None
) -> tuple[Split, list[Split]]:
    """Instruct train, and the splits to score on: the benchmark and the instruct val split (those present)."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise EvaluateError(f"{dataset}: not a dataset folder")
    train_files = sorted(dataset.glob("instruct/train-*.jsonl"))
    if not train_files:
        raise EvaluateError(f"{dataset}: no instruct/train-*.jsonl", hint="pass a folder made by `radvqa generate`")
    sources = [
        (source, part, files)
        for source, part, files in (
            ("benchmark", ("benchmark", "test"), sorted(dataset.glob("benchmark/test-*.jsonl"))),
            ("val", ("instruct", "val"), sorted(dataset.glob("instruct/val-*.jsonl"))),
        )
        if files
    ]
    if not sources:
        raise EvaluateError(f"{dataset}: neither benchmark/test-*.jsonl nor instruct/val-*.jsonl to score on")
    total = _manifest_records(dataset, [("instruct", "train")] + [part for _, part, _ in sources])
    with progress(total, "audit: read") if progress else NullProgress() as bar:
        train = load_split(train_files, "instruct train", _train_rates(dataset, max_train), bar)
        evaluations = [load_split(files, source, bar=bar) for source, _, files in sources]
    for group, records in train.groups.items():
        if not records:
            raise EvaluateError(f"{dataset}: no train questions for slot '{group}'")
    return train, evaluations


# --- baselines --------------------------------------------------------------------------------


def unavoidable_gain(records: list[dict[str, Any]], context: Context, k: int) -> float:
    """Points above 1/k that the split's own class shares let any text-only reader reach.

    Computed exactly from the answers' counts per name pool, as the best sampler would leave it
    (``radvqa.distractors``): a name above 1/k of its pool is right at its share wherever it
    is offered. 0 where every pool can be exactly exchangeable, as on the benchmark.
    """
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        if record["question_type"] == "multiple_choice":
            seen = counts.setdefault(context.pool(record), Counter())
            seen[record["choices"][LETTERS.index(record["answer"])]] += 1
    pools = context.pools if k > 2 else context.taxonomy.option_pools(contained=False)
    return 100.0 * pool_residual(counts, pools, k)


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelResult:
    """One text-only attacker on one audit slot: accuracy, gain over baseline, clustered SE and 95% interval."""

    accuracy: float
    gain: float
    se: float
    z: float
    flagged: bool
    low: float = 0.0
    high: float = 0.0


@dataclass
class SlotAudit:
    """Baseline and text-only attackers for one audit slot."""

    slot: str
    questions: int
    baseline: float
    baseline_rule: str
    models: dict[str, ModelResult] = field(default_factory=dict)

    @property
    def worst(self) -> tuple[str, ModelResult] | None:
        """The attacker with the largest gain."""
        return max(self.models.items(), key=lambda kv: kv[1].gain) if self.models else None

    @property
    def passed(self) -> bool:
        """No attacker is flagged."""
        return not any(m.flagged for m in self.models.values())


@dataclass
class Evaluation:
    """The audit of one evaluated split."""

    source: str
    questions: int
    max_gain: float
    slots: list[SlotAudit] = field(default_factory=list)
    cross: dict[str, ModelResult] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every slot within max_gain of its baseline (or the excess not significant)."""
        return all(s.passed for s in self.slots)


@dataclass
class AuditReport:
    """Everything ``radvqa audit`` prints and writes."""

    dataset: str
    train_source: str
    train_questions: int
    z: float
    evaluations: list[Evaluation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every evaluated split passed."""
        return all(e.passed for e in self.evaluations)

    @property
    def slots(self) -> list[SlotAudit]:
        """The slots of the first evaluated split (the benchmark when there is one)."""
        return self.evaluations[0].slots if self.evaluations else []

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""

        def model(m: ModelResult) -> dict[str, Any]:
            return {
                "accuracy": round(m.accuracy, 2), "gain": round(m.gain, 2), "se": round(m.se, 2),
                "ci95": [round(m.low, 2), round(m.high, 2)], "z": round(m.z, 2), "flagged": m.flagged,
            }

        evaluations = {
            e.source: {
                "questions": e.questions,
                "max_gain": e.max_gain,
                "passed": e.passed,
                "slots": {
                    s.slot: {
                        "questions": s.questions,
                        "baseline": round(s.baseline, 2),
                        "baseline_rule": s.baseline_rule,
                        "passed": s.passed,
                        "models": {name: model(m) for name, m in s.models.items()},
                    }
                    for s in e.slots
                },
                "cross_question": {slot: model(m) for slot, m in e.cross.items()},
            }
            for e in self.evaluations
        }
        first = self.evaluations[0] if self.evaluations else None
        return {
            "dataset": self.dataset,
            "train": {"source": self.train_source, "questions": self.train_questions},
            "eval": {"source": first.source if first else "", "questions": first.questions if first else 0},
            "max_gain": first.max_gain if first else 0.0,
            "z": self.z,
            "passed": self.passed,
            "slots": evaluations[first.source]["slots"] if first else {},
            "evaluations": evaluations,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """Readable tables: per evaluated split, the baseline and the strongest attackers per slot."""
        out = [f"text-only audit of {self.dataset}", f"attackers learn from {self.train_source} ({self.train_questions} questions)"]
        for e in self.evaluations:
            out += ["", f"scored on {e.source} ({e.questions} questions), one question at a time"]
            head = f"{'slot':<19} {'n':>6} {'baseline':>8}  {'strongest attacker':<16} {'acc':>6} {'gain':>6}  {'95% CI':<15} verdict"
            out += [head, "-" * len(head)]
            for s in e.slots:
                worst = s.worst
                if worst is None:
                    continue
                name, m = worst
                out.append(
                    f"{s.slot:<19} {s.questions:>6} {s.baseline:>8.1f}  {name:<16} {m.accuracy:>6.1f} {m.gain:>+6.1f}  "
                    f"[{m.low:+.1f}, {m.high:+.1f}]".ljust(len(head) - 8) + ("  ok" if s.passed else "  SHORTCUT")
                )
            for s in e.slots:
                for name, m in s.models.items():
                    if m.flagged:
                        out.append(
                            f"SHORTCUT {e.source} {s.slot}: {name} scores {m.accuracy:.1f} vs baseline {s.baseline:.1f} "
                            f"({m.gain:+.1f} points, z = {m.z:.1f})"
                        )
            if e.cross:
                out.append(
                    "questions of one image together (not a failure: ask them one per context): "
                    + ", ".join(f"{slot} {m.accuracy:.1f} ({m.gain:+.1f})" for slot, m in e.cross.items())
                )
            else:
                out.append("questions of one image together: no image has two questions (per-slot layout)")
        out.append("")
        out.append(
            "a slot fails when a text-only attacker beats its baseline by more than the split's max gain "
            f"({', '.join(f'{e.source} {e.max_gain:g}' for e in self.evaluations)} points) and by at least "
            f"{self.z:g} standard errors, clustered by image"
        )
        out.extend(self.notes)
        out.append("PASSED: no text-only shortcut" if self.passed else "FAILED: text-only shortcuts found")
        return out


# --- running it -------------------------------------------------------------------------------


def _accuracy(records: list[dict[str, Any]], predictions: list[str], key: AnswerKey) -> np.ndarray:
    return np.array([score(r, p, key).correct for r, p in zip(records, predictions)], dtype=bool)


def clustered_se(values: np.ndarray, clusters: list[str]) -> float:
    """Standard error of the mean of ``values`` with observations of one cluster (image) correlated."""
    n = len(values)
    if n < 2:
        return 0.0
    centred = values - values.mean()
    sums: dict[str, float] = {}
    for c, v in zip(clusters, centred.tolist()):
        sums[c] = sums.get(c, 0.0) + v
    groups = len(sums)
    correction = groups / (groups - 1) if groups > 1 else 1.0
    return float(math.sqrt(correction * sum(v * v for v in sums.values())) / n)


def _compare(
    correct: np.ndarray, baseline_correct: np.ndarray | None, baseline: float, max_gain: float, z: float,
    clusters: list[str] | None = None,
) -> ModelResult:
    n = len(correct)
    accuracy = 100.0 * float(correct.mean()) if n else 0.0
    gain = accuracy - baseline
    groups = clusters if clusters is not None else [str(i) for i in range(n)]
    if baseline_correct is None:
        # Under no shortcut each answer is right with the baseline probability; the observed
        # spread (clustered) is used when it is larger, so correlated questions do not pass as noise.
        p0 = baseline / 100.0
        null = 100.0 * math.sqrt(p0 * (1.0 - p0) / n) if n else 0.0
        se = max(null, 100.0 * clustered_se(correct.astype(np.float64), groups))
    else:
        se = 100.0 * clustered_se(correct.astype(np.float64) - baseline_correct.astype(np.float64), groups)
    score_z = gain / se if se > 0 else (math.inf if gain > 0 else 0.0)
    return ModelResult(
        float(accuracy), float(gain), float(se), float(score_z), bool(gain > max_gain and score_z >= z),
        float(gain - 1.96 * se), float(gain + 1.96 * se),
    )


def _evaluate_split(
    train: Split, evaluation: Split, context: Context, key: AnswerKey, max_gain: float, z: float,
    progress: Callable[[int], None],
) -> Evaluation:
    result = Evaluation(evaluation.source, evaluation.size, max_gain)
    everything = [r for records in evaluation.groups.values() for r in records]
    mc_by_task = {g.split("_")[0]: evaluation.groups[g] for g in AUDIT_SLOTS if g.endswith("_mc")}
    for group in AUDIT_SLOTS:
        fit, test = train.groups[group], evaluation.groups[group]
        progress(len(test))
        if not test:
            continue
        clusters = [image_of(r) for r in test]
        baseline_correct: np.ndarray | None = None
        task = group.split("_")[0]
        if group.endswith("_mc"):
            baseline = 100.0 / len(test[0]["choices"]) + unavoidable_gain(test, context, len(LETTERS))
            rule = "chance (1 / options) plus the split's unavoidable residual"
        elif group in ("anatomy_closed", "pathology_closed"):
            baseline = 50.0 + unavoidable_gain(mc_by_task.get(task, []), context, 2)
            rule = "chance (yes and no pooled) plus the split's unavoidable residual"
        else:
            baseline_correct = _accuracy(test, constant_by_region(fit, test, context), key)
            baseline = 100.0 * float(baseline_correct.mean())
            rule = "best constant from train, per named region"
        slot = SlotAudit(group, len(test), baseline, rule)
        attacks = MC_ATTACKS if group.endswith("_mc") else OPEN_ATTACKS
        for name, attack in attacks.items():
            correct = _accuracy(test, attack(fit, test, context), key)
            slot.models[name] = _compare(correct, baseline_correct, baseline, max_gain, z, clusters)
        result.slots.append(slot)
        if group.endswith("_mc") or group in ("anatomy_closed", "pathology_closed"):
            predictions = cross_question(test, everything, context)
            own = {t["id"] for t in test}
            mates = {image_of(r) for r in everything if r["id"] not in own}
            asked = [i for i, r in enumerate(test) if image_of(r) in mates]
            if asked:
                subset = [test[i] for i in asked]
                correct = _accuracy(subset, [predictions[i] for i in asked], key)
                result.cross[group] = _compare(correct, None, 50.0 if "closed" in group else 25.0, math.inf, z,
                                               [clusters[i] for i in asked])
    return result


def audit_splits(
    train: Split,
    evaluations: list[Split] | Split,
    taxonomy: Taxonomy,
    max_gain: float | None = None,
    z: float = Z,
    dataset: str = "",
    notes: list[str] | None = None,
    progress: Callable[[int | None, str], ProgressBar] | None = None,
) -> AuditReport:
    """Run every text-only attacker learned on ``train`` on each evaluated split against its baseline.

    ``max_gain`` None uses the defaults per split (3 points on the benchmark, 2 on val).
    """
    splits = [evaluations] if isinstance(evaluations, Split) else list(evaluations)
    key = answer_key(taxonomy)
    context = Context.of(taxonomy)
    report = AuditReport(dataset=dataset, train_source=train.source, train_questions=train.size, z=z,
                         notes=list(notes or []))
    total = sum(split.size for split in splits)
    bar = progress(total, "audit: fit and score") if progress else NullProgress()
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    # One thread per fit: OpenMP's spinning threads made gradient boosting 10x slower on a busy 2-core machine.
    with bar, threadpool_limits(1):
        for split in splits:
            limit = max_gain if max_gain is not None else DEFAULT_MAX_GAIN.get(split.source, 3.0)
            report.evaluations.append(
                _evaluate_split(train, split, context, key, limit, z, bar.update)
            )
    return report


def audit_dataset(
    dataset: Path,
    max_gain: float | None = None,
    z: float = Z,
    max_train: int = DEFAULT_MAX_TRAIN,
    taxonomy: Taxonomy | None = None,
    progress: Callable[[int | None, str], ProgressBar] | None = None,
) -> AuditReport:
    """Run the text-only shortcut audit on a dataset folder made by ``radvqa generate``."""
    _sklearn()
    if max_gain is not None and max_gain < 0:
        raise EvaluateError(f"--max-gain {max_gain}: must be >= 0")
    train, evaluations = dataset_splits(Path(dataset), max_train, progress)
    tax = taxonomy if taxonomy is not None else dataset_taxonomy(Path(dataset))
    return audit_splits(train, evaluations, tax, max_gain=max_gain, z=z, dataset=str(dataset),
                        notes=_notes(Path(dataset)), progress=progress)


def _notes(dataset: Path) -> list[str]:
    """Deliberate departures recorded in the manifest that the audit's baselines do not allow for."""
    try:
        manifest = orjson.loads((dataset / "manifest.json").read_bytes())
        rate = manifest["config"]["distractors"]["no_pathology_option_rate"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return []
    if rate == "matched":
        return []
    return [
        f"note: 'no pathology seen' is offered at a fixed rate ({rate}), a deliberate departure from exchangeable "
        "option sets (the paper's sensitivity study): a gain on pathology_mc is the cue that rate creates"
    ]
