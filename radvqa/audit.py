"""The text-only shortcut audit: can a model that never sees the image beat chance?

Text-only models are fitted on the instruct train split and scored on the benchmark (the
instruct val split when a dataset has no benchmark) with the same scorer as ``radvqa
evaluate``. Each is compared with the no-information baseline of its slot:

* multiple choice: 1 / number of options (25%);
* closed questions of a task, yes and no slots pooled: 50% (scored apart, "always yes" would
  trivially win the yes slot);
* open questions and the abnormality question: the best constant answer learned from train,
  per region when the question names the region.

The models: the per-slot answer prior (most frequent train answer), a bag-of-words logistic
regression over question and options, and for multiple choice the longest option, the option
most often right in train, and an option-level logistic regression (option identity,
position, length rank) that finds any option that is right more or less often than its share.

A slot fails when a model beats its baseline by more than ``max_gain`` points AND the gain is
at least ``Z`` standard errors from zero (binomial for fixed baselines, McNemar's paired test
against a learned one). On a benchmark-sized set (1,000 questions per slot) the second
condition is implied by the first; it only keeps small datasets from failing on noise.
"""

from __future__ import annotations

import math
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .errors import EvaluateError, MissingDependencyError
from .evaluate import LETTERS, AnswerKey, answer_key, dataset_taxonomy, normalise, read_jsonl, score
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
MODELS = ("prior", "bow", "longest", "frequent", "option_lr")
Z = 3.0  # standard errors a gain must clear before it can fail the audit
DEFAULT_MAX_GAIN = 5.0
DEFAULT_MAX_TRAIN = 50_000  # train questions per audit slot (a hash-chosen subset beyond that)
_KEEP = ("id", "slot", "task", "question_type", "question", "choices", "answer", "region", "modality")
_SLOT_GROUP = {slot: group for group, slots in AUDIT_SLOTS.items() for slot in slots}
_OPTION_LINE = re.compile(r"\n[A-D][.)]\s.*$", re.DOTALL)


def is_available() -> bool:
    """Whether scikit-learn (the ``audit`` extra) is installed."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _sklearn() -> Any:
    try:
        import sklearn.exceptions
        import sklearn.feature_extraction.text
        import sklearn.linear_model
    except ImportError:
        raise MissingDependencyError(
            "radvqa audit needs scikit-learn", hint="install the audit extra: pip install 'radvqa[audit]'"
        )
    return sklearn


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
) -> tuple[Split, Split]:
    """(train, evaluation) splits of a dataset folder: instruct train, and the benchmark or val."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise EvaluateError(f"{dataset}: not a dataset folder")
    train_files = sorted(dataset.glob("instruct/train-*.jsonl"))
    if not train_files:
        raise EvaluateError(f"{dataset}: no instruct/train-*.jsonl", hint="pass a folder made by `radvqa generate`")
    eval_files = sorted(dataset.glob("benchmark/test-*.jsonl"))
    source = "benchmark"
    if not eval_files:
        eval_files = sorted(dataset.glob("instruct/val-*.jsonl"))
        source = "instruct val (no benchmark found)"
    if not eval_files:
        raise EvaluateError(f"{dataset}: neither benchmark/test-*.jsonl nor instruct/val-*.jsonl to score on")
    scored = ("benchmark", "test") if source == "benchmark" else ("instruct", "val")
    total = _manifest_records(dataset, [("instruct", "train"), scored])
    with progress(total, "audit: read") if progress else NullProgress() as bar:
        train = load_split(train_files, "instruct train", _train_rates(dataset, max_train), bar)
        evaluation = load_split(eval_files, source, bar=bar)
    for group, records in train.groups.items():
        if not records:
            raise EvaluateError(f"{dataset}: no train questions for slot '{group}'")
    return train, evaluation


# --- text-only models -------------------------------------------------------------------------


def _majority(values: list[str]) -> str:
    """Most frequent value; ties go to the smallest, so the choice is deterministic."""
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, n in counts.items() if n == best)


def _named_region(question: str, regions: list[tuple[str, str]]) -> str | None:
    """The region display name a question mentions, or None (none, or several)."""
    text = f" {normalise(_OPTION_LINE.sub('', question))} "
    found = [name for name, spelled in regions if f" {spelled} " in text]
    return found[0] if len(found) == 1 else None


Predictor = Callable[[list[dict[str, Any]]], list[str]]


def _constant_by_region(train: list[dict[str, Any]], regions: list[tuple[str, str]]) -> Predictor:
    """Best constant answer from train, per region when the question names one."""
    overall = _majority([r["answer"] for r in train])
    by_region: dict[str, list[str]] = {}
    for record in train:
        named = _named_region(record["question"], regions)
        if named is not None:
            by_region.setdefault(named, []).append(record["answer"])
    constants = {k: _majority(v) for k, v in by_region.items()}

    def predict(records: list[dict[str, Any]]) -> list[str]:
        out = []
        for record in records:
            named = _named_region(record["question"], regions)
            out.append(constants.get(named, overall) if named is not None else overall)
        return out

    return predict


def _prior(train: list[dict[str, Any]]) -> Predictor:
    constant = _majority([r["answer"] for r in train])
    return lambda records: [constant] * len(records)


def _fit_lr(features: Any, target: list[Any]) -> Any:
    sklearn = _sklearn()
    model = sklearn.linear_model.LogisticRegression(C=1.0, tol=1e-3, max_iter=500)
    with warnings.catch_warnings():
        # A non-converged fit is still a valid (weaker) text-only model; the library never warns.
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        model.fit(features, target)
    return model


def _bow(train: list[dict[str, Any]]) -> Predictor:
    """Logistic regression on a bag of words (and bigrams) of the question with its options."""
    labels = [r["answer"] for r in train]
    if len(set(labels)) < 2:
        return _prior(train)
    sklearn = _sklearn()
    vectorizer = sklearn.feature_extraction.text.CountVectorizer(ngram_range=(1, 2), binary=True, min_df=2)
    try:
        features = vectorizer.fit_transform([r["question"] for r in train])
    except ValueError:  # no word appears twice: nothing to learn from
        return _prior(train)
    model = _fit_lr(features, labels)

    def predict(records: list[dict[str, Any]]) -> list[str]:
        if not records:
            return []
        return [str(p) for p in model.predict(vectorizer.transform([r["question"] for r in records]))]

    return predict


def _longest(train: list[dict[str, Any]]) -> Predictor:
    def predict(records: list[dict[str, Any]]) -> list[str]:
        out = []
        for record in records:
            lengths = [len(c) for c in record["choices"]]
            out.append(LETTERS[lengths.index(max(lengths))])
        return out

    return predict


def _right_text(record: dict[str, Any]) -> str:
    return str(record["choices"][LETTERS.index(record["answer"])])


def _frequent(train: list[dict[str, Any]]) -> Predictor:
    """The option whose text was most often the right answer in train."""
    counts = Counter(_right_text(r) for r in train)

    def predict(records: list[dict[str, Any]]) -> list[str]:
        out = []
        for record in records:
            scores = [counts.get(c, 0) for c in record["choices"]]
            out.append(LETTERS[scores.index(max(scores))])
        return out

    return predict


def _option_tokens(record: dict[str, Any], index: int) -> str:
    choices = record["choices"]
    lengths = [len(c) for c in choices]
    rank = sorted(lengths, reverse=True).index(lengths[index])
    option = normalise(choices[index]).replace(" ", "_") or "empty"
    words = " ".join(f"w={w}" for w in normalise(choices[index]).split())
    return f"opt={option} pos={LETTERS[index]} lenrank={rank} {words}"


def _option_lr(train: list[dict[str, Any]]) -> Predictor:
    """Scores each option from its identity, words, position and length rank; picks the best."""
    sklearn = _sklearn()
    texts, target = [], []
    for record in train:
        right = LETTERS.index(record["answer"])
        for i in range(len(record["choices"])):
            texts.append(_option_tokens(record, i))
            target.append(int(i == right))
    vectorizer = sklearn.feature_extraction.text.CountVectorizer(
        token_pattern=r"\S+", lowercase=False, binary=True
    )
    model = _fit_lr(vectorizer.fit_transform(texts), target)

    def predict(records: list[dict[str, Any]]) -> list[str]:
        if not records:
            return []
        rows = [_option_tokens(r, i) for r in records for i in range(len(r["choices"]))]
        probability = model.predict_proba(vectorizer.transform(rows))[:, 1]
        out, at = [], 0
        for record in records:
            n = len(record["choices"])
            out.append(LETTERS[int(np.argmax(probability[at : at + n]))])
            at += n
        return out

    return predict


_FACTORIES: dict[str, Callable[[list[dict[str, Any]]], Predictor]] = {
    "prior": _prior,
    "bow": _bow,
    "longest": _longest,
    "frequent": _frequent,
    "option_lr": _option_lr,
}


def models_for(group: str) -> tuple[str, ...]:
    """The text-only models run on an audit slot."""
    return MODELS if group.endswith("_mc") else ("prior", "bow")


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelResult:
    """One text-only model on one audit slot."""

    accuracy: float
    gain: float
    se: float
    z: float
    flagged: bool


@dataclass
class SlotAudit:
    """Baseline and text-only models for one audit slot."""

    slot: str
    questions: int
    baseline: float
    baseline_rule: str
    models: dict[str, ModelResult] = field(default_factory=dict)

    @property
    def worst(self) -> tuple[str, ModelResult] | None:
        """The model with the largest gain."""
        return max(self.models.items(), key=lambda kv: kv[1].gain) if self.models else None

    @property
    def passed(self) -> bool:
        """No model is flagged."""
        return not any(m.flagged for m in self.models.values())


@dataclass
class AuditReport:
    """Everything ``radvqa audit`` prints and writes."""

    dataset: str
    train_source: str
    eval_source: str
    train_questions: int
    eval_questions: int
    max_gain: float
    z: float
    slots: list[SlotAudit] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every slot within max_gain of its baseline (or the excess not significant)."""
        return all(s.passed for s in self.slots)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "dataset": self.dataset,
            "train": {"source": self.train_source, "questions": self.train_questions},
            "eval": {"source": self.eval_source, "questions": self.eval_questions},
            "max_gain": self.max_gain,
            "z": self.z,
            "passed": self.passed,
            "slots": {
                s.slot: {
                    "questions": s.questions,
                    "baseline": round(s.baseline, 2),
                    "baseline_rule": s.baseline_rule,
                    "passed": s.passed,
                    "models": {
                        name: {
                            "accuracy": round(m.accuracy, 2),
                            "gain": round(m.gain, 2),
                            "se": round(m.se, 2),
                            "z": round(m.z, 2),
                            "flagged": m.flagged,
                        }
                        for name, m in s.models.items()
                    },
                }
                for s in self.slots
            },
        }

    def lines(self) -> list[str]:
        """Readable table: accuracy (%) of the baseline and each text-only model per slot."""
        out = [
            f"text-only audit of {self.dataset}",
            f"fit on {self.train_source} ({self.train_questions} questions), "
            f"scored on {self.eval_source} ({self.eval_questions} questions)",
            "",
        ]
        head = f"{'slot':<19} {'n':>5} {'baseline':>8} " + " ".join(f"{m:>9}" for m in MODELS) + f" {'max gain':>9}  verdict"
        out += [head, "-" * len(head)]
        for s in self.slots:
            cells = []
            for name in MODELS:
                result = s.models.get(name)
                cells.append("-" if result is None else f"{result.accuracy:.1f}" + ("!" if result.flagged else ""))
            worst = s.worst
            gain = "-" if worst is None else f"{worst[1].gain:+.1f}"
            verdict = "ok" if s.passed else "SHORTCUT"
            out.append(
                f"{s.slot:<19} {s.questions:>5} {s.baseline:>8.1f} "
                + " ".join(f"{c:>9}" for c in cells)
                + f" {gain:>9}  {verdict}"
            )
        out.append("")
        out.append(
            f"a slot fails when a text-only model beats its baseline by more than {self.max_gain:g} points "
            f"and by at least {self.z:g} standard errors (marked !)"
        )
        for s in self.slots:
            for name, m in s.models.items():
                if m.flagged:
                    out.append(
                        f"SHORTCUT {s.slot}: {name} scores {m.accuracy:.1f} vs baseline {s.baseline:.1f} "
                        f"({m.gain:+.1f} points, z = {m.z:.1f})"
                    )
        out.append("PASSED: no text-only shortcut" if self.passed else "FAILED: text-only shortcuts found")
        return out


# --- running it -------------------------------------------------------------------------------


def _accuracy(records: list[dict[str, Any]], predictions: list[str], key: AnswerKey) -> np.ndarray:
    return np.array([score(r, p, key).correct for r, p in zip(records, predictions)], dtype=bool)


def _compare(
    correct: np.ndarray, baseline_correct: np.ndarray | None, baseline: float, max_gain: float, z: float
) -> ModelResult:
    n = len(correct)
    accuracy = 100.0 * float(correct.mean()) if n else 0.0
    gain = accuracy - baseline
    if baseline_correct is None:
        p0 = baseline / 100.0
        se = 100.0 * math.sqrt(p0 * (1.0 - p0) / n) if n else 0.0
    else:
        # McNemar: only questions where the two disagree carry information about the gain.
        discordant = int((correct != baseline_correct).sum())
        se = 100.0 * math.sqrt(discordant) / n if n else 0.0
    score_z = gain / se if se > 0 else (math.inf if gain > 0 else 0.0)
    return ModelResult(float(accuracy), float(gain), float(se), float(score_z), bool(gain > max_gain and score_z >= z))


def audit_splits(
    train: Split,
    evaluation: Split,
    taxonomy: Taxonomy,
    max_gain: float = DEFAULT_MAX_GAIN,
    z: float = Z,
    dataset: str = "",
    progress: Callable[[int | None, str], ProgressBar] | None = None,
) -> AuditReport:
    """Fit every text-only model on ``train`` and compare it with the baseline on ``evaluation``."""
    key = answer_key(taxonomy)
    regions = [(r.name, normalise(r.name)) for r in taxonomy.regions.values()]
    report = AuditReport(
        dataset=dataset,
        train_source=train.source,
        eval_source=evaluation.source,
        train_questions=train.size,
        eval_questions=evaluation.size,
        max_gain=max_gain,
        z=z,
    )
    for group in _ticking(evaluation, progress):
        fit, test = train.groups[group], evaluation.groups[group]
        if not test:
            continue
        baseline_correct: np.ndarray | None = None
        if group.endswith("_mc"):
            baseline = 100.0 * float(np.mean([1.0 / len(r["choices"]) for r in test]))
            rule = "chance: 1 / options"
        elif group in ("anatomy_closed", "pathology_closed"):
            baseline, rule = 50.0, "chance: yes and no pooled"
        else:
            baseline_correct = _accuracy(test, _constant_by_region(fit, regions)(test), key)
            baseline = 100.0 * float(baseline_correct.mean())
            rule = "best constant from train, per named region"
        result = SlotAudit(group, len(test), baseline, rule)
        for name in models_for(group):
            predictions = _FACTORIES[name](fit)(test)
            correct = _accuracy(test, predictions, key)
            result.models[name] = _compare(correct, baseline_correct, baseline, max_gain, z)
        report.slots.append(result)
    return report


def _ticking(evaluation: Split, progress: Callable[[int | None, str], ProgressBar] | None) -> Iterator[str]:
    """The audit groups, advancing a bar by each group's questions once it is scored."""
    with progress(evaluation.size, "audit: fit and score") if progress else NullProgress() as bar:
        for group in AUDIT_SLOTS:
            yield group
            bar.update(len(evaluation.groups[group]))


def audit_dataset(
    dataset: Path,
    max_gain: float = DEFAULT_MAX_GAIN,
    z: float = Z,
    max_train: int = DEFAULT_MAX_TRAIN,
    taxonomy: Taxonomy | None = None,
    progress: Callable[[int | None, str], ProgressBar] | None = None,
) -> AuditReport:
    """Run the text-only shortcut audit on a dataset folder made by ``radvqa generate``."""
    _sklearn()
    if max_gain < 0:
        raise EvaluateError(f"--max-gain {max_gain}: must be >= 0")
    train, evaluation = dataset_splits(Path(dataset), max_train, progress)
    tax = taxonomy if taxonomy is not None else dataset_taxonomy(Path(dataset))
    return audit_splits(train, evaluation, tax, max_gain=max_gain, z=z, dataset=str(dataset), progress=progress)
