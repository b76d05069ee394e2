"""Benchmark ``ingest-dicom`` against a floor that does the same work in one bare loop.

Builds a multi-series CT/MR set in a temporary folder from pydicom's bundled CT_small.dcm
(upsampled to 512x512) and MR_small.dcm (upsampled to 256x256), each slice a little
different. The floor reads each file, decodes it, applies rescale and a linear window in
numpy, resizes to --size with Lanczos and writes the PNG: what any converter must do. Then
--workers 1 and 2 run the real command. Printed: slices/s and CPU ms per slice for each, the
1-worker CPU per slice as a multiple of the floor's (target <= 1.25x) and the 2-worker speed-up
over 1 worker (target >= 1.7x on 2 free cores). Rounds alternate floor and ingest and the best
of each is printed, which keeps the ratios meaningful on a shared machine.

    python scripts/bench_ingest.py --slices 2000        # a few thousand slices
    python scripts/bench_ingest.py --slices 400         # a quick look

A figure, not a test: run it by hand on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from PIL import Image
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

SERIES_LENGTH = 50


def build(folder: Path, slices: int, seed: int = 0) -> Path:
    """Write ``slices`` slices in series of SERIES_LENGTH, alternating CT 512^2 and MR 256^2."""
    rng = np.random.default_rng(seed)
    templates = {}
    for modality, name, factor in (("CT", "CT_small.dcm", 4), ("MR", "MR_small.dcm", 4)):
        found = pydicom.data.get_testdata_file(name, download=False)  # bundled in the wheel
        assert isinstance(found, str), name
        ds = pydicom.dcmread(found)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # MR_small is DERIVED\\SECONDARY, skipped by default
        base = np.kron(ds.pixel_array, np.ones((factor, factor), dtype=ds.pixel_array.dtype))
        templates[modality] = (ds, base)
    rows = ["series_uid,modality,anatomy,pathology"]
    written = 0
    series = 0
    while written < slices:
        modality = "CT" if series % 2 == 0 else "MR"
        ds, base = templates[modality]
        uid = generate_uid()
        rows.append(f"{uid},{modality},{'abd' if modality == 'CT' else 'brain'},normal")
        ds.SeriesInstanceUID = uid
        ds.StudyInstanceUID = generate_uid()
        ds.PatientID = f"BENCH-{series // 2}"
        for k in range(min(SERIES_LENGTH, slices - written)):
            noise = rng.integers(-20, 21, size=base.shape)
            pixels = np.clip(base.astype(np.int32) + noise, 0, 4000).astype(base.dtype)
            ds.set_pixel_data(pixels, "MONOCHROME2", 16)
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.ImagePositionPatient = [0.0, 0.0, float(k)]
            ds.InstanceNumber = k + 1
            path = folder / "input" / f"s{series:04d}" / f"{rng.integers(1 << 40):x}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            written += 1
        series += 1
    labels = folder / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return labels


def floor(input_dir: Path, out: Path, size: int) -> tuple[int, float, float]:
    """The bare loop: dcmread, decode, rescale + linear window, Lanczos resize, PNG write (count, s, CPU s)."""
    out.mkdir()
    files = sorted(p for p in input_dir.rglob("*.dcm"))
    cpu, started = _cpu(), time.perf_counter()
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        values = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        grey = np.clip((values - (40 - 200)) * (255 / 400), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey).resize((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        (out / f"{i}.png").write_bytes(buffer.getvalue())
    return len(files), time.perf_counter() - started, _cpu() - cpu


def _keep(best_cpu: dict[str, float], best_rate: dict[str, float], name: str, cpu: float, rate: float) -> None:
    """Keep the lowest CPU per slice and the highest rate seen for ``name``."""
    best_cpu[name] = min(cpu, best_cpu.get(name, cpu))
    best_rate[name] = max(rate, best_rate.get(name, rate))


def _cpu() -> float:
    """CPU seconds of this process and its finished children: fair figures on a busy machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=2000, help="slices to generate (default 2000)")
    parser.add_argument("--size", type=int, default=224, help="output size (default 224)")
    parser.add_argument("--workers", default="1,2", help="worker counts to time (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, best kept (default 3)")
    args = parser.parse_args()
    # Imported here, not at the top: spawned workers re-import this script as their main module,
    # and ingest's workers are meant to load radvqa.ingest_tasks only (no pandas).
    from radvqa.dicom import load_windows
    from radvqa.ingest import IngestOptions, SliceSpec, ingest_dicom
    from radvqa.taxonomy import load_taxonomy

    taxonomy, windows = load_taxonomy(), load_windows()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        labels = build(folder, args.slices)
        print(f"built {args.slices} slices (CT 512x512, MR 256x256) in {time.perf_counter() - started:.1f} s")
        # Rounds alternate the floor and each worker count; the best of each is kept, so a burst of
        # load from other processes hurts one round, not the comparison.
        best_cpu: dict[str, float] = {}
        best_rate: dict[str, float] = {}
        for round_ in range(args.rounds):
            count, seconds, cpu = floor(folder / "input", folder / f"floor-{round_}", args.size)
            _keep(best_cpu, best_rate, "floor", cpu / count, count / seconds)
            shutil.rmtree(folder / f"floor-{round_}")
            for workers in (int(w) for w in args.workers.split(",")):
                options = IngestOptions(salt="bench-salt-1234", size=args.size, slices=SliceSpec("all"), workers=workers)
                cpu_before, started = _cpu(), time.perf_counter()
                root = folder / f"root-{workers}-{round_}"
                result = ingest_dicom(folder / "input", root, labels, taxonomy, windows, options)
                seconds = time.perf_counter() - started
                written = result.report.written
                _keep(best_cpu, best_rate, f"--workers {workers}", (_cpu() - cpu_before) / written, written / seconds)
                shutil.rmtree(root)
        floor_cpu = best_cpu["floor"]
        print(f"best of {args.rounds} rounds:")
        for name in best_cpu:
            label = f"floor (decode, window, resize to {args.size}, PNG)" if name == "floor" else f"ingest-dicom {name}"
            print(
                f"  {label:45s} {best_rate[name]:8.1f} slices/s, CPU {best_cpu[name] * 1000:.2f} ms per slice "
                f"= {best_cpu[name] / floor_cpu:.2f}x the floor's"
            )
        for name, rate in best_rate.items():
            if name.startswith("--workers") and name != "--workers 1" and "--workers 1" in best_rate:
                print(f"  {name} is {rate / best_rate['--workers 1']:.2f}x as fast as --workers 1 (wall clock)")
        print(f"(machine load average: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores)")

if __name__ == "__main__":
    main()
