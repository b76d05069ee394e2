"""Benchmark `radvqa generate` on a full-scale RadImageNet-shaped copy.

Builds a copy with the real class imbalance (scripts/radimagenet_counts.csv: 833,676 CT/MRI
images) in a temporary folder, with tiny distinct placeholder PNGs (generation decodes only
the benchmark candidates), then times `radvqa generate` for each worker count and prints wall time, records per
second and peak memory (max RSS of any process of the run). In the same run it times a floor:
a bare loop, on as many processes, that only formats the same number of records of the same
shape with orjson and writes them (no reading, no sampling, no sha256), and prints the ratio.

With ``--baseline DIR`` (a checkout of an earlier radvqa, e.g. ``git worktree add DIR v0.1``)
the same generate of that version is timed too, alternating with this one in each round, and
the ratio printed: the figure behind "within 10% of before".

    python scripts/bench_generate.py                 # full scale, --workers 1 and 2
    python scripts/bench_generate.py --scale 0.1 --workers 2
    python scripts/bench_generate.py --keep /tmp/copy --workers 2 --rounds 3 --baseline /tmp/radvqa-0.1
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from radvqa.sample import placeholder_png, write_copy
from radvqa.taxonomy import load_taxonomy

COUNTS = Path(__file__).with_name("radimagenet_counts.csv")
PLACEHOLDER_SIZE = len(placeholder_png(0))
OFFICIAL_SHARES = (0.037, 0.074)  # val, test shares of the official RadiologyAI CSVs


def class_counts(scale: float) -> dict[int, int]:
    """Class index -> image count, scaled (every class keeps at least 3 images)."""
    taxonomy = load_taxonomy()
    rows = csv.DictReader(line for line in COUNTS.open() if not line.startswith("#"))
    counts = {}
    for row in rows:
        cls = taxonomy.resolve(row["modality"], row["anatomy"], row["pathology"])
        assert cls is not None, row
        counts[cls.index] = max(3, round(int(row["count"]) * scale))
    return counts


def realistic_sizes(root: Path) -> None:
    """Pad every image (sparse zeros, which PNG decoders ignore) to a size spread like real
    224x224 PNGs (20-60 KB), so duplicate detection meets realistic size collisions."""
    for folder, _, files in os.walk(root / "radiology_ai"):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                head = handle.read(PLACEHOLDER_SIZE)
            size = 20_000 + int.from_bytes(hashlib.blake2b(head, digest_size=4).digest(), "little") % 40_000
            os.truncate(path, size)


_RECORD = {
    "id": "0123456789abcdef-pathology_mc", "image": "radiology_ai/MR/af/Plantar_plate_tear/af-Plantar_plate_tear000001.png",
    "split": "train", "task": "pathology", "slot": "pathology_mc", "question_type": "multiple_choice",
    "question": "What is the most likely finding in the ankle and foot?\nA. plantar plate tear\nB. hematoma\n"
    "C. no pathology seen\nD. coalition", "choices": ["plantar plate tear", "hematoma", "no pathology seen", "coalition"],
    "answer": "A", "answer_text": "plantar plate tear", "modality": "MRI", "region": "ankle and foot",
    "pathology": "plantar plate tear", "label": "af-Plantar_plate_tear", "is_abnormal": True,
    "template_id": "pathology_mc.train.3",
}


def _floor_part(args: tuple[str, int]) -> None:
    """Format ``count`` records (a fresh dict each, as a renderer builds them) and write them to ``path``."""
    import orjson

    path, count = args
    dumps, opt, base = orjson.dumps, orjson.OPT_APPEND_NEWLINE, _RECORD
    with open(path, "wb") as handle:
        chunk = []
        for i in range(count):
            chunk.append(dumps({**base, "id": f"{i:016x}-pathology_mc"}, option=opt))
            if len(chunk) == 4096:
                handle.write(b"".join(chunk))
                chunk = []
        handle.write(b"".join(chunk))


def floor(records: int, workers: int, folder: Path) -> float:
    """Wall seconds of the bare format-and-write loop over ``records`` on ``workers`` processes."""
    import multiprocessing

    parts = [(str(folder / f"floor-{i}.jsonl"), records // workers + (i < records % workers)) for i in range(workers)]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_floor_part, parts)
    wall = time.perf_counter() - start
    for path, _ in parts:
        os.unlink(path)
    return wall


def run(cmd: list[str], checkout: Path | None = None) -> tuple[float, float]:
    """Run a command (importing radvqa from ``checkout`` if given); return (wall seconds, peak RSS in MB)."""
    env = None if checkout is None else {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=checkout, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def generate(root: Path, out: Path, workers: int, checkout: Path | None) -> tuple[float, float, int]:
    """Time one ``radvqa generate`` into ``out`` (removed after); (wall s, peak RSS MB, records)."""
    import orjson

    wall, peak = run(
        [sys.executable, "-m", "radvqa.cli", "generate", str(root), "-o", str(out), "--workers", str(workers), "--quiet"],
        checkout,
    )
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    records = sum(n for splits in manifest["records"].values() for n in splits.values())
    shutil.rmtree(out)
    return wall, peak, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real class sizes")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
    parser.add_argument("--keep", type=Path, help="build the copy here and keep it (reused if present)")
    parser.add_argument("--rounds", type=int, default=1, help="timings per worker count")
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier radvqa to time alongside")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="radvqa-bench-"))
    root = args.keep or tmp / "copy"
    try:
        if not (root / "RadiologyAI_train.csv").exists():
            start = time.perf_counter()
            counts = class_counts(args.scale)
            write_copy(root, load_taxonomy(), counts, image_bytes=placeholder_png, quirks=False, shares=OFFICIAL_SHARES)
            realistic_sizes(root)
            print(f"built copy: {sum(counts.values()):,} images in {time.perf_counter() - start:.1f} s")
        for workers in (int(w) for w in args.workers.split(",")):
            for round_ in range(args.rounds):
                before = 0.0
                if args.baseline and round_ % 2:  # alternate which version meets the warmer cache
                    before, _, _ = generate(root, tmp / f"out-{workers}", workers, args.baseline.resolve())
                wall, peak, records = generate(root, tmp / f"out-{workers}", workers, None)
                if args.baseline and not round_ % 2:
                    before, _, _ = generate(root, tmp / f"out-{workers}", workers, args.baseline.resolve())
                bare = floor(records, workers, tmp)
                line = (
                    f"workers={workers}: {wall:.1f} s wall, {records:,} records, "
                    f"{records / wall:,.0f} records/s, peak RSS {peak:,.0f} MB; "
                    f"floor (format and write only) {bare:.1f} s, ratio {wall / bare:.2f}x"
                )
                if args.baseline:
                    line += f"; baseline {before:.1f} s, this / baseline {wall / before:.2f}x"
                print(line, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
