import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from radvqa.config import Config
from radvqa.dataset import class_counts, image_slice
from radvqa.distractors import fit_sets
from radvqa import streams
from radvqa.generate import (
    _WIDTH,
    INSTRUCT_SLOTS,
    LETTERS,
    Slice,
    build_plan,
    draw_options,
    region_counts,
    render,
)
from radvqa.source import read_source
from radvqa.taxonomy import Taxonomy
from radvqa.templates import TemplateSet

FIELDS = {
    "id": str, "image": str, "split": str, "task": str, "slot": str, "question_type": str, "question": str,
    "choices": list, "answer": str, "answer_text": str, "modality": str, "region": str, "pathology": str,
    "label": str, "is_abnormal": bool, "template_id": str,
}


def read_jsonl(folder: Path, pattern: str) -> list[dict]:
    records = []
    for path in sorted(folder.glob(pattern)):
        records.extend(orjson.loads(line) for line in path.read_bytes().splitlines())
    return records


@pytest.fixture(scope="module")
def instruct(sample_dataset: Path) -> list[dict]:
    return read_jsonl(sample_dataset, "instruct/*.jsonl")


@pytest.fixture(scope="module")
def captions(sample_dataset: Path) -> list[dict]:
    return read_jsonl(sample_dataset, "alignment/*.jsonl")


def region_key(taxonomy: Taxonomy, name: str) -> str:
    return next(r.key for r in taxonomy.regions.values() if r.name == name)


def pathology_key(taxonomy: Taxonomy, region: str, answer: str) -> str:
    return next(k for k in taxonomy.regions[region].pathologies if taxonomy.answer_text(region, k) == answer)


def test_schema_and_nine_questions_per_image(instruct: list[dict], captions: list[dict]) -> None:
    for record in instruct + captions:
        assert set(record) == set(FIELDS)
        for field, kind in FIELDS.items():
            assert isinstance(record[field], kind), (field, record)
        assert record["modality"] in ("CT", "MRI")
        assert record["split"] in ("train", "val")
    per_image = defaultdict(list)
    for record in instruct:
        per_image[record["image"]].append(record["slot"])
    assert all(slots == list(INSTRUCT_SLOTS) for slots in per_image.values())
    assert set(per_image) == {c["image"] for c in captions}
    assert len({r["id"] for r in instruct + captions}) == len(instruct) + len(captions)


def test_caption_reads_like_the_paper(captions: list[dict]) -> None:
    texts = {c["answer"] for c in captions}
    assert "MRI of the ankle and foot showing a plantar plate tear." in texts
    normal = [c for c in captions if not c["is_abnormal"]]
    assert normal and all("showing" not in c["answer"] for c in normal)


def test_answers_by_type(instruct: list[dict]) -> None:
    for r in instruct:
        if r["question_type"] == "closed":
            assert r["answer"] in ("yes", "no") and r["answer_text"] == r["answer"] and r["choices"] == []
        elif r["question_type"] == "multiple_choice":
            assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
            assert r["choices"][LETTERS.index(r["answer"])] == r["answer_text"]
            assert r["question"].endswith("\n".join(f"{L}. {o}" for L, o in zip(LETTERS, r["choices"])))
        else:
            assert r["answer"] == r["answer_text"] and r["choices"] == []
        if r["slot"].endswith("_yes"):
            assert r["answer"] == "yes"
        if r["slot"].endswith("_no"):
            assert r["answer"] == "no"
        if r["slot"] == "abnormality_closed":
            assert r["answer"] == ("yes" if r["is_abnormal"] else "no")
        if r["slot"] == "pathology_open":
            assert r["answer"] == (r["pathology"] if r["is_abnormal"] else "no pathology seen")


def test_multiple_choice_options_follow_the_rules(instruct: list[dict], taxonomy: Taxonomy) -> None:
    regions = {r.name for r in taxonomy.regions.values()}
    for r in instruct:
        if r["slot"] == "anatomy_mc":
            assert set(r["choices"]) <= regions and r["answer_text"] == r["region"]
        if r["slot"] == "pathology_mc":
            region = region_key(taxonomy, r["region"])
            own = pathology_key(taxonomy, region, r["answer_text"])
            allowed = {taxonomy.answer_text(region, k) for k in taxonomy.regions[region].pathologies}
            conflicts = {taxonomy.answer_text(region, k) for k in taxonomy.regions[region].conflicts_of(own)}
            for option in r["choices"]:
                assert option in allowed, (option, r["region"])
                assert option not in conflicts, (option, r["answer_text"])


def _asked(question: str, candidates: list[str]) -> str:
    found = [c for c in candidates if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", question)]
    return max(found, key=len) if found else ""


def test_closed_questions_name_the_right_things(instruct: list[dict], taxonomy: Taxonomy) -> None:
    region_names = [r.name for r in taxonomy.regions.values()]
    for r in instruct:
        if r["slot"].startswith("anatomy_closed"):
            asked = _asked(r["question"], region_names)
            assert (asked == r["region"]) == (r["answer"] == "yes"), r
        if r["slot"].startswith("pathology_closed"):
            region = region_key(taxonomy, r["region"])
            names = [taxonomy.name(region, k).name for k in taxonomy.regions[region].pathologies]
            asked = _asked(r["question"], names)
            normal_wording = r["template_id"].startswith("pathology_closed_normal")
            if r["answer"] == "yes":
                assert normal_wording == (not r["is_abnormal"]), r
                if r["is_abnormal"]:
                    assert asked == r["pathology"], r
            else:
                assert asked != r["pathology"] or not r["is_abnormal"]
                if normal_wording:
                    assert r["is_abnormal"]
                else:
                    own = pathology_key(taxonomy, region, r["pathology"]) if r["is_abnormal"] else "normal"
                    conflicts = {taxonomy.name(region, k).name for k in taxonomy.regions[region].conflicts_of(own)}
                    assert asked and asked not in conflicts and asked != r["pathology"], r


def test_no_raw_folder_name_or_placeholder_in_text(instruct: list[dict], captions: list[dict], taxonomy: Taxonomy) -> None:
    raw = taxonomy.raw_folder_names()
    for r in instruct + captions:
        for text in [r["question"], r["answer_text"], *r["choices"]]:
            tokens = set(re.findall(r"[A-Za-z0-9_+\-]+", text))
            assert not tokens & raw, (tokens & raw, text)
            assert "{" not in text and "}" not in text


def test_training_uses_train_paraphrases_only(instruct: list[dict]) -> None:
    assert all(".train." in r["template_id"] for r in instruct)


@pytest.fixture(scope="module")
def shaped_train(shaped_copy: Path, taxonomy: Taxonomy, templates: TemplateSet, config: Config):
    """Plan, class counts and instruct records of the train split of a RadImageNet-shaped copy."""
    table, _ = read_source(shaped_copy, taxonomy, config.split_ratios)
    train = table[table["split"] == "train"]
    counts = class_counts(train, taxonomy)
    plan = build_plan(taxonomy, templates, config, "train", counts)
    records = [orjson.loads(line) for line in render(plan, image_slice(train), "instruct")]
    return plan, counts, records


def test_letters_are_uniform(shaped_train) -> None:
    _, _, records = shaped_train
    for slot in ("anatomy_mc", "pathology_mc"):
        letters = Counter(r["answer"] for r in records if r["slot"] == slot)
        n = sum(letters.values())
        sigma = (n * 0.25 * 0.75) ** 0.5
        assert all(abs(letters[L] - n / 4) < 4 * sigma for L in LETTERS), letters


def _right_rates(records: list[dict], slot: str) -> tuple[Counter, Counter]:
    right, seen = Counter(), Counter()
    for r in records:
        if r["slot"] != slot:
            continue
        for option in r["choices"]:
            seen[(r["region"], option)] += 1
            right[(r["region"], option)] += option == r["answer_text"]
    return right, seen


def test_every_shown_option_set_is_exchangeable(shaped_train, taxonomy: Taxonomy) -> None:
    """With the real imbalance, given the four options shown, each is right as often as the exact fit says.

    Where the region allows it (no name or conflict group above a quarter), that is 1/4 for
    every member of every set. 400,000 images are drawn with the real draw code (classes in the
    split's proportions) and every frequent set is compared with the fit within sampling error.
    """
    plan, counts, _ = shaped_train
    n = 400_000
    rng = np.random.default_rng(5)
    classes = rng.choice(len(counts), size=n, p=counts / counts.sum())
    keys = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    block = Slice(ids=[""] * n, images=[""] * n, classes=classes, keys=keys)
    u = streams.uniforms(streams.image_keys(keys, 0), _WIDTH)
    _, _, _, _, options, letters = draw_options(plan, block, u)
    answers = options[np.arange(n), letters]
    region_of = plan.region_of[classes]
    _, per_name = region_counts(taxonomy, counts)
    checked = exact_regions = 0
    for i, region in enumerate(taxonomy.regions.values()):
        fit = fit_sets(per_name[i], 4, taxonomy.exclusions(region.key, True))
        posterior = fit.posterior()
        if fit.exact:
            assert np.abs(posterior - 0.25).max() < 1e-9
            exact_regions += 1
        mine = region_of == i
        shown = np.sort(options[mine], axis=1)
        lookup = {tuple(row): r for r, row in enumerate(fit.sets.tolist())}
        rows = np.array([lookup[tuple(row)] for row in shown.tolist()])  # every shown set is a valid set
        right = answers[mine]
        for r in np.flatnonzero(np.bincount(rows, minlength=len(fit.sets)) >= 400):
            drawn = rows == r
            m = int(drawn.sum())
            for member, expected in zip(fit.sets[r], posterior[r]):
                rate = float((right[drawn] == member).mean())
                assert abs(rate - expected) < 4.5 * (expected * (1 - expected) / m) ** 0.5, (region.key, r, member)
            checked += 1
    assert checked >= 20 and exact_regions >= 1


def test_no_shown_set_pairs_conflicting_or_contained_names(shaped_train, taxonomy: Taxonomy) -> None:
    _, _, records = shaped_train
    region_of = {r.name: r for r in taxonomy.regions.values()}
    for record in records:
        if record["slot"] != "pathology_mc":
            continue
        region = region_of[record["region"]]
        texts = {taxonomy.answer_text(region.key, n): n for n in region.pathologies}
        names = [texts[c] for c in record["choices"]]
        assert len(set(names)) == 4
        for a in names:
            assert not region.conflicts_of(a) & set(names), record["choices"]
        lowered = [c.lower() for c in record["choices"]]
        assert not any(a != b and a in b for a in lowered for b in lowered), record["choices"]
