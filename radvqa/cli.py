"""The ``radvqa`` command line: parse options, call the library, turn errors into one line.

No logic lives here. Known errors (RadVQAError) print ``ERROR: ...`` on stderr and exit 1;
usage errors exit 2 (typer); anything else is a bug and shows a traceback only with --debug.

Conventions, enforced in one place (``_Conventions``) for every command: arguments and option
values are upper-case metavars (``DATASET``, ``DEST``, ``PATH``), a flag shows no value, the
dataset is the positional ``DATASET`` and a destination is ``-o/--output DEST`` (``--out`` is a
hidden, deprecated alias). Heavy libraries (pandas, numpy, pyarrow) are imported inside the
commands, so ``radvqa --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from . import __version__
from .config import Config, load_config
from .errors import RadVQAError
from .progress import ProgressBar, progress_bar
from .taxonomy import load_taxonomy
from .templates import load_templates

if TYPE_CHECKING:
    from .executors import ExecutorSpec

# typer's type labels as click's classic upper-case metavars.
_TYPE_METAVARS = {"int": "INTEGER", "str": "TEXT", "list[str]": "TEXT", "list[path]": "PATH"}
# Words a user may put after a flag believing it takes a value (``--overwrite true``).
_BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n", "t", "f", "1", "0"})
_OUTPUT, _OLD_OUTPUT = "--output", "--out"


def _metavar(param: Any, ctx: Any) -> str | None:
    """The one notation: ``NAME`` for arguments and option values, nothing for flags."""
    if isinstance(param, TyperArgument):
        return param.metavar or (param.name or "").upper()
    if not isinstance(param, TyperOption):
        return param.metavar  # type: ignore[no-any-return]
    if param.is_flag or param.count:
        return ""
    if param.metavar:
        return param.metavar  # type: ignore[no-any-return]
    label = param.display_type(ctx).strip("<>").removesuffix(" range") if hasattr(param, "display_type") else ""
    return _TYPE_METAVARS.get(label, label.upper()) or None


class _Conventions:
    """Mixed into radvqa's command and group classes: metavars, usage line, argument checks."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            param.metavar = _metavar(param, ctx)
            if isinstance(param, TyperArgument):  # typer would print "ROOT <path>": the name says enough
                setattr(param, "display_type_rich", lambda ctx: None)
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """Click's usage notation: ``DATASET`` required, ``[ROOT]`` optional."""
        pieces: list[str] = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        arguments = [p for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        if not arguments:
            return pieces
        kept = [piece for piece in pieces if piece.strip("[]{}.") not in {a.metavar for a in arguments}]
        for argument in arguments:
            name = (argument.metavar or "") + ("..." if argument.nargs != 1 else "")
            kept.append(name if argument.required else f"[{name}]")
        return kept

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Map the deprecated ``--out`` to ``--output``; refuse a value after a flag."""
        params = [p for p in self.get_params(ctx) if isinstance(p, TyperOption)]
        names = {name for p in params for name in (*p.opts, *p.secondary_opts)}
        flags = {name: p for p in params if p.is_flag for name in (*p.opts, *p.secondary_opts)}
        args = list(args)
        for i, token in enumerate(args):
            if token == "--" or (isinstance(self, TyperGroup) and not token.startswith("-")):
                break  # a group checks its own options only, up to the command name
            if _OUTPUT in names and _OLD_OUTPUT not in names and token.split("=")[0] == _OLD_OUTPUT:
                args[i] = _OUTPUT + token[len(_OLD_OUTPUT) :]
                typer.echo("warning: --out is deprecated; use -o/--output", err=True)
            if token in flags and i + 1 < len(args) and args[i + 1].lower() in _BOOL_WORDS:
                raise typer.BadParameter(
                    f"a flag takes no value; drop '{args[i + 1]}' (or write ./{args[i + 1]} for a path of that name)",
                    ctx=ctx,
                    param=flags[token],
                )
        return super().parse_args(ctx, args)  # type: ignore[misc,no-any-return]


class _Command(_Conventions, TyperCommand):
    """A radvqa command."""


class _Group(_Conventions, TyperGroup):
    """The radvqa command group."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """List every command with its whole first sentence (click cuts it at ~45 characters)."""
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        rows = [(name, cmd.get_short_help_str(limit=200)) for name, cmd in commands if cmd and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _App(typer.Typer):
    """typer.Typer whose commands follow radvqa's conventions (see ``_Conventions``)."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(
    cls=_Group,
    help="Turn a local RadImageNet copy into a radiologic visual-question-answering dataset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: importing rich for it would cost ~0.3 s per call
)


class _State:
    debug = False


def _say(line: str) -> None:
    typer.echo(line, err=True)


@contextmanager
def _errors(unreadable_exit: int = 1) -> Iterator[None]:
    """The one error funnel: a known error is one red line and exit 1.

    Validation commands pass ``unreadable_exit=2``: a dataset folder that cannot be read at
    all (DatasetError) means nothing was checked.
    """
    from .errors import DatasetError
    from .executors import Interrupted, signal_number, signals

    try:
        with signals():
            yield
    except Interrupted as stop:
        _deaf()
        _say(str(stop))
        raise typer.Exit(stop.exit_code)
    except RadVQAError as error:
        if _State.debug:
            raise
        typer.secho(f"ERROR: {error}", fg=typer.colors.RED, err=True)
        if error.hint:
            _say(f"hint: {error.hint}")
        raise typer.Exit(unreadable_exit if isinstance(error, DatasetError) else 1)
    except BaseException as error:  # SIGINT / SIGTERM outside a worker pool
        signum = signal_number(error)
        if signum is None:
            raise
        _deaf()
        _say("interrupted")
        raise typer.Exit(128 + signum)


def _deaf() -> None:
    """Once interrupted, ignore further Ctrl-C / SIGTERM: a second one must not kill the exit path."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _progress(quiet: bool) -> Callable[[int | None, str], ProgressBar]:
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
DatasetArg = Annotated[Path, typer.Argument(metavar="DATASET", help="Dataset folder made by `radvqa generate`.")]
ExecutorOpt = Annotated[
    str,
    typer.Option("--executor", metavar="EXECUTOR", help="Where tasks run: local (processes here) or dask (radvqa[dask])."),
]
SchedulerOpt = Annotated[
    Optional[str],
    typer.Option(
        "--scheduler",
        envvar="DASK_SCHEDULER_ADDRESS",
        metavar="ADDRESS",
        help="Existing Dask scheduler, tcp://HOST:8786 (or env DASK_SCHEDULER_ADDRESS); default: a LocalCluster of --workers.",
    ),
]


def _executor(kind: str, workers: int | None, scheduler: str | None) -> ExecutorSpec:
    from .executors import ExecutorSpec

    spec = ExecutorSpec(kind=kind, workers=workers or 1, scheduler=scheduler if kind == "dask" else None)
    spec.check()
    return spec


def _load_config(config: Path | None, **overrides: object) -> Config:
    return load_config(config).with_overrides(**overrides)


@app.command()
def generate(
    root: Annotated[Optional[Path], typer.Argument(help="RadImageNet copy (folder holding radiology_ai/).")] = None,
    out: Annotated[
        Path, typer.Option(_OUTPUT, "-o", metavar="DEST", help="Dataset folder to write.")
    ] = Path("radvqa-out"),
    sample: Annotated[
        bool, typer.Option("--sample", help="Build the built-in sample copy inside DEST and generate from it.")
    ] = False,
    config: ConfigOpt = None,
    templates: TemplatesOpt = None,
    taxonomy: TaxonomyOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default from config: 0).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default 1).")] = None,
    shard_size: Annotated[Optional[int], typer.Option(help="Records per JSONL shard.")] = None,
    splits: Annotated[
        Optional[Path], typer.Option("--splits", help="Split file from `radvqa split` (default: split now).")
    ] = None,
    benchmark_images: Annotated[Optional[int], typer.Option(help="Benchmark size (default 1000).")] = None,
    normal_fraction: Annotated[
        Optional[float], typer.Option(help="Share of normal benchmark images per region, at most 0.25.")
    ] = None,
    benchmark_layout: Annotated[
        Optional[str],
        typer.Option(
            "--benchmark-layout",
            help="per-image (each image with its nine questions, the default) or per-slot "
            "(nine disjoint image sets, one slot each, for hidden-answer leaderboards).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous output in DEST.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run into DEST (same settings), keeping its shards.")
    ] = False,
    executor: ExecutorOpt = "local",
    scheduler: SchedulerOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate captions and nine questions per CT/MRI image as sharded JSONL."""
    from .dataset import generate_dataset, generate_sample_dataset

    with _errors():
        if (root is None) == (not sample):
            raise typer.BadParameter("give a RadImageNet ROOT or --sample (not both)")
        if resume and sample:
            raise typer.BadParameter("--resume continues a run from a ROOT, not --sample")
        settings = _load_config(
            config, seed=seed, workers=workers, shard_size=shard_size, benchmark_images=benchmark_images,
            normal_fraction=normal_fraction, benchmark_layout=benchmark_layout,
        )
        tax = load_taxonomy(taxonomy)
        tpl = load_templates(templates)
        spec = _executor(executor, settings.workers, scheduler)
        if root is None:
            result = generate_sample_dataset(out, settings, tax, tpl, overwrite, _progress(quiet), spec)
        else:
            result = generate_dataset(
                root, out, settings, tax, tpl, overwrite, _progress(quiet), splits, spec, resume=resume
            )
        for warning in result.warnings:
            _say(f"warning: {warning}")
        if not quiet:
            for line in result.lines():
                _say(line)


@app.command("split")
def split_command(
    root: Annotated[Path, typer.Argument(help="RadImageNet copy (folder holding radiology_ai/).")],
    out: Annotated[
        Path, typer.Option(_OUTPUT, "-o", metavar="DEST", help="CSV to write (a .json report is written beside it).")
    ],
    stratify: Annotated[
        bool, typer.Option("--stratify/--no-stratify", help="Stratified benchmark (default) or a plain random draw.")
    ] = True,
    benchmark_images: Annotated[
        Optional[int], typer.Option(help="Benchmark size (default 1000, shrunk with a warning on small copies).")
    ] = None,
    normal_fraction: Annotated[
        Optional[float], typer.Option(help="Share of normal images per region, at most 0.25 (default: by pool size).")
    ] = None,
    benchmark_layout: Annotated[
        Optional[str],
        typer.Option(
            "--benchmark-layout",
            help="per-image (each image with its nine questions, the default) or per-slot "
            "(nine disjoint image sets, one slot each, for hidden-answer leaderboards).",
        ),
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default from config: 0).")] = None,
    config: ConfigOpt = None,
    taxonomy: TaxonomyOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing split file.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Assign every CT/MRI image to train, val, benchmark or test_pool and write the table."""
    from dataclasses import replace

    from .config import benchmark_settings
    from .split import check_split_destination, split_copy, write_splits

    with _errors():
        settings = _load_config(
            config, seed=seed, benchmark_images=benchmark_images, normal_fraction=normal_fraction,
            benchmark_layout=benchmark_layout,
        )
        check_split_destination(out, overwrite)
        tax = load_taxonomy(taxonomy)
        bench = replace(benchmark_settings(settings), stratify=stratify)
        table, splits, report, warnings, rows = split_copy(root, tax, settings.split_ratios, bench)
        write_splits(out, table, splits, tax, report, rows)
        for warning in warnings + report.warnings:
            _say(f"warning: {warning}")
        if not quiet:
            for line in report.lines():
                _say(line)
            _say(f"wrote {out}")


@app.command("make-sample")
def make_sample(
    dest: Annotated[
        Path, typer.Argument(metavar="DEST", help="Folder to create the sample copy in (must not exist or be empty).")
    ],
    images_per_class: Annotated[int, typer.Option(help="Images per class (about), at least 1.")] = 10,
    taxonomy: TaxonomyOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous sample in DEST.")] = False,
) -> None:
    """Write the built-in synthetic RadImageNet-shaped copy (all 150 classes, real quirks)."""
    from .sample import make_sample as run_make_sample

    with _errors():
        run_make_sample(dest, load_taxonomy(taxonomy), images_per_class=images_per_class, overwrite=overwrite)
        _say(f"wrote a sample RadImageNet copy to {dest}")


@app.command()
def evaluate(
    benchmark: Annotated[
        Path, typer.Argument(help="Benchmark JSONL file, or a dataset folder (uses benchmark/test-*.jsonl).")
    ],
    predictions: Annotated[
        list[Path],
        typer.Argument(
            help='Prediction files: radvqa JSONL {"id", "prediction"}, VLMEvalKit .xlsx/.tsv, LLaVA answers '
            "JSONL or lmms-eval samples log (several files are merged).",
        ),
    ],
    prediction_format: Annotated[
        Optional[str],
        typer.Option("--format", help="radvqa | vlmevalkit | llava | lmms-eval (default: detected per file)."),
    ] = None,
    judge: Annotated[
        Optional[str],
        typer.Option("--judge", help="OpenAI-compatible base URL (e.g. http://localhost:8000/v1) to judge open answers."),
    ] = None,
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", help="Model name sent to the judge.")] = None,
    judge_config: Annotated[
        Optional[Path], typer.Option("--judge-config", help="Judge prompt and retry settings (see configs/judge.yaml).")
    ] = None,
    judge_cache: Annotated[
        Optional[Path], typer.Option("--judge-cache", help="Judge verdict cache folder (default ~/.cache/radvqa/judge).")
    ] = None,
    taxonomy: Annotated[
        Optional[Path],
        typer.Option("--taxonomy", help="Taxonomy for answer synonyms (default: the dataset's manifest, else built-in)."),
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON here.")] = None,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Score questions without a prediction as wrong instead of failing.")
    ] = False,
    blind: Annotated[
        Optional[Path],
        typer.Option("--blind", help="The same model's text-only predictions: adds multimodal gain and leakage."),
    ] = None,
    compare: Annotated[
        Optional[Path], typer.Option("--compare", help="Another model's predictions: adds the paired difference.")
    ] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write a self-contained HTML report here.")] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="Bootstrap replicates (resampling images) for the 95% intervals.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap draws.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar while the judge runs.")] = False,
) -> None:
    """Score a model's predictions on the benchmark: nine columns and more, per region, modality and normal/abnormal."""
    from .evaluate import evaluate as run_evaluate
    from .writers import write_report

    with _errors():
        _check_json(json_out)
        _check_json(html, "--html")
        if (judge is None) != (judge_model is None):
            raise typer.BadParameter("--judge and --judge-model go together")
        scorer = None
        if judge is not None and judge_model is not None:
            from .judge import Judge, load_judge_settings

            scorer = Judge(judge, judge_model, load_judge_settings(judge_config), judge_cache)
        tax = load_taxonomy(taxonomy) if taxonomy is not None else None
        report = run_evaluate(
            benchmark,
            predictions,
            taxonomy=tax,
            judge=scorer,
            allow_missing=allow_missing,
            progress=_progress(quiet),
            blind=blind,
            compare=compare,
            replicates=bootstrap,
            seed=seed,
            prediction_format=prediction_format,
        )
        for line in report.lines():
            typer.echo(line)
        if json_out is not None:
            write_report(json_out, report.to_dict())
        if html is not None:
            from .report_html import write_html

            write_html(report, html)


@app.command()
def predict(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset folder (uses benchmark/test-*.jsonl), or a benchmark JSONL file.")
    ],
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1.")
    ],
    model: Annotated[str, typer.Option("--model", help="Model name sent with every request.")],
    out: Annotated[
        Path, typer.Option(_OUTPUT, "-o", metavar="DEST", help="Predictions JSONL; an existing file is resumed.")
    ],
    root: Annotated[
        Optional[Path], typer.Option("--root", help="RadImageNet copy (default: the manifest's source root).")
    ] = None,
    blind: Annotated[
        Optional[str],
        typer.Option(
            "--blind",
            help="Text-only control: none (no image), blank (black image, same size), guess (no image, told to guess).",
        ),
    ] = None,
    concurrency: Annotated[
        Optional[int], typer.Option("--concurrency", min=1, help="Requests in flight (default from config: 4).")
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="Prompts and retry settings (see configs/predict.yaml).")
    ] = None,
    cache: Annotated[
        Optional[Path], typer.Option("--cache", help="Reply cache folder (default ~/.cache/radvqa/predict).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Ask a served vision model every benchmark question (API key from RADVQA_API_KEY or OPENAI_API_KEY)."""
    from .predict import BLIND_MODES, load_predict_settings
    from .predict import predict as run_predict

    with _errors():
        if blind is not None and blind not in BLIND_MODES:
            raise typer.BadParameter(f"expected one of {', '.join(BLIND_MODES)}", param_hint="--blind")
        result = run_predict(
            dataset, out, endpoint, model, root=root, blind=blind, concurrency=concurrency,
            settings=load_predict_settings(config), cache_dir=cache, progress=_progress(quiet),
        )
        if not quiet:
            for line in result.lines():
                _say(line)


@app.command()
def audit(
    dataset: DatasetArg,
    max_gain: Annotated[
        Optional[float],
        typer.Option(
            "--max-gain",
            help="Points a text-only attacker may beat the no-information baseline by "
            "(default 3 on the benchmark, 2 on val).",
        ),
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON here.")] = None,
    max_train: Annotated[
        int,
        typer.Option(
            "--max-train", min=1, help="Train questions per slot to fit on (a fixed hash-chosen subset beyond)."
        ),
    ] = 50_000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Text-only shortcut audit: exit 1 when a model without the image beats chance by > --max-gain."""
    from .audit import audit_dataset
    from .writers import write_report

    with _errors():
        _check_json(json_out)
        report = audit_dataset(dataset, max_gain=max_gain, max_train=max_train, progress=_progress(quiet))
        for line in report.lines():
            typer.echo(line)
        if json_out is not None:
            write_report(json_out, report.to_dict())
        if not report.passed:
            raise typer.Exit(1)


# ---- export, stats (issue 6) ------------------------------------------------------------


@app.command("export")
def export(
    dataset: DatasetArg,
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="llava | sharegpt | hf-parquet | vlmevalkit | llava-eval | lmms-eval."),
    ],
    dest: Annotated[Path, typer.Option(_OUTPUT, "-o", metavar="DEST", help="Folder to write the export into.")],
    group: Annotated[
        str, typer.Option("--group", help="llava/sharegpt: one conversation per 'question' or per 'image'.")
    ] = "question",
    root: Annotated[
        Optional[Path],
        typer.Option(
            "--root",
            help="RadImageNet copy the images are read from and absolute paths point into "
            "(default: the manifest's source root).",
        ),
    ] = None,
    relative: Annotated[
        bool,
        typer.Option(
            "--relative",
            help="llava, sharegpt, llava-eval: image paths relative to the copy (LLaVA --image_folder, "
            "LLaMA-Factory media_dir) instead of absolute.",
        ),
    ] = False,
    embed: Annotated[
        bool,
        typer.Option(
            "--embed/--no-embed", help="hf-parquet, lmms-eval: embed image bytes (default) or write absolute paths."
        ),
    ] = True,
    only: Annotated[
        Optional[list[str]],
        typer.Option("--only", help="Export only this config (repeatable): alignment, instruct, benchmark."),
    ] = None,
    shard_size: Annotated[
        Optional[int],
        typer.Option("--shard-size", help="hf-parquet: rows per file (default 10,000 with images, else 500,000)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous export in the folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a dataset for LLaVA, ShareGPT/LLaMA-Factory, Hugging Face (parquet), VLMEvalKit or lmms-eval."""
    from .export import export_dataset

    with _errors():
        result = export_dataset(
            dataset,
            dest,
            format,
            group=group,
            root=root,
            configs=tuple(only) if only else None,
            shard_rows=shard_size,
            overwrite=overwrite,
            progress=_progress(quiet),
            relative=relative,
            embed=embed,
        )
        if not quiet:
            for line in result.lines():
                _say(line)


@app.command("stats")
def stats(
    dataset: DatasetArg,
    report: Annotated[
        Optional[Path],
        typer.Option(
            _OUTPUT,
            "-o",
            metavar="DEST",
            help="Report folder for stats.md and PNG charts (default: DATASET/stats; the card embeds them).",
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Count records per split, region, modality, pathology and slot; check letter and yes/no balance."""
    from .card import STATS_FOLDER, write_card
    from .dataset_files import load_manifest
    from .ownership import check_folder_destination
    from .stats import can_draw_charts, compute_stats, tables, to_text, write_report

    with _errors():
        manifest = load_manifest(dataset)
        folder = report if report is not None else dataset / STATS_FOLDER
        check_folder_destination(folder, "report folder")
        result = compute_stats(dataset, manifest, progress=_progress(quiet))
        for table in tables(result):
            typer.echo(to_text(table))
        charts = can_draw_charts()
        if not charts:
            _say("note: no PNG charts, matplotlib is not installed (pip install 'radvqa[stats]')")
        written = write_report(result, folder, manifest, charts=charts)
        if report is None or report.resolve() == (dataset / STATS_FOLDER).resolve():
            write_card(dataset, manifest)  # the card embeds the charts it finds in DATASET/stats
        if not quiet:
            _say(f"wrote {written.markdown} and {len(written.charts)} charts")


# --- ingest-dicom ----------------------------------------------------------------------------


@app.command("ingest-dicom")
def ingest_dicom_command(
    input_dir: Annotated[Path, typer.Argument(metavar="INPUT", help="Folder of DICOM files (any names, any nesting).")],
    out: Annotated[
        Path, typer.Option(_OUTPUT, "-o", metavar="DEST", help="Folder for the RadImageNet-shaped copy (a ROOT).")
    ],
    labels: Annotated[
        Path,
        typer.Option(
            "--labels",
            help="CSV: one key column (series_uid, study_uid or path under INPUT) plus modality,anatomy,pathology "
            "(RadImageNet folder names) and an optional window column.",
        ),
    ],
    salt: Annotated[
        Optional[str],
        typer.Option(
            envvar="RADVQA_SALT",
            help="Secret salt for output names and the patient split (or env RADVQA_SALT); keep it to resume "
            "or to add studies later with the same split.",
        ),
    ] = None,
    slices: Annotated[str, typer.Option(help="Slices per series: middle, all, every:N or count:K.")] = "middle",
    size: Annotated[int, typer.Option(help="Output side in pixels (square, Lanczos-resized).")] = 224,
    window: Annotated[
        str, typer.Option(help="auto: CT window by anatomy from the table, MR percentiles; dicom: the file's own window.")
    ] = "auto",
    windows: Annotated[
        Optional[Path], typer.Option("--windows", help="Windows table YAML (see configs/windows.yaml).")
    ] = None,
    split_ratios: Annotated[
        Optional[str],
        typer.Option(help="Patient shares TRAIN,VAL,TEST (default from configs/default.yaml: 0.889,0.037,0.074)."),
    ] = None,
    taxonomy: TaxonomyOpt = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    executor: ExecutorOpt = "local",
    scheduler: SchedulerOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous copy in DEST (start clean).")] = False,
    include_derived: Annotated[
        bool,
        typer.Option(
            "--include-derived",
            help="Also convert ImageType SECONDARY images (reformats); burned-in, localizer, screen-save and "
            "Secondary Capture images are never converted.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert DICOM CT/MR studies into RadImageNet-style PNG slices that `generate` reads."""
    from .dicom import load_windows
    from .errors import SourceError
    from .ingest import IngestOptions, ingest_dicom, parse_ratios, parse_slices

    with _errors():
        if not salt:
            raise typer.BadParameter("give --salt (or set RADVQA_SALT): a secret that keys names and the split")
        options = IngestOptions(
            salt=salt,
            size=size,
            slices=parse_slices(slices),
            window=window,
            split_ratios=parse_ratios(split_ratios) if split_ratios else load_config().split_ratios,
            workers=workers,
            overwrite=overwrite,
            include_derived=include_derived,
        )
        result = ingest_dicom(
            input_dir,
            out,
            labels,
            load_taxonomy(taxonomy),
            load_windows(windows),
            options,
            progress=lambda total, desc: progress_bar(total, desc, quiet=quiet, unit="img"),
            executor=_executor(executor, workers, scheduler),
        )
        if not quiet and result.resumed:
            _say(f"resumed the earlier run in {out}")
        for line in result.report.problem_lines() if quiet else result.report.lines():
            _say(line)  # skip reasons and warnings even with --quiet
        if not result.report.ingested:
            raise SourceError(f"{input_dir}: no slice was ingested (reasons in {result.report_path})")

# -- validate, validate-distractors ----------------------------------------------------------

JsonReportOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the full report (counts, examples, rates) as JSON here.")]
ValidateWorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Worker processes (shards are checked in parallel).")]
ShowOpt = Annotated[int, typer.Option("--show", min=0, help="Example findings printed per rule.")]


def _finish_validation(report: object, json_report: Path | None, show: int, quiet: bool) -> None:
    from .validate import Report
    from .writers import write_report

    assert isinstance(report, Report)
    if json_report is not None:
        write_report(json_report, report.to_dict())
    lines = report.lines(per_rule=show)
    for line in lines if not quiet else lines[-2:]:
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


def _check_json(report: Path | None, flag: str = "--json") -> None:
    """A report destination is checked before the work, so a bad path never loses the report."""
    from .ownership import check_file_destination

    if report is not None:
        check_file_destination(report, flag)


@app.command("validate-distractors")
def validate_distractors_command(
    dataset: DatasetArg,
    json_report: JsonReportOpt = None,
    workers: ValidateWorkersOpt = 1,
    executor: ExecutorOpt = "local",
    scheduler: SchedulerOpt = None,
    show: ShowOpt = 5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary lines.")] = False,
) -> None:
    """Check every multiple-choice and closed question: options, letters, names, balance, name cues."""
    from .validate import validate_distractors

    with _errors(unreadable_exit=2):
        _check_json(json_report)
        report = validate_distractors(
            dataset, workers=workers, progress=_progress(quiet),
            executor=_executor(executor, workers, scheduler),
        )
        _finish_validation(report, json_report, show, quiet)


@app.command("validate")
def validate_command(
    dataset: DatasetArg,
    root: Annotated[
        Optional[Path], typer.Option("--root", help="RadImageNet copy: check that every image exists under it.")
    ] = None,
    json_report: JsonReportOpt = None,
    workers: ValidateWorkersOpt = 1,
    executor: ExecutorOpt = "local",
    scheduler: SchedulerOpt = None,
    show: ShowOpt = 5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary lines.")] = False,
) -> None:
    """Check a whole dataset: fields, text, ids, images, shards vs manifest, benchmark leaks, distractors."""
    from .validate import validate_dataset

    with _errors(unreadable_exit=2):
        _check_json(json_report)
        report = validate_dataset(
            dataset, root=root, workers=workers, progress=_progress(quiet),
            executor=_executor(executor, workers, scheduler),
        )
        _finish_validation(report, json_report, show, quiet)


# -- browse ------------------------------------------------------------------------------------


@app.command("browse")
def browse_command(
    dataset: DatasetArg,
    dest: Annotated[
        Path, typer.Option(_OUTPUT, "-o", metavar="DEST", help="Folder to write the gallery into (index.html).")
    ],
    root: Annotated[
        Optional[Path],
        typer.Option("--root", help="RadImageNet copy to read the images from (default: the manifest's source root)."),
    ] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="Images per class and split.")] = 4,
    split: Annotated[
        Optional[list[str]], typer.Option("--split", help="Only this split (repeatable): train, val, test.")
    ] = None,
    benchmark: Annotated[
        bool, typer.Option("--benchmark", help="Every benchmark image (the test split), not a per-class sample.")
    ] = False,
    single_file: Annotated[
        bool, typer.Option("--single-file", help="One self-contained index.html (images as data URLs).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the per-class sample.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a previous gallery in the folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a static offline gallery (open index.html from disk) of a stratified sample of a dataset."""
    from .browse import build_gallery

    with _errors():
        result = build_gallery(
            dataset,
            dest,
            root=root,
            per_class=per_class,
            splits=tuple(split) if split else None,
            benchmark=benchmark,
            single_file=single_file,
            overwrite=overwrite,
            seed=seed,
            progress=_progress(quiet),
        )
        for warning in result.warnings:
            _say(f"warning: {warning}")
        if not quiet:
            for line in result.lines():
                _say(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
