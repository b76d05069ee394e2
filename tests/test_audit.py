"""radvqa audit: a fair generated dataset passes, a deliberately biased copy fails."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from test_evaluate import read, write
from typer.testing import CliRunner

from radvqa import audit as audit_module
from radvqa.attacks import MC_ATTACKS
from radvqa.audit import AUDIT_SLOTS, Split, _compare, audit_dataset, clustered_se
from radvqa.cli import app
from radvqa.config import Config
from radvqa.dataset import generate_dataset
from radvqa.errors import EvaluateError, MissingDependencyError
from radvqa.sample import write_copy
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet

runner = CliRunner()
IMAGES_PER_REGION = 400


@pytest.fixture(scope="module")
def fair_dataset(
    tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy, templates: TemplateSet, config: Config
) -> Path:
    """A generated dataset whose regions hold equal image shares.

    With every region under a quarter of the images and every class under a quarter of its
    region, the generator can match every option and closed name exactly, so a text-only model
    has nothing to learn: the audit must pass.
    """
    root = tmp_path_factory.mktemp("fair-copy")
    per_region = Counter(c.region for c in taxonomy.classes)
    counts = {c.index: max(5, round(IMAGES_PER_REGION / per_region[c.region])) for c in taxonomy.classes}
    write_copy(root, taxonomy, counts, quirks=False)
    out = tmp_path_factory.mktemp("fair-dataset") / "out"
    generate_dataset(root, out, config, taxonomy, templates)
    return out


def rewrite(dataset: Path, dest: Path, change: Any) -> Path:
    """Copy a dataset, passing every instruct and benchmark record through ``change``."""
    shutil.copytree(dataset, dest)
    for path in sorted(dest.glob("instruct/*.jsonl")) + sorted(dest.glob("benchmark/*.jsonl")):
        write(path, [change(r) for r in read(path)])
    return dest


def answer_in_a(record: dict[str, Any]) -> dict[str, Any]:
    """Move the right option of every multiple-choice question to position A."""
    if record["question_type"] != "multiple_choice":
        return record
    choices = list(record["choices"])
    right = choices.pop("ABCD".index(record["answer"]))
    choices.insert(0, right)
    stem = record["question"].split("\n")[0]
    question = "\n".join([stem] + [f"{L}. {c}" for L, c in zip("ABCD", choices)])
    return record | {"choices": choices, "answer": "A", "question": question}


def test_fair_generated_dataset_passes(fair_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    result = runner.invoke(app, ["audit", str(fair_dataset), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    report = orjson.loads(out.read_bytes())
    assert report["passed"] is True
    assert set(report["slots"]) == set(AUDIT_SLOTS)
    for slot, entry in report["slots"].items():
        for name, model in entry["models"].items():
            assert model["gain"] <= report["max_gain"], (slot, name, model)
    assert report["slots"]["anatomy_mc"]["baseline"] == 25.0
    assert report["slots"]["pathology_closed"]["baseline"] == 50.0
    assert set(report["slots"]["pathology_mc"]["models"]) == set(MC_ATTACKS)
    assert set(report["evaluations"]) == {"benchmark", "val"}
    for entry in report["evaluations"].values():
        low, high = entry["slots"]["pathology_mc"]["models"]["sampler"]["ci95"]
        assert low <= entry["slots"]["pathology_mc"]["models"]["sampler"]["gain"] <= high
        # The questions of one image answer each other: reported, never a failure.
        assert entry["cross_question"]["pathology_mc"]["accuracy"] > 60
        assert entry["passed"] is True


def test_answer_always_in_position_a_fails(fair_dataset: Path, tmp_path: Path) -> None:
    biased = rewrite(fair_dataset, tmp_path / "biased", answer_in_a)
    out = tmp_path / "audit.json"
    result = runner.invoke(app, ["audit", str(biased), "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "SHORTCUT benchmark anatomy_mc" in result.output and "SHORTCUT benchmark pathology_mc" in result.output
    report = orjson.loads(out.read_bytes())
    assert report["passed"] is False
    assert report["slots"]["anatomy_mc"]["models"]["prior"]["accuracy"] == 100.0
    assert report["slots"]["pathology_closed"]["passed"] is True  # only multiple choice was biased
    assert audit_dataset(biased, max_gain=100).passed  # --max-gain is the threshold


def test_closed_wording_that_gives_the_answer_away_fails(fair_dataset: Path, tmp_path: Path) -> None:
    def leak(record: dict[str, Any]) -> dict[str, Any]:
        if record["slot"] == "pathology_closed_no":
            return record | {"question": record["question"].rstrip("?") + " at all?"}
        return record

    report = audit_dataset(rewrite(fair_dataset, tmp_path / "leaky", leak))
    closed = next(s for s in report.slots if s.slot == "pathology_closed")
    assert not closed.passed
    assert closed.models["bow"].flagged and closed.models["bow"].accuracy > 90
    assert not closed.models["prior"].flagged  # the prior cannot see wording


def test_a_gain_must_exceed_max_gain_and_be_significant() -> None:
    right = np.array([True] * 40 + [False] * 60)  # 40% against a 25% baseline on 100 questions
    result = _compare(right, None, 25.0, max_gain=5.0, z=3.0)
    assert result.gain == pytest.approx(15.0)
    # The observed spread (0.4 * 0.6, small-sample corrected) exceeds the null's 0.25 * 0.75.
    assert result.se == pytest.approx(100 * (100 / 99 * (40 * 0.6**2 + 60 * 0.4**2)) ** 0.5 / 100)
    assert result.flagged  # z = 3.05
    assert result.low == pytest.approx(15.0 - 1.96 * result.se) and result.high == pytest.approx(15.0 + 1.96 * result.se)
    assert not _compare(right, None, 25.0, max_gain=20.0, z=3.0).flagged  # within max-gain
    small = np.array([True] * 4 + [False] * 6)  # the same 40% on 10 questions is noise
    assert not _compare(small, None, 25.0, max_gain=5.0, z=3.0).flagged
    # Against a learned baseline only the questions where the two disagree carry the gain.
    baseline = np.array([True] * 30 + [False] * 70)
    paired = _compare(right, baseline, 30.0, max_gain=5.0, z=3.0)
    assert paired.se == pytest.approx(100 * (100 / 99 * (10 * 0.9**2 + 90 * 0.1**2)) ** 0.5 / 100)
    assert paired.flagged  # 10 more right, none fewer: z = 3.3


def test_standard_errors_are_clustered_by_image() -> None:
    """Two questions of one image that are right or wrong together count as one observation."""
    once = np.array([True] * 30 + [False] * 70)
    twice = np.repeat(once, 2)
    images = [str(i // 2) for i in range(200)]
    alone = clustered_se(once.astype(float), [str(i) for i in range(100)])
    assert clustered_se(twice.astype(float), images) == pytest.approx(alone)
    assert clustered_se(twice.astype(float), [str(i) for i in range(200)]) < alone * 0.75


def test_audit_needs_a_dataset_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 1
    assert "no instruct/train-" in result.output
    with pytest.raises(EvaluateError, match="not a dataset folder"):
        audit_dataset(tmp_path / "nope")


def test_missing_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    assert audit_module.is_available() is False
    with pytest.raises(MissingDependencyError) as info:
        audit_dataset(tmp_path)
    assert "radvqa[audit]" in str(info.value.hint)


class RecordingBar:
    """A progress bar that remembers what it was told (the ProgressBar protocol)."""

    def __init__(self, total: int | None, desc: str, log: list["RecordingBar"]) -> None:
        self.total, self.desc, self.done, self.closed = total, desc, 0, False
        log.append(self)

    def update(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "RecordingBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_audit_reports_progress_through_the_progress_factory(fair_dataset: Path) -> None:
    bars: list[RecordingBar] = []
    report = audit_dataset(fair_dataset, max_train=500, progress=lambda total, desc: RecordingBar(total, desc, bars))
    records = orjson.loads((fair_dataset / "manifest.json").read_bytes())["records"]
    read, fit = bars
    scored = records["benchmark"]["test"] + records["instruct"]["val"]
    assert (read.desc, read.total) == ("audit: read", records["instruct"]["train"] + scored)
    assert read.done == read.total  # every record read was counted, once
    questions = sum(e.questions for e in report.evaluations)
    assert (fit.desc, fit.total, fit.done) == ("audit: fit and score", questions, questions)
    assert read.closed and fit.closed


# --- the attackers against the sampler before and after exchangeable option sets ----------------


def _mc_records(
    taxonomy: Taxonomy, counts: np.ndarray, legacy: bool, seed: int, source: str, limit: int | None = None
) -> Split:
    """pathology_mc questions for images in ``counts`` (per class), options drawn by the old or new sampler."""
    from legacy_distractors import fit_inclusion, place_answer, systematic_draw

    from radvqa.distractors import DrawTable, fit_sets
    from radvqa.generate import region_counts

    rng = np.random.default_rng(seed)
    _, per_name = region_counts(taxonomy, counts)
    split = Split(source=source, files=[])
    serial = 0
    for r, region in enumerate(taxonomy.regions.values()):
        names = region.pathologies
        texts = [taxonomy.answer_text(region.key, n) for n in names]
        answers = np.repeat(np.arange(len(names)), per_name[r].astype(np.int64))
        if limit is not None and len(answers) > limit:
            answers = rng.choice(answers, limit, replace=False)
        if not len(answers):
            continue
        if legacy:  # the draw as it was: conflicts excluded relative to the answer only
            eligible = ~np.eye(len(names), dtype=bool)
            for t, name in enumerate(names):
                for other in region.conflicts_of(name):
                    eligible[t, names.index(other)] = False
            probs = fit_inclusion(per_name[r], eligible, 3)[answers]
            wrong = systematic_draw(probs, rng.random(probs.shape), rng.random(len(answers)), 3)
        else:
            fit = fit_sets(per_name[r], 4, taxonomy.exclusions(region.key, True))
            wrong = DrawTable.build([fit.conditional(t) for t in range(len(names))], 4).draw(answers, rng.random(len(answers)))
        letters = rng.integers(0, 4, len(answers))
        options = place_answer(answers, wrong, letters, rng.random((len(answers), 3)))
        for row, letter in zip(options.tolist(), letters.tolist()):
            choices = [texts[o] for o in row]
            question = "\n".join([f"What is the most likely finding in the {region.name}?"] + [f"{L}. {c}" for L, c in zip("ABCD", choices)])
            split.groups["pathology_mc"].append({
                "id": f"{seed:04x}{serial:012x}-pathology_mc", "slot": "pathology_mc", "task": "pathology",
                "question_type": "multiple_choice", "question": question, "choices": choices,
                "answer": "ABCD"[letter], "region": region.name, "modality": "CT",
            })
            serial += 1
    return split


def _benchmark_counts(taxonomy: Taxonomy, group_caps: bool) -> np.ndarray:
    """Per-class counts of a 1,000-image benchmark drawn from a full-scale test pool with the real imbalance."""
    from conftest import shaped_counts

    from radvqa.split import BenchmarkSettings, _plan_counts

    pool = np.zeros(len(taxonomy.classes))
    for index, n in shaped_counts(taxonomy, 0.074).items():
        pool[index] = n
    warnings: list[str] = []
    return _plan_counts(pool, taxonomy, 1000, BenchmarkSettings(), warnings, group_caps=group_caps).astype(np.float64)


@pytest.mark.parametrize("legacy", [True, False], ids=["old sampler", "exchangeable sets"])
def test_audit_flags_the_old_sampler_and_passes_the_new_one(taxonomy: Taxonomy, legacy: bool) -> None:
    """A frozen copy of the draw before exchangeable option sets leaked 10-15 points on the
    benchmark to text-only readers; the audit must catch it, and must pass the new draw."""
    from conftest import shaped_counts

    from radvqa.audit import audit_splits

    train_counts = np.zeros(len(taxonomy.classes))
    for index, n in shaped_counts(taxonomy, 0.2).items():
        train_counts[index] = n
    train = _mc_records(taxonomy, train_counts, legacy, 1, "instruct train", limit=1500)
    bench = _mc_records(taxonomy, _benchmark_counts(taxonomy, group_caps=not legacy), legacy, 2, "benchmark")
    report = audit_splits(train, [bench], taxonomy)
    slot = next(s for s in report.slots if s.slot == "pathology_mc")
    if legacy:
        assert not slot.passed
        flagged = {name for name, m in slot.models.items() if m.flagged}
        assert flagged & {"sampler", "conflict_rule", "ranker", "set_lookup", "sampler_train"}, slot.models
        assert max(m.gain for m in slot.models.values()) > 8
    else:
        assert slot.baseline == pytest.approx(25.0, abs=0.05)  # the new caps make the benchmark exact
        assert slot.passed, {n: (m.accuracy, m.z) for n, m in slot.models.items()}
        assert max(m.gain for m in slot.models.values()) < 4.5
