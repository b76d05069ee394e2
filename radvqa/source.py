"""Read a local RadImageNet copy into an image table (one row per usable CT/MRI image).

The copy is ``ROOT/radiology_ai/{CT,MR,US}/...`` plus optional ``RadiologyAI_{train,val,test}.csv``
files (SPEC section 1). Class and modality come from the path, never from the CSV label. Every
problem row is counted in a :class:`SourceReport` with a few examples, and the run goes on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import SourceError
from .taxonomy import Taxonomy

SPLITS = ("train", "val", "test")
CSV_NAMES = {split: f"RadiologyAI_{split}.csv" for split in SPLITS}
TOP_FOLDER = "radiology_ai"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
_EXAMPLES = 3
# The first path component that is CT, MR or US starts the canonical image id.
_CANONICAL = r"^(?:.*?/)?((?:CT|MR|US)/.*)$"


@dataclass
class SourceReport:
    """What the reader found: counts per outcome, a few examples of each problem, warnings."""

    root: str = ""
    data_dir: str = ""
    split_source: str = ""
    files_on_disk: int = 0
    images: int = 0
    per_split: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def skip(self, reason: str, items: list[str] | pd.Series, count: int | None = None) -> None:
        """Record ``count`` (default: len(items)) skipped entries for ``reason``."""
        n = len(items) if count is None else count
        if n == 0:
            return
        self.skipped[reason] = self.skipped.get(reason, 0) + n
        kept = self.examples.setdefault(reason, [])
        kept.extend(list(items[: _EXAMPLES - len(kept)]) if len(kept) < _EXAMPLES else [])

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [
            f"source: {self.data_dir} ({self.files_on_disk} image files, splits from {self.split_source})",
            f"images used: {self.images} ("
            + ", ".join(f"{s} {n}" for s, n in self.per_split.items())
            + ")",
        ]
        for reason, n in self.skipped.items():
            examples = ", ".join(self.examples.get(reason, []))
            out.append(f"skipped {n}: {reason}" + (f" (e.g. {examples})" if examples else ""))
        return out

    def to_dict(self) -> dict[str, object]:
        """Plain dict for the manifest."""
        return {
            "split_source": self.split_source,
            "files_on_disk": self.files_on_disk,
            "images": self.images,
            "per_split": self.per_split,
            "skipped": self.skipped,
            "examples": self.examples,
        }


@dataclass(frozen=True)
class Layout:
    """Where the image folders and split CSVs of a copy are."""

    root: Path
    data_dir: Path
    prefix: str
    csvs: dict[str, Path]


def locate(root: Path | str) -> Layout:
    """Find the folder holding CT/MR/US (ROOT, ROOT/radiology_ai or a renamed top folder)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder")

    def has_modalities(folder: Path) -> bool:
        return any((folder / m).is_dir() for m in ("CT", "MR", "US"))

    if has_modalities(root):
        data_dir = root
    elif (root / TOP_FOLDER).is_dir() and has_modalities(root / TOP_FOLDER):
        data_dir = root / TOP_FOLDER
    else:
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and has_modalities(p))
        if len(candidates) != 1:
            found = "several" if candidates else "no"
            raise SourceError(
                f"{root}: found {found} folder with CT/, MR/ or US/ inside; pass the RadImageNet "
                f"folder (the one holding {TOP_FOLDER}/)"
            )
        data_dir = candidates[0]
    prefix = "" if data_dir == root else data_dir.relative_to(root).as_posix() + "/"
    csvs = {}
    for split, name in CSV_NAMES.items():
        for folder in (root, data_dir):
            if (folder / name).is_file():
                csvs[split] = folder / name
                break
    return Layout(root=root, data_dir=data_dir, prefix=prefix, csvs=csvs)


def walk_images(data_dir: Path, with_sizes: bool = False) -> Iterator[tuple[str, int]]:
    """Yield (canonical id, size or -1) for every image file under CT/, MR/ and US/."""
    for modality in ("CT", "MR", "US"):
        top = data_dir / modality
        if not top.is_dir():
            continue
        stack = [(str(top), modality)]
        while stack:
            path, rel = stack.pop()
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        stack.append((entry.path, f"{rel}/{entry.name}"))
                    elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                        yield f"{rel}/{entry.name}", (entry.stat().st_size if with_sizes else -1)


def path_hash(ids: list[str] | pd.Series) -> np.ndarray:
    """Stable 64-bit hash of each image id (blake2b): seeds per-image randomness and hash splits."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def hash_split(keys: np.ndarray, ratios: dict[str, float]) -> np.ndarray:
    """Assign train/val/test from each key's position in [0, 1) (independent of the seed)."""
    unit = (keys >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    edges = np.cumsum([ratios[s] for s in SPLITS])
    codes = np.searchsorted(edges, unit, side="right").clip(0, len(SPLITS) - 1)
    return np.asarray(SPLITS, dtype=object)[codes]


def read_source(
    root: Path | str,
    taxonomy: Taxonomy,
    split_ratios: dict[str, float],
    with_sizes: bool = False,
) -> tuple[pd.DataFrame, SourceReport]:
    """Build the image table of a copy, sorted by image id.

    Columns: image_id (``CT/abd/normal/x.png``), image (path relative to ROOT), split,
    class_index (into ``taxonomy.classes``), modality, anatomy, pathology, region, key
    (uint64 hash of image_id) and, with ``with_sizes``, size in bytes.
    """
    layout = locate(root)
    report = SourceReport(root=str(layout.root), data_dir=str(layout.data_dir))
    on_disk = pd.DataFrame(list(walk_images(layout.data_dir, with_sizes)), columns=["image_id", "size"])
    report.files_on_disk = len(on_disk)
    if layout.csvs:
        table = _from_csvs(layout, on_disk, report)
    else:
        report.split_source = "a hash of each path (no RadiologyAI_*.csv found)"
        table = on_disk
        table["split"] = hash_split(path_hash(table["image_id"]), split_ratios)
    table = _resolve_classes(table, taxonomy, report)
    table = table.sort_values("image_id", kind="stable", ignore_index=True)
    table["key"] = path_hash(table["image_id"])
    table["image"] = layout.prefix + table["image_id"]
    classes = taxonomy.classes
    codes = table["class_index"].to_numpy()
    for column in ("modality", "anatomy", "pathology", "region"):
        values = [getattr(c, column) for c in classes]
        table[column] = np.asarray(values, dtype=object)[codes]
    columns = ["image_id", "image", "split", "class_index", "modality", "anatomy", "pathology", "region", "key"]
    if with_sizes:
        columns.append("size")
    table = table[columns]
    report.images = len(table)
    report.per_split = {s: int((table["split"] == s).sum()) for s in SPLITS}
    return table, report


def _from_csvs(layout: Layout, on_disk: pd.DataFrame, report: SourceReport) -> pd.DataFrame:
    missing = [CSV_NAMES[s] for s in SPLITS if s not in layout.csvs]
    report.split_source = ", ".join(p.name for p in layout.csvs.values())
    if missing:
        report.warnings.append(f"no {', '.join(missing)} found: those splits will be empty")
    frames = []
    for split, path in layout.csvs.items():
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise SourceError(f"{path}: cannot read CSV ({exc})")
        if "filename" not in frame.columns:
            raise SourceError(f"{path}: no 'filename' column (header must be filename,label)")
        if "label" not in frame.columns:
            frame["label"] = ""
        frame = frame[["filename", "label"]].copy()
        frame["split"] = split
        frame["row"] = np.arange(2, len(frame) + 2)
        frame["csv"] = path.name
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    filenames = rows["filename"].str.replace("\\", "/", regex=False).str.strip()
    rows["image_id"] = filenames.str.extract(_CANONICAL, expand=False)
    bad = rows["image_id"].isna()
    report.skip(
        "CSV path without a CT/, MR/ or US/ folder",
        (rows.loc[bad, "csv"] + " row " + rows.loc[bad, "row"].astype(str)).tolist(),
    )
    rows = rows[~bad]
    duplicated = rows["image_id"].duplicated(keep="first")
    report.skip("listed more than once in the CSVs (first kept)", rows.loc[duplicated, "image_id"].tolist())
    rows = rows[~duplicated]
    present = rows["image_id"].isin(on_disk["image_id"])
    report.skip("CSV row whose image file is missing", rows.loc[~present, "image_id"].tolist())
    rows = rows[present]
    listed = on_disk["image_id"].isin(rows["image_id"])
    not_listed = on_disk.loc[~listed & ~on_disk["image_id"].str.startswith("US/"), "image_id"]
    report.skip("image on disk but in no split CSV", not_listed.tolist())
    table = rows.merge(on_disk, on="image_id", how="left")
    return table


def _resolve_classes(table: pd.DataFrame, taxonomy: Taxonomy, report: SourceReport) -> pd.DataFrame:
    parts = table["image_id"].str.split("/", regex=False)
    depth = parts.str.len()
    modality = parts.str[0]
    skipped_modality = modality.isin(list(taxonomy.skipped_modalities))
    report.skip("ultrasound (not part of the VQA dataset)", [], count=int(skipped_modality.sum()))
    wrong_depth = ~skipped_modality & (depth != 4)
    report.skip(
        "image not at MODALITY/anatomy/pathology/file", table.loc[wrong_depth, "image_id"].tolist()
    )
    keep = ~skipped_modality & ~wrong_depth
    table, parts = table[keep].copy(), parts[keep]
    triples = list(zip(parts.str[0], parts.str[1], parts.str[2]))
    lookup = {t: taxonomy.class_index(*t) for t in set(triples)}
    table["class_index"] = np.fromiter((lookup[t] for t in triples), dtype=np.int32, count=len(triples))
    unknown = table["class_index"] < 0
    report.skip(
        "unknown class folder (not in the taxonomy)",
        sorted({"/".join(t) for t, u in zip(triples, unknown) if u})[:_EXAMPLES],
        count=int(unknown.sum()),
    )
    table = table[~unknown]
    if "label" in table.columns:
        expected = [taxonomy.classes[i].anatomy + "-" + taxonomy.classes[i].pathology for i in range(len(taxonomy.classes))]
        folder_label = parts[~unknown].str[1] + "-" + parts[~unknown].str[2]
        canonical = pd.Series(expected, dtype=object).iloc[table["class_index"].to_numpy()].to_numpy()
        disagree = (table["label"] != "") & (table["label"] != folder_label) & (table["label"] != canonical)
        if disagree.any():
            examples = (table.loc[disagree, "image_id"] + " labelled " + table.loc[disagree, "label"]).tolist()
            count = int(disagree.sum())
            report.warnings.append(
                f"{count} CSV labels disagree with their folder (the folder is used), e.g. {examples[0]}"
            )
            report.examples["label disagrees with folder (folder used)"] = examples[:_EXAMPLES]
    return table
