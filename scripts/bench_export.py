"""Benchmark `radvqa export` and `radvqa stats`: throughput and peak memory at two scales.

Builds RadImageNet-shaped copies with the real class imbalance (see bench_generate.py) at
``--scale`` and ``2 * --scale``, generates a dataset from each (plus a benchmark stand-in made
from the val questions when generate wrote none), then times every export format and stats.
Peak RSS should stay flat when the dataset doubles: exports and stats stream.

    python scripts/bench_export.py                   # scale 0.02 and 0.04 (about 17K / 33K images)
    python scripts/bench_export.py --scale 0.05 --formats hf-parquet,llava
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from bench_generate import class_counts, placeholder

from radvqa.sample import write_copy
from radvqa.taxonomy import load_taxonomy

FORMATS = ("llava", "sharegpt", "hf-parquet", "vlmevalkit")


def add_benchmark(out: Path) -> None:
    """A benchmark stand-in (the val questions as split "test") when generate wrote none."""
    if list(out.glob("benchmark/test-*.jsonl")):
        return
    (out / "benchmark").mkdir()
    with open(out / "benchmark" / "test-00000-of-00001.jsonl", "wb") as handle:
        for shard in sorted(out.glob("instruct/val-*.jsonl")):
            for line in shard.read_bytes().splitlines():
                record = orjson.loads(line)
                record["split"] = "test"
                handle.write(orjson.dumps(record) + b"\n")


# The child reports its own high-water mark (VmHWM): ru_maxrss would also count the memory of
# this parent process, which the child inherits at fork and Linux keeps across exec.
_CHILD = """
import os
from radvqa.cli import app
try:
    app()
finally:
    peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")]
    open(os.environ["RADVQA_BENCH_PEAK"], "w").write(peak[0] if peak else "0")
"""


def run(args: list[str], tmp: Path) -> tuple[float, float]:
    """Run ``radvqa ARGS`` with stdout discarded; return (wall seconds, peak RSS in MB)."""
    report = tmp / "peak.txt"
    start = time.perf_counter()
    env = dict(os.environ, RADVQA_BENCH_PEAK=str(report))
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"command failed: radvqa {' '.join(args)}")
    return wall, int(report.read_text()) / 1024


def records_in(out: Path, config: str = "*") -> int:
    """JSONL lines of one config (default: all)."""
    return sum(1 for path in out.glob(f"{config}/*.jsonl") for _ in open(path, "rb"))


def bench(scale: float, formats: list[str], tmp: Path) -> None:
    root, out = tmp / f"copy-{scale}", tmp / f"out-{scale}"
    counts = class_counts(scale)
    write_copy(root, load_taxonomy(), counts, image_bytes=placeholder, quirks=False)
    wall, _ = run(["generate", str(root), "-o", str(out), "--workers", "2", "--quiet"], tmp)
    add_benchmark(out)
    total = records_in(out)
    bench_records = records_in(out, "benchmark")
    print(f"scale {scale}: {sum(counts.values()):,} images, {total:,} records (generate {wall:.1f} s)")
    for fmt in formats:
        dest = tmp / f"export-{scale}-{fmt}"
        extra = ["--root", str(root)] if fmt in ("hf-parquet", "vlmevalkit") else []
        wall, peak = run(["export", str(out), "--format", fmt, "-o", str(dest), "--quiet", *extra], tmp)
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 1e6
        n = bench_records if fmt == "vlmevalkit" else total
        print(
            f"  export {fmt:<11} {wall:6.1f} s  {n:>9,} records  {n / wall:>9,.0f} records/s  "
            f"peak RSS {peak:5.0f} MB  {size:,.0f} MB written"
        )
        shutil.rmtree(dest)
    wall, peak = run(["stats", str(out), "-o", str(tmp / "report"), "--quiet"], tmp)
    print(
        f"  stats              {wall:6.1f} s  {total:>9,} records  {total / wall:>9,.0f} records/s  "
        f"peak RSS {peak:5.0f} MB"
    )
    shutil.rmtree(root)
    shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.02, help="fraction of the real class sizes (then twice it)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated export formats")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="radvqa-bench-export-"))
    started = time.perf_counter()
    try:
        for scale in (args.scale, 2 * args.scale):
            bench(scale, args.formats.split(","), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
