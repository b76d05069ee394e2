import re
import shutil
from pathlib import Path

import pytest
import yaml

from radvqa.errors import TemplateError
from radvqa.templates import POOL_RULES, TemplateSet, load_templates, placeholders

from conftest import REPO


def test_every_pool_has_five_train_paraphrases_and_a_held_out_pool(templates: TemplateSet) -> None:
    assert set(templates.pools) == set(POOL_RULES)
    for name, variants in templates.pools.items():
        assert len(variants["train"]) >= 5, name
        assert len(variants["benchmark"]) >= 2, name
        train = {t.text for t in variants["train"]}
        assert not train & {t.text for t in variants["benchmark"]}, name


def test_template_ids_name_pool_variant_and_index(templates: TemplateSet) -> None:
    assert templates.pool("anatomy_open", "train")[2].id == "anatomy_open.train.2"
    assert templates.pool("pathology_mc", "benchmark")[0].id == "pathology_mc.benchmark.0"


def test_placeholders_parse_plain_names_only() -> None:
    assert placeholders("Is the {region} shown? {{literal}}", "x") == {"region"}
    with pytest.raises(TemplateError, match="must be a plain"):
        placeholders("Is the {region!r} shown?", "x")
    with pytest.raises(TemplateError, match="must be a plain"):
        placeholders("Is the {region.upper} shown?", "x")
    with pytest.raises(TemplateError, match="Single '}'"):
        placeholders("Is the region} shown?", "x")


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(REPO / "templates", target)
    return target


def _edit(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_custom_templates_load(template_dir: Path) -> None:
    _edit(template_dir / "questions.yaml", lambda d: d["pools"]["anatomy_open"]["train"].append("Which area?"))
    assert load_templates(template_dir).pool("anatomy_open", "train")[-1].text == "Which area?"


def test_unknown_placeholder_names_file_pool_template_and_suggests(template_dir: Path) -> None:
    _edit(template_dir / "questions.yaml", lambda d: d["pools"]["anatomy_closed"]["train"].__setitem__(2, "Is the {regoin} here?"))
    with pytest.raises(TemplateError) as info:
        load_templates(template_dir)
    message = str(info.value)
    assert "questions.yaml: pool 'anatomy_closed', train template 2" in message
    assert "unknown placeholder {regoin} (did you mean 'region'?)" in message
    assert "\n" not in message


def test_answer_revealing_placeholder_is_refused(template_dir: Path) -> None:
    _edit(template_dir / "questions.yaml", lambda d: d["pools"]["anatomy_open"]["train"].append("Is this the {region}?"))
    with pytest.raises(TemplateError, match=r"pool 'anatomy_open', train template 6: unknown placeholder \{region\}.*allowed: none"):
        load_templates(template_dir)


def test_required_placeholder_missing(template_dir: Path) -> None:
    _edit(template_dir / "questions.yaml", lambda d: d["pools"]["pathology_closed"]["benchmark"].append("Is it there?"))
    with pytest.raises(TemplateError, match=re.escape("needs {pathology} or {pathology_phrase}")):
        load_templates(template_dir)


def test_missing_pool(template_dir: Path) -> None:
    _edit(template_dir / "captions.yaml", lambda d: d["pools"].pop("caption_normal"))
    with pytest.raises(TemplateError, match="captions.yaml: pool 'caption_normal' is missing"):
        load_templates(template_dir)


def test_misspelt_pool(template_dir: Path) -> None:
    _edit(template_dir / "questions.yaml", lambda d: d["pools"].__setitem__("anatomy_opne", d["pools"].pop("anatomy_open")))
    with pytest.raises(TemplateError, match=r"unknown pool 'anatomy_opne' \(did you mean 'anatomy_open'\?\)"):
        load_templates(template_dir)


def test_benchmark_paraphrase_must_be_held_out(template_dir: Path) -> None:
    def leak(d: dict) -> None:
        d["pools"]["pathology_mc"]["benchmark"].append(d["pools"]["pathology_mc"]["train"][0])

    _edit(template_dir / "questions.yaml", leak)
    with pytest.raises(TemplateError, match="benchmark paraphrase also in train"):
        load_templates(template_dir)


def test_malformed_and_missing_files(template_dir: Path) -> None:
    (template_dir / "questions.yaml").write_text("pools: {anatomy_open: [\n")
    with pytest.raises(TemplateError, match="questions.yaml: line .*malformed YAML"):
        load_templates(template_dir)
    (template_dir / "captions.yaml").unlink()
    with pytest.raises(TemplateError, match="captions.yaml: cannot read"):
        load_templates(template_dir)


def test_empty_pool_and_bad_choice_line(template_dir: Path) -> None:
    _edit(template_dir / "questions.yaml", lambda d: d["pools"]["anatomy_mc"].__setitem__("train", []))
    with pytest.raises(TemplateError, match="'train' must be a non-empty list"):
        load_templates(template_dir)
    shutil.copy(REPO / "templates" / "questions.yaml", template_dir / "questions.yaml")
    _edit(template_dir / "questions.yaml", lambda d: d.__setitem__("choice_line", "{letter}) {answer}"))
    with pytest.raises(TemplateError, match=r"choice_line: unknown placeholder \{answer\}"):
        load_templates(template_dir)


def test_shipped_templates_match_top_level_copy() -> None:
    for name in ("questions.yaml", "captions.yaml"):
        assert (REPO / "templates" / name).read_bytes() == (REPO / "radvqa" / "data" / "templates" / name).read_bytes()
