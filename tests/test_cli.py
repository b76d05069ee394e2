import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from radvqa import __version__
from radvqa.cli import app

runner = CliRunner()


def _commands() -> dict[str, Any]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined,no-any-return]


def _help_records(name: str) -> list[tuple[object, tuple[str, str]]]:
    """(param, (left column, help)) of every option and argument, as ``radvqa NAME --help`` shows them."""
    command = _commands()[name]
    ctx = typer.Context(command, info_name=name)
    return [(p, record) for p in command.get_params(ctx) if (record := p.get_help_record(ctx)) is not None]


def test_every_command_and_option_has_help() -> None:
    commands = _commands()
    assert {"generate", "make-sample", "export", "stats", "audit"} <= set(commands)
    for name, command in commands.items():
        assert command.help, f"command {name} has no help text"
        for param, (left, text) in _help_records(name):
            assert text.strip(), f"{name} {left} has no help text"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0


def test_every_command_and_global_option_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in _commands():
        assert f"radvqa {name}" in readme, f"README does not mention `radvqa {name}`"
    for option in ("--debug", "--version"):
        assert option in readme, f"README does not mention {option}"


def test_help_uses_one_notation() -> None:
    """Flags show no value, values and arguments are upper-case metavars, DATASET and -o/--output DEST."""
    for name, command in _commands().items():
        usage = runner.invoke(app, [name, "--help"]).stdout.splitlines()[0]
        assert "{" not in usage and "<" not in usage, usage
        for param, (left, _) in _help_records(name):
            if isinstance(param, TyperArgument):
                assert left == param.name.upper() or left == param.metavar, (name, left)
                assert re.fullmatch(r"[A-Z_]+", left), (name, left)
                assert left in usage, (name, usage)
            elif getattr(param, "is_flag", False):
                assert re.fullmatch(r"(-\w, )?--[\w-]+( / --[\w-]+)?", left), (name, left)
            else:
                assert re.fullmatch(r"(-\w, )?--[\w-]+ [A-Z_]+", left), (name, left)
            if isinstance(param, TyperOption) and "-o" in param.opts:
                assert left == "-o, --output DEST", (name, left)
        if name in {"audit", "export", "stats", "validate", "validate-distractors"}:  # they read a dataset
            assert usage.endswith(f" {name} [OPTIONS] DATASET"), usage
    assert "<bool>" not in runner.invoke(app, ["--help"]).stdout


def test_a_value_after_a_flag_is_a_usage_error(tmp_path: Path) -> None:
    """`--overwrite true` must not make `true` the ROOT."""
    result = runner.invoke(app, ["generate", "--overwrite", "true", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "Invalid value for '--overwrite': a flag takes no value; drop 'true'" in result.stderr
    assert not (tmp_path / "o").exists()
    assert runner.invoke(app, ["--debug", "yes", "generate", "--sample"]).exit_code == 2


def test_out_is_a_hidden_deprecated_alias_of_output(tmp_path: Path) -> None:
    assert all("--out " not in runner.invoke(app, [n, "--help"]).stdout for n in _commands())
    report = tmp_path / "splits.csv"
    result = runner.invoke(app, ["split", str(tmp_path / "nope"), "--out", str(report)])
    assert result.exit_code == 1  # parsed: the error is about the copy, not the option
    assert result.stderr.splitlines()[0] == "warning: --out is deprecated; use -o/--output"
    assert "No such option" not in result.stderr


def test_importing_the_cli_loads_no_heavy_library() -> None:
    """`radvqa --help` stays fast: pandas, numpy and pyarrow are imported by the commands, not the CLI."""
    code = (
        "import sys, radvqa, radvqa.cli; "
        "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'matplotlib', 'PIL', 'rich') if m in sys.modules)); "
        "radvqa.cli.app(['--help'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "[]"
    after = subprocess.run(
        [sys.executable, "-c", "import radvqa, sys; radvqa.generate_dataset; print('pandas' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert after.stdout.strip() == "True"  # the public names still resolve, on first use


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
