"""Benchmark `radvqa browse` on a full-scale dataset against a floor measured in the same run.

Builds the RadImageNet-shaped copy of scripts/bench_generate.py (833,676 CT/MRI images at
--scale 1) and generates a dataset from it (or reuses one: --dataset OUT with its copy at the
manifest's source root), then times a 600-image gallery (`--split train --per-class 4`: 150
classes x 4) and, as the floor, a bare read of every line of the shards the gallery reads plus
600 bare thumbnail encodes. Prints wall time, the ratio to the floor and peak memory; a second
gallery with --per-class 1 shows that memory does not grow with the sample.

    python scripts/bench_browse.py                         # build, generate, time
    python scripts/bench_browse.py --scale 0.1             # a reduced copy
    python scripts/bench_browse.py --dataset /data/radvqa  # an existing dataset
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench_generate import OFFICIAL_SHARES, class_counts, realistic_sizes, run


def floor_seconds(out: Path, configs_splits: list[tuple[str, str]], root: Path, images: list[str]) -> float:
    """A bare streaming read of the shards, then 600 thumbnails: what any gallery builder must do."""
    from PIL import Image

    start = time.perf_counter()
    for config, split in configs_splits:
        for path in sorted(out.glob(f"{config}/{split}-*.jsonl")):
            with open(path, "rb") as handle:
                for _ in handle:
                    pass
    for relative in images:
        with Image.open(root / relative) as image:
            small = image.convert("L")
        small.thumbnail((160, 160))
        small.save(io.BytesIO(), format="PNG")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real class sizes")
    parser.add_argument("--dataset", type=Path, help="an existing dataset folder (skips building and generating)")
    parser.add_argument("--per-class", type=int, default=4, help="images per class of the timed gallery")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="radvqa-bench-browse-"))
    try:
        out = args.dataset
        if out is None:
            root, out = tmp / "copy", tmp / "out"
            from radvqa.sample import placeholder_png, write_copy
            from radvqa.taxonomy import load_taxonomy

            start = time.perf_counter()
            counts = class_counts(args.scale)
            write_copy(root, load_taxonomy(), counts, image_bytes=placeholder_png, quirks=False, shares=OFFICIAL_SHARES)
            realistic_sizes(root)
            print(f"built copy: {sum(counts.values()):,} images in {time.perf_counter() - start:.1f} s")
            wall, _ = run([sys.executable, "-m", "radvqa.cli", "generate", str(root), "-o", str(out), "--workers", "2", "-q"])
            print(f"generated the dataset in {wall:.1f} s")
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        records = manifest["records"]
        print(f"dataset: {sum(n for s in records.values() for n in s.values()):,} records, "
              f"{sum(1 for _ in out.glob('*/*.jsonl'))} shards")

        timings = {}
        for per_class in (args.per_class, 1):
            gallery = tmp / f"gallery-{per_class}"
            cmd = [sys.executable, "-m", "radvqa.cli", "browse", str(out), "-o", str(gallery), "--split", "train",
                   "--per-class", str(per_class)]
            start = time.perf_counter()
            process = subprocess.run(cmd, capture_output=True, text=True, check=True)
            timings[per_class] = time.perf_counter() - start
            wall, peak = run(cmd + ["--overwrite", "--quiet"])  # the second run: warm page cache, peak RSS
            summary = [line for line in process.stderr.splitlines() if line.startswith(("wrote", "read"))]
            print(f"browse --split train --per-class {per_class}: first run {timings[per_class]:.1f} s, "
                  f"second run {wall:.1f} s, peak RSS {peak:,.0f} MB")
            for line in summary:
                print(f"  {line}")
            if per_class == args.per_class:
                images = [c["image"] for c in orjson.loads(
                    (gallery / "data.js").read_bytes()[len(b"window.RADVQA_GALLERY = "):].rstrip().rstrip(b";")
                )["images"]]
                best = wall
        root_dir = Path(manifest["source"]["root"])
        floor = floor_seconds(out, [("instruct", "train"), ("alignment", "train"), ("benchmark", "test")], root_dir, images)
        print(f"floor (bare read of the same shards + {len(images)} thumbnails): {floor:.1f} s; "
              f"browse / floor = {best / floor:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
