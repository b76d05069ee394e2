"""Score model predictions on a radvqa benchmark: the paper's nine-column table, reproducibly.

Rules (documented in the README and tested case by case):

* multiple choice: :func:`parse_choice` finds the chosen letter or option text in free output
  ("B", "(B)", "Answer: B. knee", "The answer is knee"); an unparseable answer is wrong and
  counted separately;
* closed: :func:`parse_yes_no` normalises "Yes.", "no, it is not", "YES" and compares exactly;
* open: :func:`normalise_answer` then an exact match against the reference's display name or
  one of its taxonomy synonyms; optionally an LLM judge (:mod:`radvqa.judge`) decides the
  answers the rules do not accept.

Accuracy per slot is correct / questions (missing predictions, when allowed, count as wrong);
the average is the mean of the nine slot accuracies, as in the paper's results table.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from .errors import EvaluateError
from .generate import INSTRUCT_SLOTS, LETTERS
from .metrics import ImageInfo, Metrics, Scored, compute_metrics
from .progress import NullProgress, ProgressBar
from .taxonomy import Taxonomy, load_taxonomy, taxonomy_from_dict

SLOTS = INSTRUCT_SLOTS
BENCHMARK_GLOB = "benchmark/test-*.jsonl"

# --- text normalisation -------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#]+")
_NON_WORD = re.compile(r"[^\w]+")
# Lead-ins stripped from the start of open and closed answers (after normalisation).
_LEAD_INS = (
    "the final answer is",
    "final answer",
    "the correct answer is",
    "the answer is",
    "answer",
    "this image shows",
    "the image shows",
    "this scan shows",
    "the scan shows",
    "this is",
    "it is",
    "there is",
    "i see",
)
_LEAD_IN = re.compile(r"^(?:" + "|".join(re.escape(x) for x in _LEAD_INS) + r")\b\s*")
_ANSWER_LEAD_IN = re.compile(r"^(?:" + "|".join(re.escape(x) for x in _LEAD_INS[:5]) + r")\b\s*")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")


def _clean(text: str) -> str:
    """Unicode-normalised text without reasoning blocks or markdown emphasis."""
    text = unicodedata.normalize("NFKC", text)
    text = _THINK.sub(" ", text)
    return _MARKUP.sub("", text).strip()


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces ("Ankle/Foot." -> "ankle foot")."""
    return " ".join(_NON_WORD.sub(" ", _clean(text).lower().replace("_", " ")).split())


def normalise_answer(text: str) -> str:
    """:func:`normalise`, then strip lead-ins ("the answer is", "this image shows") and an article."""
    text = normalise(text)
    for _ in range(3):
        stripped = _ARTICLE.sub("", _LEAD_IN.sub("", text))
        if stripped == text:
            break
        text = stripped
    return text


# --- closed questions ---------------------------------------------------------------------

_YES = frozenset({"yes", "yeah", "yep", "true", "correct", "affirmative"})
_NO = frozenset({"no", "nope", "false", "incorrect", "negative"})
_ANSWER_IS = re.compile(r"\banswer(?: is)? (yes|no)\b")


def parse_yes_no(text: str) -> str | None:
    """'yes' or 'no' from a closed answer, or None when it gives neither.

    The first word, after an "Answer:" / "The answer is" lead-in, decides ("Yes.", "no, it is
    not", "YES", "Answer: no"); otherwise an explicit "answer is yes/no" anywhere. Prose that
    starts otherwise ("There is no lesion") is unparseable.
    """
    words = _ANSWER_LEAD_IN.sub("", normalise(text)).split()
    if words:
        if words[0] in _YES:
            return "yes"
        if words[0] in _NO:
            return "no"
    found = {m.group(1) for m in _ANSWER_IS.finditer(normalise(text))}
    return found.pop() if len(found) == 1 else None


# --- multiple choice ----------------------------------------------------------------------

_BARE = re.compile(r"^[(\[]?([A-Da-d])[)\]]?[.:)]?$")
_BOXED = re.compile(r"\\boxed\{\s*\(?([A-Da-d])\)?\s*\}")
_LEADING = re.compile(r"^(?:\(([A-Da-d])\)|\[([A-Da-d])\]|([A-Da-d])\s*[.:)\-])(?:\s|$)")
_MARKER = re.compile(
    r"\b(?:answer|option|choice|choose|chose|select|selected|pick)\b(?:\s+is)?\s*[:\-]?\s*"
    r"(?:option\s+|letter\s+)?(?:\(([A-Da-d])\)|\[([A-Da-d])\]|([A-Da-d])(?=$|[.,:;)!]|\s))",
    re.IGNORECASE,
)
_HEDGE = re.compile(r"(?<![\w'])[(\[]?([A-D])[)\]]?\s*(?:,|or|and|/)\s*[(\[]?([A-D])[)\]]?(?![\w'])")
_LOOSE = re.compile(r"(?:\(([A-D])\)|(?<![\w'])([A-D])(?=[.:)]|$))")


def _letter(match: re.Match[str]) -> str:
    return next(g for g in match.groups() if g).upper()


def _marker_letter(text: str) -> str | None:
    letters = set()
    for match in _MARKER.finditer(text):
        bracketed = match.group(1) or match.group(2)
        if bracketed:
            letters.add(bracketed.upper())
            continue
        letter = match.group(3)
        rest = text[match.end() :]
        # "the answer is a pulmonary nodule": a lower-case 'a' followed by a word is an article.
        if letter.islower() and rest[:1].isspace() and rest.strip():
            continue
        letters.add(letter.upper())
    return letters.pop() if len(letters) == 1 else None


def _option_by_text(text: str, options: list[frozenset[str]]) -> int | None:
    answer = normalise_answer(text)
    exact = [i for i, aliases in enumerate(options) if answer in aliases]
    if len(exact) == 1:
        return exact[0]
    padded = f" {normalise(text)} "
    spans: list[tuple[int, int, int]] = []
    for i, aliases in enumerate(options):
        for alias in aliases:
            if not alias:
                continue
            start = padded.find(f" {alias} ")
            while start >= 0:
                spans.append((start, start + len(alias) + 2, i))
                start = padded.find(f" {alias} ", start + 1)
    # A mention inside a longer option's mention ("mass" in "soft tissue mass") does not count.
    kept = {
        i
        for (s, e, i) in spans
        if not any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) and j != i for (s2, e2, j) in spans)
    }
    return kept.pop() if len(kept) == 1 else None


def parse_choice(text: str, choices: list[str], aliases: Callable[[str], frozenset[str]] | None = None) -> int | None:
    """Index of the option a free-text answer picks, or None when it cannot be told.

    Rules, first match wins: (1) the answer is a letter alone ("B", "(b)", "C."); (2) a
    ``\\boxed{B}``; (3) it starts with a letter and a delimiter ("B. knee", "(B) knee", "b)");
    (4) a marker then a letter ("Answer: B", "The correct option is (C)"; a lower-case "a"
    followed by a word is an article, not a letter); (5) exactly one option's text, or one of
    its taxonomy synonyms, is the answer or is mentioned in it ("The answer is knee"); (6)
    exactly one stand-alone capital letter followed by ".", ":", ")" or the end ("I pick C.").
    A hedge between two letters ("B or C") picks nothing.
    """
    raw = _clean(text)
    if not raw:
        return None
    if any(a != b for a, b in _HEDGE.findall(raw)):
        return None  # "B or C": a hedge between letters picks nothing
    letter: str | None = None
    for pattern in (_BARE, _BOXED, _LEADING):
        match = pattern.search(raw)
        if match:
            letter = _letter(match)
            break
    if letter is None:
        letter = _marker_letter(raw)
    if letter is not None:
        return LETTERS.index(letter) if LETTERS.index(letter) < len(choices) else None
    options = [aliases(c) if aliases else frozenset({normalise_answer(c)}) for c in choices]
    by_text = _option_by_text(raw, options)
    if by_text is not None:
        return by_text
    loose = {_letter(m) for m in _LOOSE.finditer(raw)}
    if len(loose) == 1:
        index = LETTERS.index(loose.pop())
        return index if index < len(choices) else None
    return None


# --- answer key -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerKey:
    """Accepted spellings (normalised) of every region and, per region, every pathology answer."""

    regions: dict[str, frozenset[str]]
    pathologies: dict[str, dict[str, frozenset[str]]]

    def region_aliases(self, text: str) -> frozenset[str]:
        """Accepted spellings of a region display name (just the name when unknown)."""
        return self.regions.get(text, frozenset({normalise_answer(text)}))

    def pathology_aliases(self, region: str, text: str) -> frozenset[str]:
        """Accepted spellings of a pathology answer in a region (just the text when unknown)."""
        return self.pathologies.get(region, {}).get(text, frozenset({normalise_answer(text)}))


def answer_key(taxonomy: Taxonomy) -> AnswerKey:
    """The accepted spellings of every answer in a taxonomy (display names plus synonyms)."""

    def spellings(*names: Iterable[str]) -> frozenset[str]:
        return frozenset(normalise_answer(n) for group in names for n in group if normalise_answer(n))

    regions = {r.name: spellings([r.name], r.synonyms) for r in taxonomy.regions.values()}
    pathologies: dict[str, dict[str, frozenset[str]]] = {}
    for region in taxonomy.regions.values():
        table = pathologies.setdefault(region.name, {})
        for key in region.pathologies:
            name = taxonomy.name(region.key, key)
            if key == taxonomy.normal_folder:
                table[taxonomy.normal_answer] = spellings([taxonomy.normal_answer, name.name], name.synonyms)
            else:
                table[name.name] = spellings([name.name], name.synonyms)
    return AnswerKey(regions=regions, pathologies=pathologies)


# --- scoring one record ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one prediction scored: correct, and whether the rules could read it at all."""

    correct: bool
    parsed: bool


def score(record: dict[str, Any], prediction: str, key: AnswerKey) -> Outcome:
    """Score one prediction against one benchmark record with the rule-based scorer."""
    kind = record["question_type"]
    if kind == "multiple_choice":
        choices = list(record["choices"])
        aliases = key.region_aliases if record["task"] == "anatomy" else (
            lambda text: key.pathology_aliases(record["region"], text)
        )
        index = parse_choice(prediction, choices, aliases)
        if index is None:
            return Outcome(False, False)
        return Outcome(LETTERS[index] == str(record["answer"]).strip().upper(), True)
    if kind == "closed":
        verdict = parse_yes_no(prediction)
        return Outcome(verdict == str(record["answer"]).strip().lower(), verdict is not None)
    answer = normalise_answer(prediction)
    if not answer:
        return Outcome(False, False)
    if record["task"] == "anatomy":
        accepted = key.region_aliases(record["answer"])
    else:
        accepted = key.pathology_aliases(record["region"], record["answer"])
    return Outcome(answer in accepted or answer == normalise_answer(record["answer"]), True)


# --- reading files --------------------------------------------------------------------------

_REQUIRED = ("id", "slot", "question_type", "task", "question", "answer", "region", "modality")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file, streaming."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise EvaluateError(f"{path}: cannot read ({exc.strerror or exc})")
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise EvaluateError(f"{path}:{number}: not valid JSON ({exc})")
            if not isinstance(item, dict):
                raise EvaluateError(f"{path}:{number}: expected a JSON object")
            yield number, item


def benchmark_files(path: Path) -> list[Path]:
    """The benchmark shards: PATH itself, or ``PATH/benchmark/test-*.jsonl`` for a dataset folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise EvaluateError(f"{path}: no such file or folder")
    files = sorted(path.glob(BENCHMARK_GLOB)) or sorted(path.glob("test-*.jsonl"))
    if not files:
        raise EvaluateError(
            f"{path}: no {BENCHMARK_GLOB} in this folder",
            hint="pass a dataset folder made by `radvqa generate`, or a benchmark JSONL file",
        )
    return files


def find_manifest(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The manifest of the dataset a benchmark path belongs to (its folder or the one above), if any."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "manifest.json", folder.parent / "manifest.json"):
        if candidate.is_file():
            try:
                manifest = orjson.loads(candidate.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise EvaluateError(f"{candidate}: cannot read manifest ({exc})")
            return candidate, manifest if isinstance(manifest, dict) else {}
    return None


def dataset_taxonomy(path: Path) -> Taxonomy:
    """The taxonomy a dataset was made with (from its manifest), else the packaged default."""
    found = find_manifest(path)
    if found is not None:
        candidate, manifest = found
        recorded = manifest.get("taxonomy") or {}
        data = recorded.get("data") if isinstance(recorded, dict) else None
        if isinstance(data, dict):
            return taxonomy_from_dict(data, f"{candidate} (taxonomy)", str(recorded.get("sha256", "")))
    return load_taxonomy()


def read_predictions(path: Path) -> dict[str, str | None]:
    """id -> prediction text from a JSONL file of ``{"id": ..., "prediction": ...}`` objects (null = missing)."""
    predictions: dict[str, str | None] = {}
    for number, item in read_jsonl(path):
        ident = item.get("id")
        if not isinstance(ident, str):
            raise EvaluateError(f"{path}:{number}: missing or non-string 'id'")
        if "prediction" not in item:
            raise EvaluateError(f"{path}:{number}: missing 'prediction'")
        value = item["prediction"]
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise EvaluateError(f"{path}:{number}: 'prediction' must be text")
        if ident in predictions:
            raise EvaluateError(f"{path}:{number}: id '{ident}' appears twice")
        predictions[ident] = None if value is None else str(value)
    return predictions


def read_benchmark(files: list[Path]) -> Iterator[dict[str, Any]]:
    """Benchmark records, checked for the fields the scorer needs."""
    seen: set[str] = set()
    for path in files:
        for number, record in read_jsonl(path):
            for name in _REQUIRED:
                if name not in record:
                    raise EvaluateError(f"{path}:{number}: missing field '{name}'")
            if record["slot"] not in SLOTS:
                raise EvaluateError(f"{path}:{number}: slot '{record['slot']}' is not one of the nine scored slots")
            if record["question_type"] == "multiple_choice" and len(record.get("choices") or []) < 2:
                raise EvaluateError(f"{path}:{number}: multiple-choice record without 'choices'")
            if record["id"] in seen:
                raise EvaluateError(f"{path}:{number}: id '{record['id']}' appears twice in the benchmark")
            seen.add(record["id"])
            yield record


# --- tallies and the report ----------------------------------------------------------------


@dataclass
class Tally:
    """Correct answers out of questions."""

    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float | None:
        """Percent correct, or None without questions."""
        return 100.0 * self.correct / self.total if self.total else None


@dataclass
class Table:
    """Nine slot tallies and their average."""

    slots: dict[str, Tally] = field(default_factory=lambda: {s: Tally() for s in SLOTS})

    def add(self, slot: str, correct: bool) -> None:
        """Count one scored question."""
        tally = self.slots[slot]
        tally.total += 1
        tally.correct += int(correct)

    @property
    def average(self) -> float | None:
        """Mean of the slot accuracies that have questions (the paper's 'average' column)."""
        values = [t.accuracy for t in self.slots.values() if t.accuracy is not None]
        return sum(values) / len(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict: per slot correct/total/accuracy, plus the average."""
        return {
            "slots": {s: {"correct": t.correct, "total": t.total, "accuracy": _round(t.accuracy)} for s, t in self.slots.items()},
            "average": _round(self.average),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class EvaluationReport:
    """Everything ``radvqa evaluate`` prints and writes."""

    benchmark: list[str]
    predictions: str
    questions: int = 0
    overall: Table = field(default_factory=Table)
    by_region: dict[str, Table] = field(default_factory=dict)
    by_modality: dict[str, Table] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SLOTS})
    unparseable: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SLOTS})
    missing_examples: list[str] = field(default_factory=list)
    judge: dict[str, Any] | None = None
    scored: list[Scored] = field(default_factory=list)
    images: dict[str, ImageInfo] = field(default_factory=dict)
    options: dict[str, list[int]] = field(default_factory=dict)
    metrics: Metrics | None = None

    def add(self, record: dict[str, Any], correct: bool) -> None:
        """Count one question in the overall, region and modality tables (and keep it for the metrics)."""
        slot = record["slot"]
        self.overall.add(slot, correct)
        self.by_region.setdefault(str(record["region"]), Table()).add(slot, correct)
        self.by_modality.setdefault(str(record["modality"]), Table()).add(slot, correct)
        image = str(record.get("image", record["id"]))
        self.scored.append(Scored(image, slot, str(record["answer"]), correct))
        if image not in self.images:
            abnormal = record.get("is_abnormal")
            self.images[image] = ImageInfo(
                str(record["region"]), str(record["modality"]), abnormal if isinstance(abnormal, bool) else None
            )
        if record["question_type"] == "multiple_choice":
            self.options.setdefault(slot, []).append(len(record.get("choices") or []))

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "benchmark": self.benchmark,
            "predictions": self.predictions,
            "questions": self.questions,
            "missing": sum(self.missing.values()),
            "missing_by_slot": self.missing,
            "unparseable": sum(self.unparseable.values()),
            "unparseable_by_slot": self.unparseable,
            "overall": self.overall.to_dict(),
            "by_region": {k: v.to_dict() for k, v in sorted(self.by_region.items())},
            "by_modality": {k: v.to_dict() for k, v in sorted(self.by_modality.items())},
            "judge": self.judge,
            "metrics": self.metrics.to_dict() if self.metrics is not None else None,
        }

    def lines(self) -> list[str]:
        """Readable tables: overall, per region, per modality (each split by normal/abnormal image), then counts."""
        out = [f"{self.questions} questions scored from {', '.join(self.benchmark)}", ""]
        if self.metrics is not None:
            out += self.metrics.lines()
        out.append(f"missing predictions: {sum(self.missing.values())}  unparseable: {sum(self.unparseable.values())}")
        bad = [f"{s} {n}" for s, n in self.unparseable.items() if n]
        if bad:
            out.append("unparseable by slot: " + ", ".join(bad))
        if self.judge:
            out.append(
                f"judge {self.judge['model']}: {self.judge['answers']} open answers judged "
                f"({self.judge['asked']} distinct, {self.judge['cached']} from cache, "
                f"{self.judge['requests']} requests), {self.judge['unclear']} unclear verdicts"
            )
        return out


# --- the whole evaluation -------------------------------------------------------------------


class OpenJudge(Protocol):
    """What :func:`evaluate` needs from a judge (see :class:`radvqa.judge.Judge`)."""

    def verdicts(self, items: list[tuple[str, str, str]], progress: ProgressBar | None = None) -> list[bool | None]:
        """One verdict per (question, reference, prediction); None when the reply is unclear."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for the report."""
        ...


def evaluate(
    benchmark: Path,
    predictions: Path | Sequence[Path],
    taxonomy: Taxonomy | None = None,
    judge: OpenJudge | None = None,
    allow_missing: bool = False,
    progress: Callable[[int, str], ProgressBar] | None = None,
    blind: Path | None = None,
    compare: Path | None = None,
    replicates: int = 1000,
    seed: int = 0,
    prediction_format: str | None = None,
) -> EvaluationReport:
    """Score prediction files (radvqa, VLMEvalKit, LLaVA or lmms-eval; see :mod:`radvqa.predictions`).

    ``blind`` (the same model's text-only run) adds multimodal gain and leakage per column,
    ``compare`` (another model's run) a paired difference; ``replicates`` bootstrap draws of the
    images (seeded) give every column its 95% interval.
    """
    from .predictions import load_predictions

    if replicates < 0:
        raise EvaluateError(f"--bootstrap {replicates}: must be 0 (no intervals) or more")
    files = benchmark_files(Path(benchmark))
    tax = taxonomy if taxonomy is not None else dataset_taxonomy(Path(benchmark))
    key = answer_key(tax)
    paths = [Path(predictions)] if isinstance(predictions, (str, Path)) else [Path(p) for p in predictions]
    answers = load_predictions(paths, lambda: read_benchmark(files), prediction_format)
    label = ", ".join(map(str, paths))
    report = EvaluationReport(benchmark=[str(f) for f in files], predictions=label)
    used: set[str] = set()
    pending: list[tuple[dict[str, Any], str]] = []
    for record in read_benchmark(files):
        report.questions += 1
        slot = record["slot"]
        prediction = answers.get(record["id"])
        if record["id"] in answers:
            used.add(record["id"])
        if prediction is None:
            report.missing[slot] += 1
            if len(report.missing_examples) < 5:
                report.missing_examples.append(record["id"])
            report.add(record, False)
            continue
        outcome = score(record, prediction, key)
        if not outcome.parsed:
            report.unparseable[slot] += 1
        if judge is not None and record["question_type"] == "open" and outcome.parsed and not outcome.correct:
            pending.append((record, prediction))
            continue
        report.add(record, outcome.correct)
    extra = [i for i in answers if i not in used]
    if extra:
        raise EvaluateError(
            f"{label}: {len(extra)} ids are not in the benchmark (e.g. '{extra[0]}')",
            hint="score predictions against the benchmark they were made for",
        )
    missing = sum(report.missing.values())
    if missing and not allow_missing:
        raise EvaluateError(
            f"{label}: {missing} of {report.questions} benchmark questions have no prediction "
            f"(e.g. '{report.missing_examples[0]}')",
            hint="pass --allow-missing to score them as wrong",
        )
    if judge is not None:
        bar = progress(len(pending), "judge") if progress and pending else NullProgress()
        with bar:
            verdicts = judge.verdicts(
                [(str(r["question"]), str(r["answer"]), p) for r, p in pending], bar
            )
        for (record, _), verdict in zip(pending, verdicts):
            report.add(record, bool(verdict))
        report.judge = judge.stats()
    runs = [
        evaluate(
            benchmark, path, tax, judge, allow_missing, progress, replicates=0, prediction_format=prediction_format
        )
        if path is not None
        else None
        for path in (blind, compare)
    ]
    blind_run, other_run = ((r.predictions, r.scored) if r is not None else None for r in runs)
    report.metrics = compute_metrics(report.scored, report.images, report.options, blind_run, other_run, replicates, seed)
    return report
