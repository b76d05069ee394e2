"""radvqa validate / validate-distractors: clean datasets pass, each corruption is caught by its rule."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from radvqa.checks import MIN_COUNT, VIOLATION, WARNING, judge
from radvqa.cli import app
from radvqa.config import Config
from radvqa.dataset import class_counts, generate_dataset, image_slice
from radvqa.generate import LETTERS, Slice, build_plan, render
from radvqa.sample import write_copy
from radvqa.source import read_source
from radvqa.taxonomy import Taxonomy, load_taxonomy
from radvqa.templates import TemplateSet, load_templates
from radvqa.validate import validate_dataset
from radvqa.writers import write_json

REPO = Path(__file__).resolve().parent.parent
BENCHMARK = "benchmark/test-00000-of-00001.jsonl"
TRAIN = "instruct/train-00000-of-00001.jsonl"
VAL = "instruct/val-00000-of-00001.jsonl"
CAPTIONS = "alignment/train-00000-of-00001.jsonl"
runner = CliRunner()


# -- helpers ---------------------------------------------------------------------------------


def read(out: Path, shard: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / shard).read_bytes().splitlines()]


def write(out: Path, shard: str, records: list[dict[str, Any]]) -> None:
    (out / shard).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def reseal(out: Path) -> None:
    """Recompute the manifest's shard sha256/counts and records per config/split after an edit."""
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    shards, records = [], {}
    for path in sorted(p for c in ("alignment", "instruct", "benchmark") for p in (out / c).glob("*.jsonl")):
        data = path.read_bytes()
        count = data.count(b"\n")
        rel = path.relative_to(out).as_posix()
        shards.append({"path": rel, "records": count, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        config, split = rel.split("/")[0], path.name.split("-")[0]
        records.setdefault(config, {})[split] = records.get(config, {}).get(split, 0) + count
    manifest["shards"], manifest["records"] = shards, records
    write_json(out / "manifest.json", manifest)


def edit(
    out: Path, shard: str, pick: Callable[[dict[str, Any]], bool], change: Callable[[dict[str, Any]], None]
) -> str:
    """Change the first record that ``pick`` accepts, re-seal the manifest, return its id."""
    records = read(out, shard)
    record = next(r for r in records if pick(r))
    change(record)
    write(out, shard, records)
    reseal(out)
    return str(record["id"])


def set_choices(record: dict[str, Any], choices: list[str]) -> None:
    """Replace the options (question lines and letter follow, like the generator writes them)."""
    stem = record["question"].split("\n")[: -len(LETTERS)]
    record["choices"] = choices
    record["question"] = "\n".join(stem + [f"{L}. {c}" for L, c in zip(LETTERS, choices)])
    if record["answer_text"] in choices:
        record["answer"] = LETTERS[choices.index(record["answer_text"])]


def replace_wrong(record: dict[str, Any], text: str) -> None:
    choices = list(record["choices"])
    choices[next(i for i, c in enumerate(choices) if c != record["answer_text"])] = text
    set_choices(record, choices)


def run(command: str, out: Path, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report.json"
    result = runner.invoke(app, [command, str(out), "--json", str(report), *extra])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, orjson.loads(report.read_bytes())


def examples(report: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [e for e in report["examples"] if e["rule"] == rule]


def add_benchmark(out: Path, copy: Path, taxonomy: Taxonomy, templates: TemplateSet, config: Config) -> None:
    """A benchmark shard like the real one: test images, held-out paraphrases, balanced letters."""
    if (out / BENCHMARK).exists():
        return
    table, _ = read_source(copy, taxonomy, config.split_ratios)
    rows = table[table["split"] == "test"]
    plan = build_plan(taxonomy, templates, config, "test", class_counts(rows, taxonomy), variant="benchmark")
    base = image_slice(rows)
    n = len(base)
    images = Slice(base.ids, base.images, base.classes, base.keys, np.arange(n) % 4, (np.arange(n) + 1) % 4)
    (out / "benchmark").mkdir(exist_ok=True)
    (out / BENCHMARK).write_bytes(b"".join(render(plan, images, "instruct")))
    reseal(out)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory,
    sample_dataset: Path,
    sample_copy: Path,
    taxonomy: Taxonomy,
    templates: TemplateSet,
    config: Config,
) -> Path:
    """The sample dataset plus a benchmark shard; copied before any edit."""
    out = tmp_path_factory.mktemp("validate") / "out"
    shutil.copytree(sample_dataset, out)
    add_benchmark(out, sample_copy, taxonomy, templates, config)
    return out


@pytest.fixture
def out(base: Path, tmp_path: Path) -> Path:
    target = tmp_path / "out"
    shutil.copytree(base, target)
    return target


def generate(
    tmp_path: Path, copy: Path, config: Config, taxonomy: Taxonomy | None = None, templates: TemplateSet | None = None
) -> Path:
    out = tmp_path / "generated"
    generate_dataset(copy, out, config, taxonomy or load_taxonomy(), templates or load_templates())
    return out


# -- clean datasets ----------------------------------------------------------------------------


def test_fresh_dataset_validates_clean(base: Path, sample_copy: Path, tmp_path: Path) -> None:
    code, report = run("validate", base, tmp_path, "--root", str(sample_copy))
    assert code == 0 and report["violations"] == {}
    assert report["records"] == sum(n for splits in report_records(base).values() for n in splits.values())
    # the sample's abdomen holds over a third of the images: a real cue, listed as a warning only
    assert set(report["warnings"]) <= {"name_cue"}
    code, report = run("validate-distractors", base, tmp_path)
    assert code == 0 and report["violations"] == {}
    letters = report["stats"]["letters"]["test"]["pathology_mc"].values()
    assert sum(letters) > 0 and max(letters) - min(letters) <= 1


def report_records(out: Path) -> dict[str, dict[str, int]]:
    return orjson.loads((out / "manifest.json").read_bytes())["records"]


def test_workers_give_the_same_report(base: Path) -> None:
    one, two = validate_dataset(base, workers=1), validate_dataset(base, workers=2)
    assert one.to_dict()["stats"] == two.to_dict()["stats"]
    assert one.counts == two.counts and one.records == two.records


def test_custom_templates_validate_clean(tmp_path: Path, sample_copy: Path, config: Config) -> None:
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "templates", folder)
    questions = folder / "questions.yaml"
    text = questions.read_text()
    text = text.replace('choice_line: "{letter}. {option}"', 'choice_line: "({letter}) {option}"')
    text = text.replace(
        "Is there evidence of {pathology_phrase}?", "In this {region} study, do you see {pathology_phrase}?"
    )
    text = text.replace("Can you see the {region} in this image?", "Was the {region} scanned here?")
    questions.write_text(text)
    out = generate(tmp_path, sample_copy, config, templates=load_templates(folder))
    assert "(A) " in (out / TRAIN).read_text()
    code, report = run("validate", out, tmp_path)
    assert code == 0, report["violations"]


def test_recorded_taxonomy_is_the_one_checked(tmp_path: Path, sample_copy: Path, config: Config) -> None:
    custom = tmp_path / "taxonomy.yaml"
    custom.write_text(
        (REPO / "configs" / "taxonomy.yaml").read_text().replace("name: pulmonary nodule", "name: lung nodule")
    )
    out = generate(tmp_path, sample_copy, config, taxonomy=load_taxonomy(custom))
    code, report = run("validate", out, tmp_path)
    assert code == 0, report["violations"]
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    del manifest["taxonomy"]  # falls back to the packaged taxonomy, which says "pulmonary nodule"
    write_json(out / "manifest.json", manifest)
    code, report = run("validate", out, tmp_path)
    assert code == 1 and "class_mismatch" in report["violations"]


def test_fixed_no_pathology_rate_is_checked(tmp_path: Path, sample_copy: Path, config: Config) -> None:
    out = generate(tmp_path, sample_copy, Config(**{**config.to_dict(), "no_pathology_option_rate": 0.0}))
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 0, report["violations"]
    assert report["stats"]["no_pathology_option"]["splits"]["train"]["offered"] == 0
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    manifest["config"]["no_pathology_option_rate"] = 1.0  # claims it was always offered
    write_json(out / "manifest.json", manifest)
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 1 and set(report["violations"]) == {"no_pathology_rate"}


def test_dominant_class_gives_warnings_not_violations(tmp_path: Path, taxonomy: Taxonomy, config: Config) -> None:
    copy = tmp_path / "copy"
    counts = {c.index: 4 for c in taxonomy.classes}
    knee_normal = next(c.index for c in taxonomy.classes if c.region == "knee" and not c.is_abnormal)
    counts[knee_normal] = 400
    write_copy(copy, taxonomy, counts, quirks=False)
    out = generate(tmp_path, copy, config)
    code, report = run("validate", out, tmp_path)
    assert code == 0, report["violations"]
    flagged = {(c["family"], c["name"]) for c in report["stats"]["name_cues"]["flagged"]}
    assert ("pathology_mc", "no pathology seen") in flagged
    assert report["stats"]["no_pathology_option"]["splits"]["train"]["regions"]["knee"]["limited"] is True


# -- corruptions: one rule each ----------------------------------------------------------------


def is_slot(slot: str, region: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["slot"] == slot and (region is None or r["region"] == region)


def test_cross_region_distractor(out: Path, tmp_path: Path) -> None:
    sample = edit(out, TRAIN, is_slot("pathology_mc", "abdomen"), lambda r: replace_wrong(r, "plantar plate tear"))
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 1 and report["violations"] == {"option_not_in_region": 1}
    [example] = examples(report, "option_not_in_region")
    assert example["id"] == sample and "plantar plate tear" in example["detail"] and example["file"] == TRAIN


def test_duplicated_option(out: Path, tmp_path: Path) -> None:
    def duplicate(record: dict[str, Any]) -> None:
        wrong = [c for c in record["choices"] if c != record["answer_text"]]
        replace_wrong(record, wrong[1])

    sample = edit(out, VAL, is_slot("anatomy_mc"), duplicate)
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 1 and report["violations"] == {"duplicate_option": 1}
    assert examples(report, "duplicate_option")[0]["id"] == sample


def test_wrong_letter(out: Path, tmp_path: Path) -> None:
    def shift(record: dict[str, Any]) -> None:
        record["answer"] = LETTERS[(LETTERS.index(record["answer"]) + 1) % 4]

    sample = edit(out, TRAIN, is_slot("pathology_mc"), shift)
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 1 and report["violations"] == {"wrong_letter": 1}
    assert examples(report, "wrong_letter")[0]["id"] == sample


def test_conflict_group_option(out: Path, tmp_path: Path) -> None:
    # bowel mass conflicts with bowel abnormality and bowel inflammation
    def offer_conflict(record: dict[str, Any]) -> None:
        replace_wrong(record, "bowel inflammation")

    def pick(record: dict[str, Any]) -> bool:
        return (
            record["slot"] == "pathology_mc"
            and record["pathology"] == "bowel mass"
            and "bowel inflammation" not in record["choices"]
        )

    sample = edit(out, TRAIN, pick, offer_conflict)
    code, report = run("validate-distractors", out, tmp_path)
    # The answer and the offered option also may not share a set.
    assert code == 1 and report["violations"] == {"conflict_option": 1, "excluded_pair": 1}
    [example] = examples(report, "conflict_option")
    assert example["id"] == sample and "bowel inflammation" in example["detail"]


def test_two_wrong_options_that_may_not_stand_together(out: Path, tmp_path: Path) -> None:
    """Neither is the answer, but a reader could cross both out: one conflict group, or one text in the other."""
    def offer_pair(record: dict[str, Any]) -> None:
        wrong = [i for i, c in enumerate(record["choices"]) if c != record["answer_text"]]
        choices = list(record["choices"])
        choices[wrong[0]], choices[wrong[1]] = "bladder pathology", "gallbladder pathology"
        set_choices(record, choices)

    def pick(record: dict[str, Any]) -> bool:
        return record["slot"] == "pathology_mc" and record["region"] == "abdomen" and "bladder" not in record["pathology"] \
            and "gallstone" not in record["pathology"] and "biliary" not in record["pathology"]

    sample = edit(out, TRAIN, pick, offer_pair)
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 1 and report["violations"] == {"excluded_pair": 1}, report["violations"]
    [example] = examples(report, "excluded_pair")
    assert example["id"] == sample and "gallbladder pathology" in example["detail"]
    sets = report["stats"]["option_sets"]
    assert set(sets) >= {"pathology_mc/train", "anatomy_mc/train"}
    assert sets["pathology_mc/train"]["sets"] > 10 and sets["pathology_mc/train"]["unavoidable_residual"] >= 0


def test_closed_no_naming_the_true_pathology(out: Path, tmp_path: Path) -> None:
    records = read(out, TRAIN)
    yes = next(r for r in records if r["slot"] == "pathology_closed_yes" and r["is_abnormal"])
    no = next(r for r in records if r["slot"] == "pathology_closed_no" and r["image"] == yes["image"])
    no["question"], no["template_id"] = yes["question"], yes["template_id"]
    write(out, TRAIN, records)
    reseal(out)
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 1 and report["violations"] == {"closed_no_is_true": 1}
    assert examples(report, "closed_no_is_true")[0]["id"] == no["id"]


def test_unfilled_placeholder(out: Path, tmp_path: Path) -> None:
    sample = edit(out, TRAIN, is_slot("anatomy_open"), lambda r: r.update(question="Which {region} is shown?"))
    code, report = run("validate", out, tmp_path)
    assert code == 1 and report["violations"] == {"unfilled_placeholder": 1}
    [example] = examples(report, "unfilled_placeholder")
    assert example["id"] == sample and "{region}" in example["detail"]


def test_raw_folder_name(out: Path, tmp_path: Path) -> None:
    caption = "MRI of the ankle and foot showing a Plantar_plate_tear."
    sample = edit(out, CAPTIONS, lambda r: True, lambda r: r.update(answer=caption, answer_text=caption))
    code, report = run("validate", out, tmp_path)
    assert code == 1 and report["violations"] == {"raw_folder_name": 1}
    [example] = examples(report, "raw_folder_name")
    assert example["id"] == sample and "'Plantar_plate_tear'" in example["detail"]


def test_truncated_shard(out: Path, tmp_path: Path) -> None:
    data = (out / VAL).read_bytes()
    last = data[:-1].rsplit(b"\n", 1)[1]
    (out / VAL).write_bytes(data[: len(data) - len(last) // 2])
    code, report = run("validate", out, tmp_path)
    assert code == 1 and set(report["violations"]) == {"bad_json", "shard_checksum"}
    [broken] = examples(report, "bad_json")
    assert broken["id"] == orjson.loads(data.splitlines()[-1])["id"] and broken["file"] == VAL
    assert examples(report, "shard_checksum")[0]["file"] == VAL


def test_checksum_mismatch(out: Path, tmp_path: Path) -> None:
    data = (out / TRAIN).read_bytes()
    (out / TRAIN).write_bytes(data.replace(b'"split":"train"', b'"split": "train"', 1))  # same records
    code, report = run("validate", out, tmp_path)
    assert code == 1 and report["violations"] == {"shard_checksum": 1}
    assert examples(report, "shard_checksum")[0]["file"] == TRAIN


def test_benchmark_image_copied_into_train(out: Path, tmp_path: Path) -> None:
    bench = read(out, BENCHMARK)
    copied = [dict(r, split="train") for r in bench if r["image"] == bench[0]["image"]]
    write(out, TRAIN, read(out, TRAIN) + copied)
    reseal(out)
    code, report = run("validate", out, tmp_path)
    # copied records also carry held-out benchmark wording and the benchmark ids
    assert code == 1 and report["violations"] == {"benchmark_leak": 9, "duplicate_id": 9, "held_out_template": 9}
    leaks = examples(report, "benchmark_leak")
    assert {e["id"] for e in leaks} == {r["id"] for r in copied} and leaks[0]["detail"] == bench[0]["image"]
    assert code == 1 and {e["id"] for e in examples(report, "duplicate_id")} == {r["id"] for r in copied}


def test_missing_image(out: Path, sample_copy: Path, tmp_path: Path) -> None:
    sample = edit(out, CAPTIONS, lambda r: True, lambda r: r.update(image=r["image"].replace(".png", "-gone.png")))
    code, report = run("validate", out, tmp_path, "--root", str(sample_copy))
    assert code == 1 and report["violations"] == {"missing_image": 1}
    assert examples(report, "missing_image")[0]["id"] == sample


def test_unbalanced_benchmark_letters(out: Path, tmp_path: Path) -> None:
    def move_to_a(record: dict[str, Any]) -> None:
        set_choices(record, record["choices"][2:] + record["choices"][:2])  # C -> A

    edit(out, BENCHMARK, lambda r: r["slot"] == "anatomy_mc" and r["answer"] == "C", move_to_a)
    code, report = run("validate-distractors", out, tmp_path)
    assert code == 1 and report["violations"] == {"benchmark_letters": 1}
    assert "anatomy_mc" in examples(report, "benchmark_letters")[0]["detail"]


def test_bad_fields_and_ids(out: Path, tmp_path: Path) -> None:
    records = read(out, VAL)
    records[0]["is_abnormal"] = "yes"
    del records[1]["template_id"]
    records[2]["id"] = "not-an-id"
    write(out, VAL, records)
    reseal(out)
    code, report = run("validate", out, tmp_path)
    assert code == 1 and report["violations"] == {"bad_type": 1, "missing_field": 1, "bad_id": 1}


@pytest.mark.parametrize("damage", ["no folder", "no manifest", "bad manifest", "no shards"])
def test_unreadable_folder_exits_2(out: Path, damage: str) -> None:
    target = out
    if damage == "no folder":
        target = out / "missing"
    elif damage == "no manifest":
        (out / "manifest.json").unlink()
    elif damage == "bad manifest":
        (out / "manifest.json").write_text("{not json")
    else:
        for config in ("alignment", "instruct", "benchmark"):
            shutil.rmtree(out / config)
    for command in ("validate", "validate-distractors"):
        result = runner.invoke(app, [command, str(target)])
        assert result.exit_code == 2
        assert result.output.count("\n") == 1 and result.output.startswith("ERROR: ")


# -- the statistical rule ----------------------------------------------------------------------


def test_judge_does_not_flag_noise_on_small_data() -> None:
    assert judge(MIN_COUNT - 1, MIN_COUNT - 1, 0.25) is None  # all right, but too few to say
    assert judge(14, 40, 0.25) is None  # 35%: z = 1.5
    assert judge(400, 1000, 0.25) == VIOLATION  # 40% of 1000: gross
    assert judge(2800, 10000, 0.25) == WARNING  # 28%: significant, not gross
    assert judge(25_200, 100_000, 0.25) is None  # 25.2%: significant, too small to matter
    assert judge(1, 500, 0.0) == VIOLATION and judge(0, 500, 0.0) is None  # fixed rates are exact


def test_every_rule_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    from radvqa.checks import RULES

    missing = [rule for rule in RULES if f"`{rule}`" not in readme]
    assert not missing, f"README lacks rules {missing}"
