from pathlib import Path

import pytest

from radvqa.config import MATCHED, load_config
from radvqa.errors import ConfigError


def test_defaults() -> None:
    config = load_config()
    assert config.seed == 0 and config.workers == 1 and config.shard_size == 500_000
    assert config.no_pathology_option_rate == MATCHED
    assert abs(sum(config.split_ratios.values()) - 1) < 1e-9


def test_user_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\ndistractors:\n  no_pathology_option_rate: 0.3\n")
    config = load_config(path)
    assert config.seed == 7 and config.no_pathology_option_rate == 0.3 and config.shard_size == 500_000
    assert config.with_overrides(seed=9, workers=None).seed == 9


@pytest.mark.parametrize(
    "text, message",
    [
        ("sed: 1\n", r"unknown key 'sed' \(did you mean 'seed'\?\)"),
        ("distractors: {no_pathology_rate: 0}\n", r"did you mean 'no_pathology_option_rate'"),
        ("split_ratios: {train: 0.5, val: 0.1, test: 0.1}\n", "must add up to 1"),
        ("distractors: {no_pathology_option_rate: 2}\n", r"'matched' or a number in \[0, 1\]"),
        ("workers: 0\n", "workers: must be >= 1"),
        ("shard_size: many\n", "shard_size: must be an integer"),
        ("benchmark: {normal_fraction: 0.9}\n", r"benchmark.normal_fraction: must be a number in \[0, 0.25\]"),
        ("benchmark: {check_images: 'no'}\n", "benchmark.check_images: must be true or false, not 'no'"),
        ("benchmark: {region_cap: 0}\n", r"benchmark.region_cap: must be a number in \(0, 1\]"),
        ("benchmark: {answer_cap: 0}\n", r"benchmark.answer_cap: must be a number in \(0, 1\]"),
        ("benchmark: {images: -1}\n", "benchmark.images: must be a whole number >= 0"),
    ],
)
def test_bad_config_is_one_line_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_cli_override_is_checked() -> None:
    with pytest.raises(ConfigError, match="--shard-size 0: must be >= 1"):
        load_config().with_overrides(shard_size=0)
    with pytest.raises(ConfigError, match=r"^--normal-fraction 0.9: must be a number in \[0, 0.25\]"):
        load_config().with_overrides(normal_fraction=0.9)
    assert load_config().with_overrides(benchmark_images=0).benchmark_images == 0  # a deliberate empty benchmark


# ---- settings checked before any work, naming the flag or the file (issue 11) ------------------


def _generate(*args: object) -> tuple[int, str]:
    from typer.testing import CliRunner

    from radvqa.cli import app

    result = CliRunner().invoke(app, ["generate", *(str(a) for a in args)])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("benchmark: {normal_fraction: 0.9}\n", "benchmark.normal_fraction: must be a number in [0, 0.25]"),
        ("benchmark: {check_images: 'no'}\n", "benchmark.check_images: must be true or false, not 'no'"),
        ("benchmark: {region_cap: 0}\n", "benchmark.region_cap: must be a number in (0, 1], not 0"),
        ("benchmark: {answer_cap: 0}\n", "benchmark.answer_cap: must be a number in (0, 1], not 0"),
    ],
)
def test_bad_settings_stop_generate_before_any_work(
    tmp_path: Path, tiny_copy: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml_text)
    code, output = _generate(tiny_copy, "-o", tmp_path / "out", "--config", path)
    assert code == 1 and output.startswith(f"ERROR: {path}: {message}") and output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_normal_fraction_flag_is_checked_against_the_real_limit(tmp_path: Path, tiny_copy: Path) -> None:
    code, output = _generate(tiny_copy, "-o", tmp_path / "out", "--normal-fraction", "0.9")
    assert code == 1 and output.startswith("ERROR: --normal-fraction 0.9: must be a number in [0, 0.25]")
    assert not (tmp_path / "out").exists()


def test_a_deliberate_empty_benchmark_is_allowed(tmp_path: Path, tiny_copy: Path) -> None:
    import json

    code, output = _generate(tiny_copy, "-o", tmp_path / "out", "--benchmark-images", "0", "--quiet")
    assert code == 0, output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["records"]["benchmark"] == {"test": 0} and manifest["records"]["instruct"]["train"] > 0
