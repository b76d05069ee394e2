"""Benchmark the executors: `generate` and `ingest-dicom` with --executor local and dask, 1 and 2 workers.

Builds the full-scale RadImageNet-shaped copy of scripts/bench_generate.py (833,676 CT/MRI
images) and a DICOM set of scripts/bench_ingest.py (2,000 slices by default), runs each command
as a real subprocess and prints wall time, CPU time (the command and every worker it waited
for), CPU per record / per slice, and the overhead of Dask over the local pool at the same worker
count (the floor of the same run). With an existing cluster, pass --scheduler to time it instead
of a LocalCluster.

    python scripts/bench_scale.py                       # full scale, 2,000 slices
    python scripts/bench_scale.py --scale 0.05 --slices 400   # a quick look

A figure, not a test: run it by hand, on an otherwise idle machine when you can.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent))  # run from a checkout
sys.path.insert(0, str(SCRIPTS))

from bench_generate import OFFICIAL_SHARES, class_counts, realistic_sizes  # noqa: E402
from bench_ingest import build  # noqa: E402

from radvqa.sample import placeholder_png, write_copy  # noqa: E402
from radvqa.taxonomy import load_taxonomy  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run a command; (wall seconds, CPU seconds of it and the children it waited for)."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(cmd)}")
    return wall, usage.ru_utime + usage.ru_stime


def records_of(out: Path) -> int:
    """Records a generate run wrote, from its manifest."""
    import orjson

    manifest = orjson.loads((out / "manifest.json").read_bytes())
    return sum(n for splits in manifest["records"].values() for n in splits.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real class sizes (generate)")
    parser.add_argument("--slices", type=int, default=2000, help="DICOM slices (ingest-dicom)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--scheduler", help="time an existing Dask scheduler instead of a LocalCluster")
    parser.add_argument("--only", choices=("generate", "ingest"), help="run one of the two benchmarks")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    dask = ["--executor", "dask"] + (["--scheduler", args.scheduler] if args.scheduler else [])
    radvqa = [sys.executable, "-m", "radvqa.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="radvqa-bench-scale-"))
    try:
        if args.only != "ingest":
            root = tmp / "copy"
            counts = class_counts(args.scale)
            write_copy(root, load_taxonomy(), counts, image_bytes=placeholder_png, quirks=False, shares=OFFICIAL_SHARES)
            realistic_sizes(root)
            print(f"generate: {sum(counts.values()):,} images (scale {args.scale})")
            report(
                "generate", "record", workers,
                lambda n, extra, out: [*radvqa, "generate", str(root), "-o", str(out), "--workers", str(n), "--quiet", *extra],
                records_of, dask, tmp,
            )
        if args.only != "generate":
            labels = build(tmp / "dicom", args.slices)
            print(f"ingest-dicom: {args.slices:,} slices (CT 512x512, MR 256x256)")
            report(
                "ingest-dicom", "slice", workers,
                lambda n, extra, out: [
                    *radvqa, "ingest-dicom", str(tmp / "dicom" / "input"), "-o", str(out), "--labels", str(labels),
                    "--salt", "bench-salt", "--slices", "all", "--workers", str(n), "--quiet", *extra,
                ],
                lambda out: args.slices, dask, tmp,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    name: str,
    unit: str,
    workers: list[int],
    command: Callable[[int, list[str], Path], list[str]],
    count: Callable[[Path], int],
    dask: list[str],
    tmp: Path,
) -> None:
    """Time ``command`` for local and dask at each worker count; print figures against local."""
    for n in workers:
        figures: dict[str, tuple[float, float]] = {}
        for executor, extra in (("local", []), ("dask", dask)):
            out = tmp / f"{name}-{executor}-{n}"
            wall, cpu = timed(command(n, extra, out))
            items = count(out)
            figures[executor] = (wall, cpu)
            print(
                f"  {executor:5} --workers {n}: {wall:7.1f} s wall, {cpu:7.1f} s CPU, "
                f"{cpu / items * 1e6:8.1f} us CPU per {unit}, {items / wall:10,.0f} {unit}s/s"
            )
            shutil.rmtree(out)
        (local_wall, local_cpu), (dask_wall, dask_cpu) = figures["local"], figures["dask"]
        print(
            f"  dask over local at {n} workers: {dask_wall / local_wall - 1:+.1%} wall "
            f"({dask_wall - local_wall:+.1f} s), {dask_cpu / local_cpu - 1:+.1%} CPU ({dask_cpu - local_cpu:+.1f} s)"
        )


if __name__ == "__main__":
    main()
