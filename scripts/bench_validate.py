"""Time `radvqa validate` against `radvqa generate` on a large synthetic RadImageNet-shaped copy.

    python scripts/bench_validate.py --images 100000 [--workers 2] [--keep DIR]

Writes a copy of tiny distinct PNGs (all 150 classes, sizes skewed like a real copy; the
benchmark selection opens its candidates, so the bytes must be real, distinct images),
generates the dataset, then validates it (validate-distractors, validate, validate --root),
each in a fresh process, and prints records/s and peak memory (ru_maxrss of that process,
and of its largest worker with --workers > 1).
Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from radvqa.config import load_config
from radvqa.dataset import generate_dataset
from radvqa.sample import png_bytes, write_copy
from radvqa.taxonomy import load_taxonomy
from radvqa.templates import load_templates
from radvqa.validate import validate_dataset, validate_distractors


def peak_mb(who: int) -> float:
    """Peak resident memory in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def own_peak_mb() -> float:
    """Peak resident memory of this process image in MB.

    Linux carries ru_maxrss across fork and exec, so a child started by a big parent would
    report the parent's peak; VmHWM in /proc/self/status is reset by exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_mb(resource.RUSAGE_SELF)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (less sensitive to a busy machine)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def check(out: Path, root: Path | None, workers: int, distractors_only: bool) -> int:
    """Run one validation in this (fresh) process and print its figures as JSON."""
    cpu = cpu_seconds()
    if distractors_only:
        report = validate_distractors(out, workers=workers)
    else:
        report = validate_dataset(out, root=root, workers=workers)
    print(
        json.dumps(
            {
                "records": report.records,
                "seconds": report.seconds,
                "cpu": cpu_seconds() - cpu,
                "peak_mb": own_peak_mb(),
                "worker_mb": peak_mb(resource.RUSAGE_CHILDREN),
                "violations": sum(report.counts["violation"].values()),
                "warnings": sum(report.counts["warning"].values()),
            }
        )
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, help=argparse.SUPPRESS)  # internal: one validation run
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--distractors-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=100_000, help="images in the synthetic copy")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for generate and validate")
    parser.add_argument("--shard-size", type=int, default=500_000, help="records per shard")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    if args.check is not None:
        return check(args.check, args.root, args.workers, args.distractors_only)

    work = args.keep or Path(tempfile.mkdtemp(prefix="radvqa-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    taxonomy = load_taxonomy()
    # Skewed class sizes (log-normal), like RadImageNet's, so distractor fitting is realistic.
    weights = np.random.default_rng(0).lognormal(0.0, 1.0, len(taxonomy.classes))
    counts = {c.index: max(3, int(args.images * w / weights.sum())) for c, w in zip(taxonomy.classes, weights)}
    copy, out = work / "copy", work / "out"
    try:
        started = time.perf_counter()
        if not copy.exists():
            write_copy(copy, taxonomy, counts, image_bytes=png_bytes, quirks=False)
        print(f"copy: {sum(counts.values()):,} images in {time.perf_counter() - started:.1f} s")

        config = load_config().with_overrides(workers=args.workers, shard_size=args.shard_size)
        cpu = cpu_seconds()
        result = generate_dataset(copy, out, config, taxonomy, load_templates(), overwrite=True)
        records = sum(n for splits in result.records.values() for n in splits.values())
        generate_s, generate_cpu = result.seconds, cpu_seconds() - cpu
        print(
            f"generate: {records:,} records in {generate_s:.1f} s, {generate_cpu:.1f} s CPU "
            f"({records / generate_s:,.0f} records/s)"
        )

        for name, extra in (
            ("validate-distractors", ["--distractors-only"]),
            ("validate", []),
            ("validate --root", ["--root", str(copy)]),
        ):
            command = [sys.executable, __file__, "--check", str(out), "--workers", str(args.workers), *extra]
            figures = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            seconds = figures["seconds"]
            print(
                f"{name}: {figures['records']:,} records in {seconds:.1f} s, {figures['cpu']:.1f} s CPU "
                f"({figures['records'] / seconds:,.0f} records/s; {seconds / generate_s:.2f}x generate time, "
                f"{figures['cpu'] / generate_cpu:.2f}x its CPU); peak memory {figures['peak_mb']:,.0f} MB"
                f"{' (largest worker ' + format(figures['worker_mb'], ',.0f') + ' MB)' if args.workers > 1 else ''}; "
                f"violations {figures['violations']}, warnings {figures['warnings']}"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
