"""A small synthetic RadImageNet-shaped copy: every CT/MRI class, three split CSVs, real quirks.

Used by ``radvqa generate --sample`` and by the tests. Images are tiny grayscale PNGs with
distinct content (so duplicate detection sees a realistic copy), except the planted quirks.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ConfigError
from .ownership import read_record
from .source import CSV_NAMES, TOP_FOLDER
from .writers import write_json
from .taxonomy import Taxonomy

SAMPLE_RECORD = "radvqa-sample.json"
ULTRASOUND_CLASSES = ("usabd/kidney", "usthyroid/thyroid_nodule")


@dataclass(frozen=True)
class Quirks:
    """Where the planted quirks went (tests assert on these)."""

    missing_file: str
    shared_name: tuple[str, str]
    identical: tuple[str, str]
    blank: str
    wrong_label: str
    unknown_class: str
    short_path: str


def png_bytes(seed: int, size: int = 16, blank: bool = False) -> bytes:
    """A tiny grayscale PNG whose pixels derive from ``seed`` (constant when ``blank``)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size), np.uint8) if blank else rng.integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


_TINY_PNG = png_bytes(0, size=2)


def placeholder_png(serial: int) -> bytes:
    """A 2x2 PNG made distinct by trailing bytes (decoders ignore them): fast for big test copies."""
    return _TINY_PNG + serial.to_bytes(8, "little")


SAMPLE_SHARES = (0.1, 0.2)  # val, test: small classes still get test images to cover


def split_of(position: int, count: int, shares: tuple[float, float] = SAMPLE_SHARES) -> str:
    """Deterministic per-class split: the last share test, the share before it val, one of each at least."""
    n_test = max(1, round(count * shares[1]))
    n_val = max(1, round(count * shares[0])) if count >= 3 else 0
    if position >= count - n_test:
        return "test"
    if position >= count - n_test - n_val:
        return "val"
    return "train"


# A planned file: its path under radiology_ai/ and its bytes, made only when it is written.
_Planned = tuple[str, Callable[[], bytes]]


def write_copy(
    dest: Path,
    taxonomy: Taxonomy,
    counts: Mapping[int, int],
    image_bytes: Callable[[int], bytes] = png_bytes,
    quirks: bool = True,
    shares: tuple[float, float] = SAMPLE_SHARES,
    record: Callable[[list[str]], None] | None = None,
) -> Quirks | None:
    """Write ``dest/radiology_ai/...`` and the three CSVs; ``counts`` maps class index -> images.

    ``record`` is given every path (relative to ``dest``) before the first file is written, so
    that a build stopped part-way still says what it wrote.
    """
    data = dest / TOP_FOLDER
    rows: dict[str, list[tuple[str, str]]] = {s: [] for s in CSV_NAMES}
    planned: list[_Planned] = []
    serial = 0
    for cls in taxonomy.classes:
        n = counts.get(cls.index, 0)
        for position in range(n):
            name = f"{cls.anatomy}-{cls.pathology}{position:06d}.png"
            planned.append((f"{cls.folder}/{name}", partial(image_bytes, serial)))
            serial += 1
            rows[split_of(position, n, shares)].append((f"{TOP_FOLDER}/{cls.folder}/{name}", cls.label))
    planted = _plant_quirks(planned, rows, image_bytes, serial) if quirks else None
    if record is not None:
        record(sorted(f"{TOP_FOLDER}/{rel}" for rel, _ in planned) + list(CSV_NAMES.values()))
    for cls in taxonomy.classes:
        (data / cls.folder).mkdir(parents=True, exist_ok=True)
    for rel, content in planned:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(content())
    for split, name in CSV_NAMES.items():
        lines = ["filename,label"] + [f"{path},{label}" for path, label in rows[split]]
        (dest / name).write_text("\n".join(lines) + "\n")
    return planted


def _plant_quirks(
    planned: list[_Planned],
    rows: dict[str, list[tuple[str, str]]],
    image_bytes: Callable[[int], bytes],
    serial: int,
) -> Quirks:
    # Ultrasound: two-level folders, listed in the CSVs, skipped by the reader.
    for i, label in enumerate(ULTRASOUND_CLASSES):
        planned.append((f"US/{label.split('/')[1]}/us{i:06d}.png", partial(image_bytes, serial + 100 + i)))
        rows["train"].append((f"{TOP_FOLDER}/US/{label.split('/')[1]}/us{i:06d}.png", label.replace("/", "-")))
    # A CSV row whose file is missing.
    missing = f"{TOP_FOLDER}/CT/abd/liver_lesion/abd-liver_lesion999999.png"
    rows["train"].append((missing, "abd-liver_lesion"))
    # The same file name in two class folders (different content).
    shared = ("MR/hip/labral_pathology/shared000001.png", "MR/shoulder/labral_pathology/shared000001.png")
    for i, rel in enumerate(shared):
        planned.append((rel, partial(image_bytes, serial + 200 + i)))
        rows["train"].append((f"{TOP_FOLDER}/{rel}", rel.split("/")[1] + "-labral_pathology"))
    # A byte-identical image filed under two pathologies: one copy in train, one in test.
    identical = ("MR/knee/meniscal_abnormality/dup000001.png", "MR/knee/acl_pathology/dup000001.png")
    for rel in identical:
        planned.append((rel, partial(image_bytes, serial + 300)))
    rows["train"].append((f"{TOP_FOLDER}/{identical[0]}", "knee-meniscal_abnormality"))
    rows["test"].append((f"{TOP_FOLDER}/{identical[1]}", "knee-acl_pathology"))
    # A blank (constant) image in the test split.
    blank = "CT/lung/Nodule/lung-Nodule-blank000001.png"
    planned.append((blank, partial(png_bytes, 0, blank=True)))
    rows["test"].append((f"{TOP_FOLDER}/{blank}", "lung-Nodule"))
    # A CSV label that disagrees with its folder.
    wrong = "MR/af/Plantar_plate_tear/af-Plantar_plate_tear-mislabelled.png"
    planned.append((wrong, partial(image_bytes, serial + 400)))
    rows["train"].append((f"{TOP_FOLDER}/{wrong}", "af-normal"))
    # A class folder that is not in the taxonomy.
    unknown = "MR/knee/mystery_finding/knee-mystery000001.png"
    planned.append((unknown, partial(image_bytes, serial + 500)))
    rows["train"].append((f"{TOP_FOLDER}/{unknown}", "knee-mystery_finding"))
    # A path written relative to radiology_ai/ (some users' CSVs), with a Windows separator.
    short = "MR/spine/foraminal_pathlogy/spine-foraminal_pathlogy-short.png"
    planned.append((short, partial(image_bytes, serial + 600)))
    rows["val"].append((short.replace("/", "\\"), "spine-foraminal_pathlogy"))
    return Quirks(missing, shared, identical, blank, wrong, unknown, short)


def build_sample(dest: Path, taxonomy: Taxonomy, images_per_class: int = 10, seed: int = 0) -> Quirks | None:
    """The built-in sample: every class with ``images_per_class`` images (+-2, seeded), all quirks.

    ``dest/radvqa-sample.json`` records the files written, so ``make-sample --overwrite``
    (and ``generate --sample --overwrite``) remove exactly those.
    """
    if images_per_class < 1:
        raise ConfigError(f"--images-per-class must be at least 1, not {images_per_class}")
    dest = Path(dest)
    rng = random.Random(seed)
    counts = {c.index: max(3, images_per_class + rng.randint(-2, 2)) for c in taxonomy.classes}
    planted = write_copy(dest, taxonomy, counts, record=partial(_write_record, dest))
    return planted


def _write_record(dest: Path, files: list[str]) -> None:
    """The sample's record, written before its files: a build stopped part-way is still ours."""
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / SAMPLE_RECORD, {"format": "radvqa-sample", "files": files})


def sample_files(dest: Path) -> list[str] | None:
    """The files a previous ``build_sample`` wrote in ``dest`` (with its record), None if none."""
    files = read_record(Path(dest) / SAMPLE_RECORD)
    return None if files is None else files + [SAMPLE_RECORD]


def make_sample(dest: Path, taxonomy: Taxonomy, images_per_class: int = 10, overwrite: bool = False) -> None:
    """``radvqa make-sample``: build the sample in ``dest``, replacing only a previous sample there."""
    from .ownership import claim_output

    if images_per_class < 1:
        raise ConfigError(f"--images-per-class must be at least 1, not {images_per_class}")
    claim_output(Path(dest), overwrite, sample_files, "sample folder")
    build_sample(Path(dest), taxonomy, images_per_class=images_per_class)
