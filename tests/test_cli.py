from pathlib import Path

import orjson
import typer
from typer.testing import CliRunner

from radvqa import __version__
from radvqa.cli import app

runner = CliRunner()


def test_every_command_and_option_has_help() -> None:
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    assert {"generate", "make-sample"} <= set(commands)
    for name, command in commands.items():
        assert command.help, f"command {name} has no help text"
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts} has no help text"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_generate_sample_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", "--sample", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "images used:" in result.stderr and "instruct: train" in result.stderr
    assert "warning: 1 CSV labels disagree" in result.stderr
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["records"]["instruct"]["train"] > 9000
    assert (out / "radimagenet-sample" / "RadiologyAI_test.csv").exists()
    again = runner.invoke(app, ["generate", "--sample", "-o", str(out)])
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        f"ERROR: {out}: folder is not empty; pass --overwrite to replace a previous output"
    ]
    assert runner.invoke(app, ["generate", "--sample", "-o", str(out), "--overwrite", "-q"]).exit_code == 0


def test_generate_from_root_quiet(tmp_path: Path, sample_copy: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(sample_copy), "-o", str(out), "--quiet", "--seed", "3"])
    assert result.exit_code == 0
    assert "images used" not in result.stderr
    assert orjson.loads((out / "manifest.json").read_bytes())["seed"] == 3


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["generate", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert missing.exit_code == 1
    assert missing.stderr.strip() == f"ERROR: {tmp_path / 'nope'}: not a folder"
    config = tmp_path / "c.yaml"
    config.write_text("seeds: 1\n")
    bad = runner.invoke(app, ["generate", "--sample", "-o", str(tmp_path / "o2"), "--config", str(config)])
    assert bad.exit_code == 1 and "unknown key 'seeds' (did you mean 'seed'?)" in bad.stderr
    assert "Traceback" not in bad.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["generate", "-o", str(tmp_path / "o")]).exit_code == 2
    assert runner.invoke(app, ["generate", "--workers", "x", "--sample"]).exit_code == 2


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "generate", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.exception is not None


def test_make_sample(tmp_path: Path) -> None:
    result = runner.invoke(app, ["make-sample", str(tmp_path / "s"), "--images-per-class", "4"])
    assert result.exit_code == 0
    assert len(list((tmp_path / "s" / "radiology_ai" / "CT").rglob("*.png"))) >= 34 * 3
