import csv
import re
from pathlib import Path

import pytest
import yaml

from radvqa.errors import ConfigError
from radvqa.taxonomy import Taxonomy, load_taxonomy

from conftest import LABELS_CSV, REPO

MISSPELLINGS = ("pituatary", "pathlogy", "bil dil", "ca++", " oa", "acj", "ghj", "atfl", "cfl", "fcl", "quad ")


def real_classes() -> list[dict[str, str]]:
    rows = list(csv.DictReader(LABELS_CSV.read_text().splitlines()))
    return [r for r in rows if r["modality"] != "US"]


def test_every_real_class_resolves(taxonomy: Taxonomy) -> None:
    rows = real_classes()
    assert len(rows) == 150
    for row in rows:
        cls = taxonomy.resolve(row["modality"], row["anatomy"], row["pathology"])
        assert cls is not None, row
        assert cls.label == row["label"]
    assert len(taxonomy.classes) == 150
    assert len(taxonomy.regions) == 8
    assert len({c.pathology for c in taxonomy.classes}) == 97


def test_display_names_are_clean(taxonomy: Taxonomy) -> None:
    texts = [n.name for n in taxonomy.names.values()] + [n.phrase for n in taxonomy.names.values()]
    texts += [r.name for r in taxonomy.regions.values()] + [taxonomy.normal_answer]
    for text in texts:
        assert "_" not in text and "+" not in text, text
        for bad in MISSPELLINGS:
            assert bad not in f" {text.lower()} ", (text, bad)


def test_regions_match_the_paper(taxonomy: Taxonomy) -> None:
    assert {r.name for r in taxonomy.regions.values()} == {
        "abdomen", "chest", "brain", "spine", "shoulder", "hip", "knee", "ankle and foot",
    }
    assert taxonomy.resolve("CT", "abd", "liver_lesion").region == "abdomen"
    assert taxonomy.resolve("MR", "mriabd", "liver_lesion").region == "abdomen"
    assert taxonomy.resolve("CT", "lung", "Nodule").region == "chest"


def test_same_folder_name_differs_by_region(taxonomy: Taxonomy) -> None:
    assert taxonomy.resolve("MR", "brain", "intra").pathology_name == "intra-axial lesion"
    assert taxonomy.resolve("MR", "knee", "intra").pathology_name == "intra-articular body"
    assert taxonomy.resolve("MR", "af", "intra").pathology_phrase == "an intra-articular body"


def test_quirky_folders_get_clean_names(taxonomy: Taxonomy) -> None:
    expected = {
        ("MR", "brain", "pituatary_lesion"): "pituitary lesion",
        ("MR", "spine", "foraminal_pathlogy"): "foraminal pathology",
        ("MR", "mriabd", "liver_disease_"): "diffuse liver disease",
        ("MR", "shoulder", "ca++_tendinosis"): "calcific tendinosis",
        ("MR", "af", "Plantar_plate_tear"): "plantar plate tear",
        ("CT", "abd", "bil_dil"): "biliary dilatation",
        ("MR", "shoulder", "acj_oa"): "acromioclavicular joint osteoarthritis",
        ("MR", "brain", "focal_flair_hyper"): "focal FLAIR hyperintensity",
        ("MR", "brain", "extra"): "extra-axial lesion",
    }
    for triple, name in expected.items():
        assert taxonomy.resolve(*triple).pathology_name == name


def test_mr_abd_alias_and_unknown(taxonomy: Taxonomy) -> None:
    assert taxonomy.resolve("MR", "abd", "liver_lesion") == taxonomy.resolve("MR", "mriabd", "liver_lesion")
    assert taxonomy.resolve("MR", "knee", "mystery") is None
    assert taxonomy.resolve("US", "usabd", "kidney") is None


def test_conflict_groups_are_symmetric_and_in_region(taxonomy: Taxonomy) -> None:
    abdomen = taxonomy.regions["abdomen"]
    assert "bowel_mass" in abdomen.conflicts_of("bowel_abnormality")
    assert "bowel_abnormality" in abdomen.conflicts_of("bowel_mass")
    assert "gallbladder_pathology" in abdomen.conflicts_of("gallstone")
    assert "abnormal_entire_organ" in abdomen.conflicts_of("enlarged_organ")
    for region in taxonomy.regions.values():
        for key in region.pathologies:
            assert key not in region.conflicts_of(key)
            for other in region.conflicts_of(key):
                assert other in region.pathologies
                assert key in region.conflicts_of(other)


def test_raw_folder_names_exclude_plain_words(taxonomy: Taxonomy) -> None:
    raw = taxonomy.raw_folder_names()
    assert {"pituatary_lesion", "af", "mriabd", "abd", "extra", "intra", "Nodule"} <= raw
    assert "ascites" not in raw and "normal" not in raw and "knee" not in raw


def test_shipped_copy_matches_top_level_configs() -> None:
    assert (REPO / "configs" / "taxonomy.yaml").read_bytes() == (
        REPO / "radvqa" / "data" / "configs" / "taxonomy.yaml"
    ).read_bytes()


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _default_data() -> dict:
    return yaml.safe_load((REPO / "configs" / "taxonomy.yaml").read_text())


def test_unknown_key_gets_did_you_mean(tmp_path: Path) -> None:
    data = _default_data()
    data["regions"]["knee"]["conflict"] = data["regions"]["knee"].pop("conflicts")
    with pytest.raises(ConfigError, match=r"region 'knee': unknown key 'conflict' \(did you mean 'conflicts'\?\)"):
        load_taxonomy(_write(tmp_path, data))


def test_conflict_outside_region_is_an_error(tmp_path: Path) -> None:
    data = _default_data()
    data["regions"]["knee"]["conflicts"].append(["fracture", "ascites"])
    with pytest.raises(ConfigError, match="'ascites', which is not in this region"):
        load_taxonomy(_write(tmp_path, data))


def test_display_name_with_underscore_is_an_error(tmp_path: Path) -> None:
    data = _default_data()
    data["pathologies"]["fracture"]["name"] = "bone_fracture"
    with pytest.raises(ConfigError, match=re.escape("pathology 'fracture': display name 'bone_fracture'")):
        load_taxonomy(_write(tmp_path, data))


def test_too_few_wrong_options_is_an_error(tmp_path: Path) -> None:
    data = _default_data()
    data["regions"]["chest"]["conflicts"] = [["Airspace_opacity", "Bronchiectasis", "Nodule", "interstitial_lung_disease"]]
    with pytest.raises(ConfigError, match="only 2 possible wrong options"):
        load_taxonomy(_write(tmp_path, data))


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text("regions: [unclosed\n")
    with pytest.raises(ConfigError, match=r"taxonomy.yaml: line \d+: malformed YAML"):
        load_taxonomy(path)


def test_pathology_without_a_valid_option_set_is_an_error(tmp_path: Path) -> None:
    """Each name has three possible wrong options, but no three of them may stand together."""
    data = _default_data()
    data["regions"]["chest"]["conflicts"] = [
        ["Airspace_opacity", "Bronchiectasis"],
        ["Nodule", "interstitial_lung_disease"],
        ["normal", "Parenchyma_destruction"],
    ]
    with pytest.raises(ConfigError, match="region 'chest': pathology 'Airspace_opacity' fits in no set of 4 options"):
        load_taxonomy(_write(tmp_path, data))


def test_contained_option_texts_never_share_a_set(taxonomy: Taxonomy) -> None:
    abdomen = taxonomy.regions["abdomen"].pathologies
    excluded = taxonomy.exclusions("abdomen", True)
    texts = [taxonomy.answer_text("abdomen", n) for n in abdomen]
    assert excluded[texts.index("bladder pathology"), texts.index("gallbladder pathology")]
    assert not taxonomy.exclusions("abdomen", False)[texts.index("bladder pathology"), texts.index("gallbladder pathology")]
