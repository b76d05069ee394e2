"""The rules of ``radvqa validate`` / ``validate-distractors``: per record, then over counts.

``Checker.check`` is a pure function of one parsed record (minus its ``id`` and ``image``,
which the caller checks) returning an :class:`Outcome`: the rules the record breaks and the
counter keys it adds to the statistics. Being pure, outcomes can be cached on the record's
bytes: most questions of a large dataset repeat verbatim apart from their id and image.

``evaluate`` turns the merged counters into rate findings. Statistical rules (documented in
the README) are warnings unless grossly off:

- a rate is *flagged* when at least ``MIN_COUNT`` questions carry it, its binomial z-score
  against the expected rate is at least ``Z_LIMIT`` (about 1 in 16,000 by chance, so a few
  hundred tests rarely flag noise) and it is at least ``MIN_EFFECT`` away (so that a tiny but
  "significant" deviation on millions of questions is not listed);
- a flagged balance (letters, yes/no, "no pathology seen" rate) is a *violation* when it
  rests on at least ``GROSS_MIN`` questions and is ``GROSS_EFFECT`` or more away;
- a rate that must be exact (a fixed "no pathology seen" rate of 0 or 1, benchmark letters)
  is a violation on any deviation;
- name cues are always warnings: a dominant class cannot be matched by any sampler.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .config import MATCHED
from .generate import INSTRUCT_SLOTS, LETTERS, SLOT_TASK, SLOT_TYPE
from .taxonomy import ImageClass, Taxonomy

VIOLATION, WARNING = "violation", "warning"
MIN_COUNT = 30
Z_LIMIT = 4.0
MIN_EFFECT = 0.05
MIN_BALANCE_EFFECT = 0.02
GROSS_MIN = 100
GROSS_EFFECT = 0.10

RULES: dict[str, str] = {
    # reading and schema
    "bad_json": "line is not a JSON object",
    "missing_field": "a SPEC section 4 field is missing",
    "bad_type": "a field has the wrong type",
    "bad_value": "a field has a value outside its set (slot, task, question type, answer form...)",
    "bad_template_id": "template_id is not pool.variant.index for the record's slot",
    "held_out_template": "a train/val record uses a held-out benchmark paraphrase",
    "unknown_class": "modality + label is not a class of the dataset's taxonomy",
    "class_mismatch": "region / pathology / is_abnormal disagree with the record's label",
    # answers and options
    "wrong_answer": "the answer is not the truth for the image (or the closed slot's fixed answer)",
    "option_count": "a multiple-choice question does not have 4 options",
    "duplicate_option": "two options are the same text",
    "answer_not_in_options": "answer_text is not one of the options",
    "wrong_letter": "answer is not the letter of the option equal to answer_text",
    "options_not_in_question": "the question does not end with the 4 option lines, in order",
    "option_not_a_region": "an anatomy option is not a region of the taxonomy",
    "option_not_in_region": "a pathology option is not a pathology of the image's region",
    "own_pathology_option": "a wrong option is the image's own pathology (or 'no pathology seen' on a normal image)",
    "conflict_option": "a wrong option is in the answer's conflict group",
    "excluded_pair": "two options may not share a set: one conflict group, or one option's text inside another's",
    "closed_name_not_found": "a closed question names no region / pathology of the image's region",
    "closed_name_not_in_region": "a closed pathology question names a pathology of another region",
    "closed_name_ambiguous": "a closed question names more than one region / pathology",
    "closed_yes_not_true": "a closed 'yes' question does not name what the image shows",
    "closed_no_is_true": "a closed 'no' question names what the image shows",
    "closed_no_conflict": "a closed 'no' question names a pathology of the answer's conflict group",
    # text
    "unfilled_placeholder": "a {placeholder} was left in the text",
    "raw_folder_name": "a raw RadImageNet folder name appears in the text",
    # whole dataset
    "bad_id": "id is not '<16 hex>-<slot>'",
    "duplicate_id": "the same id appears twice",
    "split_mismatch": "the record's split is not the split of its shard file",
    "config_mismatch": "the record's slot does not belong in its folder (alignment / instruct / benchmark)",
    "missing_image": "the image is not under --root",
    "benchmark_leak": "a benchmark image appears in train or val",
    "missing_shard": "a shard listed in manifest.json is not on disk",
    "unlisted_shard": "a shard on disk is not listed in manifest.json",
    "shard_checksum": "a shard's sha256 differs from manifest.json",
    "shard_records": "a shard's record count differs from manifest.json",
    "records_mismatch": "records per config and split differ from manifest.json",
    # statistics
    "letter_balance": "correct letters of a multiple-choice slot are not uniform",
    "benchmark_letters": "benchmark correct letters are not exactly balanced",
    "yes_no_balance": "a closed task's yes share is far from 1/2",
    "no_pathology_rate": "'no pathology seen' is offered at a rate far from the config",
    "name_cue": "a name is right far more or less often than the slot's rate where it appears",
}

_FIELDS: dict[str, type] = {
    "split": str,
    "task": str,
    "slot": str,
    "question_type": str,
    "question": str,
    "choices": list,
    "answer": str,
    "answer_text": str,
    "modality": str,
    "region": str,
    "pathology": str,
    "label": str,
    "is_abnormal": bool,
    "template_id": str,
}
_DYNAMIC_FIELDS = ("question", "choices", "answer", "answer_text")
_STATIC_FIELDS = tuple(name for name in _FIELDS if name not in _DYNAMIC_FIELDS)
_MISSING = object()
_STATIC_CACHE_LIMIT = 50_000
SPLITS = ("train", "val", "test")
MC_SLOTS = ("anatomy_mc", "pathology_mc")
SLOTS = ("caption",) + INSTRUCT_SLOTS
# Template pools each slot may draw from (template_id "pool.variant.index").
_POOLS = {slot: (slot,) for slot in INSTRUCT_SLOTS} | {
    "anatomy_closed_yes": ("anatomy_closed",),
    "anatomy_closed_no": ("anatomy_closed",),
    "pathology_closed_yes": ("pathology_closed", "pathology_closed_normal"),
    "pathology_closed_no": ("pathology_closed", "pathology_closed_normal"),
}
_TEMPLATE_ID = re.compile(r"([a-z_]+)\.(train|benchmark)\.(\d+)")
_CAPTION_ID = re.compile(r"prompt\.(train|benchmark)\.\d+\+caption_(?:normal|abnormal)\.(train|benchmark)\.\d+")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_TOKEN = re.compile(r"[A-Za-z0-9_+\-]+")
_LETTER = {letter: re.compile(rf"(?<![A-Za-z]){letter}(?![A-Za-z])") for letter in LETTERS}
_LINE_CACHE_LIMIT = 200_000

Problem = tuple[str, str]
StatKey = tuple[Any, ...]


def _all_str(values: list[Any]) -> bool:
    """True when every value is a string (join refuses anything else; faster than all())."""
    try:
        "".join(values)
    except TypeError:
        return False
    return True


def _type_problem(rec: dict[str, Any], name: str) -> Problem | None:
    if name not in rec:
        return ("missing_field", name)
    value, kind = rec[name], _FIELDS[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        return ("bad_type", f"{name}: expected {kind.__name__}, got {type(value).__name__}")
    return None


@dataclass(frozen=True)
class _Static:
    """Outcome of the rules on a record's static fields."""

    split: str | None
    slot: str | None
    problems: tuple[Problem, ...]
    fatal: bool
    cls: ImageClass | None


@dataclass(frozen=True, eq=False)
class Outcome:
    """What one record breaks and adds to the statistics (hashed by identity: counted per object)."""

    split: str | None
    slot: str | None
    problems: tuple[Problem, ...]
    stats: tuple[StatKey, ...]


def _names_regex(names: Iterable[str]) -> re.Pattern[str] | None:
    """Whole-word alternation, longest name first (so the longest match wins)."""
    ordered = sorted(set(names), key=lambda n: (-len(n), n))
    if not ordered:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(n) for n in ordered) + r")(?![\w-])")


def _found(regex: re.Pattern[str] | None, text: str) -> set[str]:
    return set(regex.findall(text)) if regex is not None else set()


class Checker:
    """Per-record rules against one taxonomy; ``full`` adds the text rules of ``validate``."""

    def __init__(self, taxonomy: Taxonomy, full: bool) -> None:
        self.taxonomy = taxonomy
        self.full = full
        self.normal = taxonomy.normal_folder
        self.normal_answer = taxonomy.normal_answer
        self.modalities = set(taxonomy.modalities.values())
        self.classes = {(c.modality_name, c.label): c for c in taxonomy.classes}
        self.folder_of = {display: folder for folder, display in taxonomy.modalities.items()}
        self.region_key = {r.name: key for key, r in taxonomy.regions.items()}
        self.region_regex = _names_regex(self.region_key)
        # per region: option text -> pathology key, closed name -> pathology key
        self.options = {
            key: {taxonomy.answer_text(key, p): p for p in region.pathologies}
            for key, region in taxonomy.regions.items()
        }
        self.closed_names = {
            key: {taxonomy.name(key, p).name: p for p in region.pathologies if p != self.normal}
            for key, region in taxonomy.regions.items()
        }
        self.closed_regex = {key: _names_regex(names) for key, names in self.closed_names.items()}
        self.any_pathology_regex = _names_regex(n for names in self.closed_names.values() for n in names)
        self.raw_names = frozenset(taxonomy.raw_folder_names())
        self._lines: dict[str, Problem | None] = {}
        self._statics: dict[tuple[Any, ...], _Static] = {}
        self._choice_shape: tuple[str, str, str, bool] | None = None
        self._mc_tables: dict[tuple[str, str, int], _McTable] = {}
        # per pool (anatomy: ''): option text -> index, and the pairs that may not share a set
        pools = taxonomy.option_pools(contained=True)
        self.set_names = {pool: {t: i for i, t in enumerate(names)} for pool, (names, _) in pools.items()}
        self.set_excluded = {pool: excluded for pool, (_, excluded) in pools.items()}

    # -- helpers ---------------------------------------------------------------------------

    def resolve(self, modality: str, label: str) -> ImageClass | None:
        """The class of a record from its modality display name and raw label."""
        cls = self.classes.get((modality, label))
        if cls is None and "-" in label and modality in self.folder_of:
            anatomy, pathology = label.split("-", 1)
            cls = self.taxonomy.resolve(self.folder_of[modality], anatomy, pathology)
        return cls

    def text_problem(self, text: str) -> Problem | None:
        """The first placeholder or raw folder name in ``text`` (cached per line)."""
        lines = self._lines
        for line in text.split("\n") if "\n" in text else (text,):
            problem = lines.get(line, _MISSING)
            if problem is _MISSING:
                problem = self._line_problem(line)
                if len(lines) >= _LINE_CACHE_LIMIT:
                    lines.clear()
                lines[line] = problem  # type: ignore[assignment]
            if problem is not None:
                return problem  # type: ignore[return-value]
        return None

    def _line_problem(self, line: str) -> Problem | None:
        if "{" in line:
            match = _PLACEHOLDER.search(line)
            if match:
                return ("unfilled_placeholder", f"'{match.group()}' in '{line}'")
        for token in _TOKEN.findall(line):
            if token in self.raw_names:
                return ("raw_folder_name", f"'{token}' in '{line}'")
        return None

    # -- the record ------------------------------------------------------------------------

    def check(self, rec: dict[str, Any]) -> Outcome:
        """Every per-record rule except id and image ones (those need the whole dataset)."""
        static = self._static_of(rec)
        split, slot, cls = static.split, static.slot, static.cls
        problems = list(static.problems)
        if static.fatal:
            return Outcome(split, slot, tuple(problems), ())
        choices = rec.get("choices")
        common_mc = (  # the usual multiple-choice record, checked without building messages
            slot in MC_SLOTS
            and type(rec.get("question")) is str
            and type(choices) is list
            and type(rec.get("answer_text")) is str
            and rec.get("answer") in LETTERS
            and _all_str(choices)  # type: ignore[arg-type]
        )
        if not common_mc and not self._dynamic_schema(rec, slot, problems):  # type: ignore[arg-type]
            return Outcome(split, slot, tuple(problems), ())
        assert split is not None and slot is not None
        stem = fast = None
        if slot in MC_SLOTS and len(rec["choices"]) == len(LETTERS):
            stem, fast = self._stem(rec["question"], rec["choices"])
        if self.full:
            if fast:  # the option lines are the learned (checked) shape around the choices
                problem = self.text_problem(stem) or self._first_problem(rec["choices"])  # type: ignore[arg-type]
            else:
                problem = self._texts_problem(rec, slot)
            if problem:
                problems.append(problem)
        if cls is None:
            return Outcome(split, slot, tuple(problems), ())
        stats: list[StatKey] = []
        if slot in MC_SLOTS:
            self._multiple_choice(rec, cls, problems, stats, stem is not None)
        elif slot != "caption":
            self._single(rec, slot, cls, problems, stats)
        return Outcome(split, slot, tuple(problems), tuple(stats))

    def _first_problem(self, texts: list[str]) -> Problem | None:
        lines = self._lines
        for text in texts:
            problem = lines.get(text, _MISSING)  # single-line texts are cached whole
            if problem is _MISSING:
                problem = self.text_problem(text)
            if problem:
                return problem  # type: ignore[return-value]
        return None

    def _texts_problem(self, rec: dict[str, Any], slot: str) -> Problem | None:
        texts = [rec["question"], *rec["choices"]]
        if slot not in MC_SLOTS:  # a multiple-choice answer is a letter, its answer_text an option
            texts += [rec["answer"], rec["answer_text"]]
        text_problem = self.text_problem
        for text in texts:
            problem = text_problem(text)
            if problem:
                return problem
        return None

    def _static_of(self, rec: dict[str, Any]) -> _Static:
        """Rules on the fields shared by all questions of a class and template (cached)."""
        get = rec.get
        try:
            key: tuple[Any, ...] | None = (
                get("split", _MISSING),
                get("task", _MISSING),
                get("slot", _MISSING),
                get("question_type", _MISSING),
                get("modality", _MISSING),
                get("region", _MISSING),
                get("pathology", _MISSING),
                get("label", _MISSING),
                get("is_abnormal", _MISSING),
                type(get("is_abnormal")),  # 1 == True: without the type, 1 would share True's entry
                get("template_id", _MISSING),
            )
            static = self._statics.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable value (a list where a string belongs)
            key, static = None, None
        if static is None:
            static = self._static(rec)
            if key is not None and len(self._statics) < _STATIC_CACHE_LIMIT:
                self._statics[key] = static
        return static

    def _static(self, rec: dict[str, Any]) -> _Static:
        problems: list[Problem] = []
        split, slot = rec.get("split"), rec.get("slot")
        split = split if isinstance(split, str) else None
        slot = slot if isinstance(slot, str) and slot in SLOT_TASK else None

        def fail(rule: str, detail: str) -> _Static:
            return _Static(split, slot, ((rule, detail),), True, None)

        for name in _STATIC_FIELDS:
            problem = _type_problem(rec, name)
            if problem:
                return fail(*problem)
        if slot is None:
            return fail("bad_value", f"slot {rec['slot']!r}")
        checks = (
            (rec["split"] in SPLITS, f"split {rec['split']!r}"),
            (rec["task"] == SLOT_TASK[slot], f"task {rec['task']!r} for slot {slot}"),
            (rec["question_type"] == SLOT_TYPE[slot], f"question_type {rec['question_type']!r} for slot {slot}"),
            (rec["modality"] in self.modalities, f"modality {rec['modality']!r}"),
        )
        for ok, detail in checks:
            if not ok:
                return fail("bad_value", detail)
        self._template(rec, slot, problems)
        cls = self.resolve(rec["modality"], rec["label"])
        if cls is None:
            problems.append(("unknown_class", f"{rec['modality']} {rec['label']}"))
        else:
            for name, truth in (
                ("region", cls.region_name),
                ("pathology", cls.pathology_name),
                ("is_abnormal", cls.is_abnormal),
            ):
                if rec[name] != truth:
                    problems.append(("class_mismatch", f"{name} {rec[name]!r} but label {rec['label']} says {truth!r}"))
        return _Static(split, slot, tuple(problems), False, cls)

    def _dynamic_schema(self, rec: dict[str, Any], slot: str, problems: list[Problem]) -> bool:
        """Rules on question, choices and answer fields; False when the record cannot be checked further."""
        for name in _DYNAMIC_FIELDS:
            problem = _type_problem(rec, name)
            if problem:
                problems.append(problem)
                return False
        if not all(isinstance(c, str) for c in rec["choices"]):
            problems.append(("bad_type", "choices: expected a list of strings"))
            return False
        kind = SLOT_TYPE[slot]
        answer = rec["answer"]
        if kind == "multiple_choice":
            if answer not in LETTERS:
                problems.append(("bad_value", f"answer {answer!r} is not a letter A-D"))
                return False
            return True
        if rec["choices"]:
            problems.append(("bad_value", f"choices given for a {kind} question"))
        elif kind == "closed" and answer not in ("yes", "no"):
            problems.append(("bad_value", f"answer {answer!r} is not yes/no"))
        elif rec["answer_text"] != answer:
            problems.append(("bad_value", "answer_text differs from answer"))
        else:
            return True
        return False

    def _template(self, rec: dict[str, Any], slot: str, problems: list[Problem]) -> None:
        template_id = rec["template_id"]
        if slot == "caption":
            match = _CAPTION_ID.fullmatch(template_id)
            variants = match.groups() if match else ()
        else:
            match = _TEMPLATE_ID.fullmatch(template_id)
            if match and match.group(1) not in _POOLS[slot]:
                match = None
            variants = (match.group(2),) if match else ()
        if not match:
            problems.append(("bad_template_id", f"{template_id!r} for slot {slot}"))
        elif rec["split"] != "test" and "benchmark" in variants:
            problems.append(("held_out_template", template_id))

    def _single(
        self, rec: dict[str, Any], slot: str, cls: ImageClass, problems: list[Problem], stats: list[StatKey]
    ) -> None:
        answer, split = rec["answer"], rec["split"]
        if SLOT_TYPE[slot] == "closed":
            stats.append(("closed", split, slot, answer))
        if slot == "anatomy_open":
            truth = cls.region_name
        elif slot == "pathology_open":
            truth = self.taxonomy.answer_text(cls.region, cls.pathology)
        elif slot == "abnormality_closed":
            truth = "yes" if cls.is_abnormal else "no"
        else:
            truth = "yes" if slot.endswith("_yes") else "no"
        if answer != truth:
            problems.append(("wrong_answer", f"{answer!r}, expected {truth!r}"))
        if slot.startswith("anatomy_closed"):
            self._anatomy_closed(rec["question"], answer, cls, split, problems, stats)
        elif slot.startswith("pathology_closed"):
            self._pathology_closed(rec, answer, cls, split, problems, stats)

    def _anatomy_closed(
        self, question: str, answer: str, cls: ImageClass, split: str, problems: list[Problem], stats: list[StatKey]
    ) -> None:
        names = _found(self.region_regex, question)
        if len(names) != 1:
            rule = "closed_name_not_found" if not names else "closed_name_ambiguous"
            problems.append((rule, f"regions {sorted(names)} in '{question}'"))
            return
        name = names.pop()
        asked = self.region_key[name]
        if answer == "yes" and asked != cls.region:
            problems.append(("closed_yes_not_true", f"asks about '{name}', image shows '{cls.region_name}'"))
        if answer == "no" and asked == cls.region:
            problems.append(("closed_no_is_true", f"asks about '{name}', which the image shows"))
        stats.append(("cue", "anatomy_closed", split, "", asked, answer == "yes"))

    def _pathology_closed(
        self,
        rec: dict[str, Any],
        answer: str,
        cls: ImageClass,
        split: str,
        problems: list[Problem],
        stats: list[StatKey],
    ) -> None:
        question = rec["question"]
        if rec["template_id"].startswith("pathology_closed_normal."):
            asked = self.normal
            name = self.taxonomy.normal_name
        else:
            names = _found(self.closed_regex[cls.region], question)
            if len(names) != 1:
                if names:
                    problems.append(("closed_name_ambiguous", f"pathologies {sorted(names)} in '{question}'"))
                else:
                    elsewhere = _found(self.any_pathology_regex, question)
                    rule = "closed_name_not_in_region" if elsewhere else "closed_name_not_found"
                    problems.append((rule, f"'{question}' names no pathology of the {cls.region_name}"))
                return
            name = names.pop()
            asked = self.closed_names[cls.region][name]
        own = cls.pathology
        if answer == "yes" and asked != own:
            problems.append(("closed_yes_not_true", f"asks about '{name}', image shows '{cls.pathology_name}'"))
        if answer == "no":
            if asked == own:
                problems.append(("closed_no_is_true", f"asks about '{name}', which the image shows"))
            elif asked in self.taxonomy.regions[cls.region].conflicts_of(own):
                problems.append(("closed_no_conflict", f"'{name}' conflicts with '{cls.pathology_name}'"))
        stats.append(("cue", "pathology_closed", split, cls.region, asked, answer == "yes"))

    def _stem(self, question: str, choices: list[str]) -> tuple[str | None, bool]:
        """The question without its option lines (None if they are not there), and whether the
        learned shape matched (fast); the first consistent shape seen is learned."""
        shape = self._choice_shape
        if shape is not None:
            tail = _rendered(shape, choices)
            if len(question) > len(tail) and question.endswith(tail):
                return question[: -len(tail)], True
        found = _choice_shape(question, choices)
        if found is None:
            return None, False
        if shape is None:
            learned = _split_shape(found)
            if self.text_problem(_rendered(learned, ["x"] * len(LETTERS))) is None:
                self._choice_shape = learned
        return question.rsplit("\n", len(LETTERS))[0], False

    def _multiple_choice(
        self, rec: dict[str, Any], cls: ImageClass, problems: list[Problem], stats: list[StatKey], lines_ok: bool
    ) -> None:
        choices: list[str] = rec["choices"]
        answer, answer_text, split, slot = rec["answer"], rec["answer_text"], rec["split"], rec["slot"]
        if len(choices) != len(LETTERS):
            problems.append(("option_count", f"{len(choices)} options"))
            return
        if len(set(choices)) != len(choices):
            dup = next(c for c in choices if choices.count(c) > 1)
            problems.append(("duplicate_option", f"'{dup}'"))
        if answer_text not in choices:
            problems.append(("answer_not_in_options", f"'{answer_text}'"))
        elif choices[LETTERS.index(answer)] != answer_text:
            problems.append(
                (
                    "wrong_letter",
                    f"{answer} is '{choices[LETTERS.index(answer)]}', '{answer_text}' is {LETTERS[choices.index(answer_text)]}",
                )
            )
        if not lines_ok:
            problems.append(("options_not_in_question", "question does not end with the option lines"))
        table = self._mc_tables.get((split, slot, cls.index)) or self._mc_table(split, slot, cls)
        stats.append(table.letter[answer])
        truth = table.truth
        if answer_text != truth:
            problems.append(("wrong_answer", f"'{answer_text}', expected '{truth}'"))
        normal_offered = False
        for choice in choices:
            entry = table.entries.get(choice)
            if entry is None:
                if slot == "anatomy_mc":
                    problems.append(("option_not_a_region", f"'{choice}'"))
                elif choice != answer_text:
                    problems.append(("option_not_in_region", f"'{choice}' is not a pathology of the {cls.region_name}"))
                continue
            cue, kind = entry
            stats.append(cue)
            if kind is None or choice == answer_text:
                continue
            if kind == "normal":
                normal_offered = True
            elif kind == "own_pathology_option":
                problems.append((kind, f"'{choice}'"))
            else:
                problems.append((kind, f"'{choice}' conflicts with '{truth}'"))
        stats.append(table.true)
        if table.no_pathology is not None:
            stats.append(table.no_pathology[normal_offered])
        pool = "" if slot == "anatomy_mc" else cls.region_name
        index, excluded = self.set_names[pool], self.set_excluded[pool]
        known = [(c, index[c]) for c in choices if c in index]
        for a, (first, i) in enumerate(known):
            for second, j in known[a + 1 :]:
                if excluded[i, j]:
                    problems.append(("excluded_pair", f"'{first}' beside '{second}'"))
        stats.append(("set", split, slot, pool, tuple(sorted(choices)), answer_text))

    def _mc_table(self, split: str, slot: str, cls: ImageClass) -> _McTable:
        """Per split, slot and class: every valid option's statistics key and wrong-option verdict."""
        entries: dict[str, tuple[StatKey, str | None]] = {}
        no_pathology = None
        if slot == "anatomy_mc":
            truth = cls.region_name
            for name, key in self.region_key.items():
                entries[name] = (("cue", slot, split, "", key, name == truth), None)
            true: StatKey = ("true", "anatomy", split, cls.region, "")
        else:
            truth = self.taxonomy.answer_text(cls.region, cls.pathology)
            conflicts = self.taxonomy.regions[cls.region].conflicts_of(cls.pathology)
            for text, key in self.options[cls.region].items():
                kind = (
                    "own_pathology_option"
                    if text == truth
                    else "conflict_option"
                    if key in conflicts
                    else "normal"
                    if key == self.normal
                    else None
                )
                entries[text] = (("cue", slot, split, cls.region, key, text == truth), kind)
            true = ("true", "pathology", split, cls.region, cls.pathology)
            if cls.is_abnormal and self.normal not in conflicts:
                no_pathology = (("no_pathology", split, cls.region, False), ("no_pathology", split, cls.region, True))
        table = _McTable(truth, entries, {L: ("letter", split, slot, L) for L in LETTERS}, true, no_pathology)
        self._mc_tables[(split, slot, cls.index)] = table
        return table


@dataclass(frozen=True)
class _McTable:
    """Precomputed multiple-choice verdicts for one split, slot and class."""

    truth: str
    entries: dict[str, tuple[StatKey, str | None]]
    letter: dict[str, StatKey]
    true: StatKey
    no_pathology: tuple[StatKey, StatKey] | None


def _rendered(shape: tuple[str, str, str, bool], choices: list[str]) -> str:
    """The option lines a question must end with, from a learned shape (pre, mid, post, letter first)."""
    pre, mid, post, letter_first = shape
    a, b, c, d = choices  # one f-string: this runs for every multiple-choice question
    if letter_first:
        return f"\n{pre}A{mid}{a}{post}\n{pre}B{mid}{b}{post}\n{pre}C{mid}{c}{post}\n{pre}D{mid}{d}{post}"
    return f"\n{pre}{a}{mid}A{post}\n{pre}{b}{mid}B{post}\n{pre}{c}{mid}C{post}\n{pre}{d}{mid}D{post}"


def _split_shape(shape: str) -> tuple[str, str, str, bool]:
    letter, option = shape.index("\x01"), shape.index("\x00")
    first, second = sorted((letter, option))
    return shape[:first], shape[first + 1 : second], shape[second + 1 :], letter < option


def _choice_shape(question: str, choices: list[str]) -> str | None:
    """The shape of the last 4 lines ("\x01. \x00": letter, option) if they hold the options in order.

    Each line must contain its option and its letter as a standalone token, and all four must
    share one shape (the template's ``choice_line``); None otherwise.
    """
    lines = question.split("\n")
    if len(lines) <= len(LETTERS):
        return None
    shapes = set()
    for letter, option, line in zip(LETTERS, choices, lines[-len(LETTERS) :]):
        at = line.rfind(option)
        if at < 0 or not option:
            return None
        rest = line[:at] + "\x00" + line[at + len(option) :]
        match = _LETTER[letter].search(rest)
        if match is None:
            return None
        shapes.add(rest[: match.start()] + "\x01" + rest[match.end() :])
    return shapes.pop() if len(shapes) == 1 else None


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateFinding:
    """A statistical finding: rule, severity and a readable detail."""

    rule: str
    severity: str
    detail: str


def judge(hits: int, n: int, expected: float, min_effect: float = MIN_BALANCE_EFFECT, gross: bool = True) -> str | None:
    """Severity of ``hits`` out of ``n`` against an expected rate (None when fine); see module doc."""
    if expected in (0.0, 1.0):
        return VIOLATION if n and hits != round(n * expected) else None
    if n < MIN_COUNT:
        return None
    rate = hits / n
    z = (hits - n * expected) / math.sqrt(n * expected * (1.0 - expected))
    if abs(z) < Z_LIMIT:
        return None
    if gross and n >= GROSS_MIN and abs(rate - expected) >= GROSS_EFFECT:
        return VIOLATION
    return WARNING if abs(rate - expected) >= min_effect else None


def _z(hits: int, n: int, p: float) -> float:
    return (hits - n * p) / math.sqrt(n * p * (1 - p)) if n and 0 < p < 1 else 0.0


def evaluate(
    counts: Counter[StatKey], taxonomy: Taxonomy, no_pathology_rate: float | str
) -> tuple[list[RateFinding], dict[str, Any]]:
    """Rate findings and the statistics section of the report, from merged counters."""
    findings: list[RateFinding] = []
    stats: dict[str, Any] = {
        "letters": _letters(counts, findings),
        "closed": _closed(counts, findings),
        "no_pathology_option": _no_pathology(counts, taxonomy, no_pathology_rate, findings),
        "name_cues": _name_cues(counts, taxonomy, findings),
        "option_sets": _option_sets(counts, taxonomy),
    }
    return findings, stats


SET_MIN = 100  # questions a set needs before its own right-rates are reported


def _option_sets(counts: Counter[StatKey], taxonomy: Taxonomy) -> dict[str, Any]:
    """Per split and multiple-choice slot: the exact unavoidable residual from the answers' shares,
    and the option set whose members' right-rates stray furthest from that construction.

    Every set's members are right 1/4 of the time each when the split allows exact
    exchangeability; the report shows the largest observed deviation (with its z) among sets
    asked at least SET_MIN times, as evidence, not a verdict (thousands of sets are compared).
    """
    from .distractors import pool_residual

    sets: dict[tuple[str, str], dict[tuple[str, tuple[str, ...]], Counter[str]]] = {}
    for key, n in counts.items():
        if key[0] == "set":
            _, split, slot, pool, choices, answer = key
            sets.setdefault((split, slot), {}).setdefault((pool, choices), Counter())[answer] += n
    pools = taxonomy.option_pools(contained=True)
    out: dict[str, Any] = {}
    for (split, slot), table in sorted(sets.items()):
        answers: dict[str, Counter[str]] = {}
        for (pool, _), seen in table.items():
            answers.setdefault(pool, Counter()).update(seen)
        total = sum(sum(c.values()) for c in answers.values())
        residual = pool_residual(answers, pools, 4)
        worst: dict[str, Any] | None = None
        for (pool, choices), seen in table.items():
            n = sum(seen.values())
            if n < SET_MIN:
                continue
            for choice in choices:
                rate = seen.get(choice, 0) / n
                z = (rate - 0.25) / (0.25 * 0.75 / n) ** 0.5
                if worst is None or abs(z) > abs(worst["z"]):
                    worst = {"region": pool or None, "options": list(choices), "option": choice, "questions": n,
                             "right_rate": round(rate, 4), "z": round(z, 2)}
        out[f"{slot}/{split}"] = {
            "sets": len(table),
            "questions": total,
            "unavoidable_residual": round(100 * residual, 2),
            "largest_set_deviation": worst,
        }
    return out


def _letters(counts: Counter[StatKey], findings: list[RateFinding]) -> dict[str, Any]:
    table: dict[str, dict[str, dict[str, int]]] = {}
    for (kind, *rest), n in counts.items():
        if kind == "letter":
            split, slot, letter = rest
            table.setdefault(split, {}).setdefault(slot, dict.fromkeys(LETTERS, 0))[letter] += n
    for split, slots in sorted(table.items()):
        for slot, letters in sorted(slots.items()):
            total = sum(letters.values())
            if split == "test":
                if max(letters.values()) - min(letters.values()) > 1:
                    findings.append(RateFinding("benchmark_letters", VIOLATION, f"{split} {slot}: {letters}"))
                continue
            for letter, hits in letters.items():
                severity = judge(hits, total, 1 / len(LETTERS))
                if severity:
                    findings.append(
                        RateFinding(
                            "letter_balance",
                            severity,
                            f"{split} {slot}: {letter} is right in {hits / total:.1%} of {total}",
                        )
                    )
    return table


def _closed(counts: Counter[StatKey], findings: list[RateFinding]) -> dict[str, Any]:
    table: dict[str, dict[str, dict[str, int]]] = {}
    for (kind, *rest), n in counts.items():
        if kind == "closed":
            split, slot, answer = rest
            table.setdefault(split, {}).setdefault(slot, {"yes": 0, "no": 0})[answer] += n
    for split, slots in sorted(table.items()):
        for task in ("anatomy", "pathology"):
            yes = sum(v["yes"] for s, v in slots.items() if s.startswith(f"{task}_closed"))
            total = sum(v["yes"] + v["no"] for s, v in slots.items() if s.startswith(f"{task}_closed"))
            severity = judge(yes, total, 0.5)
            if severity:
                findings.append(
                    RateFinding(
                        "yes_no_balance", severity, f"{split} {task} closed: yes in {yes / total:.1%} of {total}"
                    )
                )
    return table


def _eligible(counts: dict[str, int], region: Any, key: str) -> int:
    """Images of a region on which ``key`` may be offered as a wrong option / closed 'no' name."""
    return sum(n for t, n in counts.items() if t != key and key not in region.conflicts_of(t))


def _true_counts(counts: Counter[StatKey], group: str) -> dict[tuple[str, str], dict[str, int]]:
    table: dict[tuple[str, str], dict[str, int]] = {}
    for (kind, *rest), n in counts.items():
        if kind == "true" and rest[0] == group:
            _, split, region, key = rest
            table.setdefault((split, region), {})[key] = n
    return table


def _cue_table(counts: Counter[StatKey]) -> dict[tuple[str, str, str], dict[str, list[int]]]:
    """(family, split, region) -> name key -> [right, appearances]."""
    table: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    for (kind, *rest), n in counts.items():
        if kind == "cue":
            family, split, region, key, right = rest
            cell = table.setdefault((family, split, region), {}).setdefault(key, [0, 0])
            cell[0] += n if right else 0
            cell[1] += n
    return table


def _saturated(
    family: str, split: str, region: str, key: str, wrong: int, taxonomy: Taxonomy, truth: dict[Any, Any]
) -> bool:
    """Offered on every image where it may be: a dominant name no sampler can match."""
    if family.startswith("anatomy"):
        per_region = {r: sum(v.values()) for (s, r), v in truth["anatomy"].items() if s == split}
        eligible = sum(n for r, n in per_region.items() if r != key)
    else:
        eligible = _eligible(truth["pathology"].get((split, region), {}), taxonomy.regions[region], key)
    return eligible > 0 and wrong >= eligible


def _no_pathology(
    counts: Counter[StatKey], taxonomy: Taxonomy, rate: float | str, findings: list[RateFinding]
) -> dict[str, Any]:
    offered: dict[tuple[str, str], list[int]] = {}
    for (kind, *rest), n in counts.items():
        if kind == "no_pathology":
            split, region, was_offered = rest
            cell = offered.setdefault((split, region), [0, 0])
            cell[0] += n if was_offered else 0
            cell[1] += n
    cues = _cue_table(counts)
    truth = {"pathology": _true_counts(counts, "pathology"), "anatomy": _true_counts(counts, "anatomy")}
    normal = taxonomy.normal_folder
    report: dict[str, Any] = {"config": rate, "splits": {}}
    for split in sorted({s for s, _ in offered}):
        rows = {r: v for (s, r), v in offered.items() if s == split}
        hits, total = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
        split_report: dict[str, Any] = {"abnormal_questions": total, "offered": hits, "regions": {}}
        if rate != MATCHED:
            severity = judge(hits, total, float(rate))
            if severity:
                findings.append(
                    RateFinding(
                        "no_pathology_rate",
                        severity,
                        f"{split}: offered on {hits / total:.1%} of {total} abnormal images, config {rate}",
                    )
                )
        for region, (k, n) in sorted(rows.items()):
            names = cues.get(("pathology_mc", split, region), {})
            right, seen = names.get(normal, [0, 0])
            limited = _saturated("pathology_mc", split, region, normal, seen - right, taxonomy, truth)
            others = [
                v
                for key, v in names.items()
                if key != normal and not _saturated("pathology_mc", split, region, key, v[1] - v[0], taxonomy, truth)
            ]
            comparison = sum(v[0] for v in others) / max(1, sum(v[1] for v in others)) if others else 0.25
            split_report["regions"][region] = {
                "abnormal_questions": n,
                "offered": k,
                "right_rate": right / seen if seen else None,
                "others_right_rate": comparison,
                "limited": limited,
            }
            if rate == MATCHED and not limited and seen:
                severity = judge(right, seen, comparison)
                if severity:
                    findings.append(
                        RateFinding(
                            "no_pathology_rate",
                            severity,
                            f"{split} {region}: '{taxonomy.normal_answer}' right in {right / seen:.1%} of {seen} "
                            f"appearances, other options {comparison:.1%} (config matched)",
                        )
                    )
        report["splits"][split] = split_report
    return report


def _display(taxonomy: Taxonomy, family: str, region: str, key: str) -> str:
    if family.startswith("anatomy"):
        return taxonomy.regions[key].name
    if family == "pathology_closed" and key == taxonomy.normal_folder:
        return f"{taxonomy.normal_name} (wording)"
    return taxonomy.answer_text(region, key)


def _name_cues(counts: Counter[StatKey], taxonomy: Taxonomy, findings: list[RateFinding]) -> dict[str, Any]:
    cues = _cue_table(counts)
    truth = {"pathology": _true_counts(counts, "pathology"), "anatomy": _true_counts(counts, "anatomy")}
    overall: dict[tuple[str, str], list[int]] = {}
    for (family, split, _), names in cues.items():
        cell = overall.setdefault((family, split), [0, 0])
        for right, seen in names.values():
            cell[0] += right
            cell[1] += seen
    listed = []
    for (family, split, region), names in sorted(cues.items()):
        right_all, seen_all = overall[(family, split)]
        p = right_all / seen_all
        for key, (right, seen) in sorted(names.items()):
            if judge(right, seen, p, min_effect=MIN_EFFECT, gross=False) is None or p in (0.0, 1.0):
                continue
            limited = _saturated(family, split, region, key, seen - right, taxonomy, truth)
            entry = {
                "family": family,
                "split": split,
                "region": region or None,
                "name": _display(taxonomy, family, region, key),
                "appearances": seen,
                "right_rate": right / seen,
                "slot_rate": p,
                "z": round(_z(right, seen, p), 2),
                "limited": limited,
            }
            listed.append(entry)
            where = f" ({region})" if region else ""
            note = "; offered wherever possible (dominant class)" if limited else ""
            findings.append(
                RateFinding(
                    "name_cue",
                    WARNING,
                    f"{split} {family}{where}: '{entry['name']}' right in {right / seen:.1%} of {seen}, slot {p:.1%}{note}",
                )
            )
    return {
        "overall": {f"{family}/{split}": r / s for (family, split), (r, s) in sorted(overall.items()) if s},
        "flagged": listed,
    }
