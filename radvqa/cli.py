"""The ``radvqa`` command line: parse options, call the library, turn errors into one line.

No logic lives here. Known errors (RadVQAError) print ``ERROR: ...`` on stderr and exit 1;
usage errors exit 2 (typer); anything else is a bug and shows a traceback only with --debug.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from . import __version__
from .config import Config, load_config
from .errors import RadVQAError
from .progress import ProgressBar, progress_bar
from .sample import build_sample
from .taxonomy import load_taxonomy
from .templates import load_templates

app = typer.Typer(
    help="Turn a local RadImageNet copy into a radiologic visual-question-answering dataset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")
SAMPLE_FOLDER = "radimagenet-sample"


class _State:
    debug = False


def _say(line: str) -> None:
    typer.echo(line, err=True)


@contextmanager
def _errors() -> Iterator[None]:
    """The one error funnel: a known error is one red line and exit 1."""
    try:
        yield
    except RadVQAError as error:
        if _State.debug:
            raise
        typer.secho(f"ERROR: {error}", fg=typer.colors.RED, err=True)
        if error.hint:
            _say(f"hint: {error.hint}")
        raise typer.Exit(1)


def _progress(quiet: bool) -> Callable[[int, str], ProgressBar]:
    return lambda total, desc: progress_bar(total, desc, quiet=quiet, unit="rec")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"radvqa {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """radvqa: RadImageNet -> VQA dataset toolkit."""
    _State.debug = debug


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML config file (see configs/default.yaml).")]
TemplatesOpt = Annotated[
    Optional[Path], typer.Option("--templates", help="Folder with captions.yaml and questions.yaml.")
]
TaxonomyOpt = Annotated[Optional[Path], typer.Option("--taxonomy", help="Taxonomy YAML (see configs/taxonomy.yaml).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]


def _load_config(config: Path | None, **overrides: object) -> Config:
    return load_config(config).with_overrides(**overrides)


@app.command()
def generate(
    root: Annotated[Optional[Path], typer.Argument(help="RadImageNet copy (folder holding radiology_ai/).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the dataset.")] = Path("radvqa-out"),
    sample: Annotated[
        bool, typer.Option("--sample", help="Build the built-in sample copy inside OUT and generate from it.")
    ] = False,
    config: ConfigOpt = None,
    templates: TemplatesOpt = None,
    taxonomy: TaxonomyOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default from config: 0).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default 1).")] = None,
    shard_size: Annotated[Optional[int], typer.Option(help="Records per JSONL shard.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous output in OUT.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate captions and nine questions per CT/MRI image as sharded JSONL."""
    from .dataset import generate_dataset
    from .writers import prepare_output

    with _errors():
        if (root is None) == (not sample):
            raise typer.BadParameter("give a RadImageNet ROOT or --sample (not both)")
        settings = _load_config(config, seed=seed, workers=workers, shard_size=shard_size)
        tax = load_taxonomy(taxonomy)
        tpl = load_templates(templates)
        if sample:
            prepare_output(out, overwrite)
            root = out / SAMPLE_FOLDER
            build_sample(root, tax)
            overwrite = True  # OUT now holds only the sample copy we just made
        assert root is not None
        result = generate_dataset(root, out, settings, tax, tpl, overwrite=overwrite, progress=_progress(quiet))
        for warning in result.source.warnings:
            _say(f"warning: {warning}")
        if not quiet:
            for line in result.lines():
                _say(line)


@app.command("make-sample")
def make_sample(
    dest: Annotated[Path, typer.Argument(help="Folder to create the sample copy in (must not exist or be empty).")],
    images_per_class: Annotated[int, typer.Option(help="Images per class (about).")] = 10,
    taxonomy: TaxonomyOpt = None,
) -> None:
    """Write the built-in synthetic RadImageNet-shaped copy (all 150 classes, real quirks)."""
    from .writers import prepare_output

    with _errors():
        prepare_output(dest, overwrite=False)
        build_sample(dest, load_taxonomy(taxonomy), images_per_class=images_per_class)
        _say(f"wrote a sample RadImageNet copy to {dest}")


# -- validate, validate-distractors ----------------------------------------------------------

JsonReportOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the full report (counts, examples, rates) as JSON here.")]
ValidateWorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Worker processes (shards are checked in parallel).")]
ShowOpt = Annotated[int, typer.Option("--show", min=0, help="Example findings printed per rule.")]


@contextmanager
def _unreadable_exits_2() -> Iterator[None]:
    """A dataset folder that cannot be read at all is exit 2 (nothing was checked), not 1."""
    from .errors import DatasetError

    try:
        yield
    except DatasetError as error:
        if _State.debug:
            raise
        typer.secho(f"ERROR: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)


def _finish_validation(report: object, json_report: Path | None, show: int, quiet: bool) -> None:
    from .validate import Report
    from .writers import write_json

    assert isinstance(report, Report)
    if json_report is not None:
        write_json(json_report, report.to_dict())
    lines = report.lines(per_rule=show)
    for line in lines if not quiet else lines[-2:]:
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


@app.command("validate-distractors")
def validate_distractors_command(
    out: Annotated[Path, typer.Argument(help="Dataset folder made by `radvqa generate`.")],
    json_report: JsonReportOpt = None,
    workers: ValidateWorkersOpt = 1,
    show: ShowOpt = 5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary lines.")] = False,
) -> None:
    """Check every multiple-choice and closed question: options, letters, names, balance, name cues."""
    from .validate import validate_distractors

    with _errors(), _unreadable_exits_2():
        report = validate_distractors(out, workers=workers, progress=_progress(quiet))
        _finish_validation(report, json_report, show, quiet)


@app.command("validate")
def validate_command(
    out: Annotated[Path, typer.Argument(help="Dataset folder made by `radvqa generate`.")],
    root: Annotated[
        Optional[Path], typer.Option("--root", help="RadImageNet copy: check that every image exists under it.")
    ] = None,
    json_report: JsonReportOpt = None,
    workers: ValidateWorkersOpt = 1,
    show: ShowOpt = 5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary lines.")] = False,
) -> None:
    """Check a whole dataset: fields, text, ids, images, shards vs manifest, benchmark leaks, distractors."""
    from .validate import validate_dataset

    with _errors(), _unreadable_exits_2():
        report = validate_dataset(out, root=root, workers=workers, progress=_progress(quiet))
        _finish_validation(report, json_report, show, quiet)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
