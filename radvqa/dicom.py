"""DICOM pixels to RadImageNet-style 8-bit slices: windows, decoders and one-slice rendering.

The pixel pipeline is DICOM's own (PS3.3 C.11): stored values -> modality LUT / rescale
(``pydicom.pixels.apply_modality_lut``) -> VOI LUT (C.11.2.1.1) or window
(``apply_windowing``) -> Presentation LUT Shape / MONOCHROME1 inversion; pixel padding is
masked out. The pydicom steps are evaluated once per distinct
stored value and applied as a lookup table, as viewers do, so a 512x512 slice costs one table
look-up instead of a float pass over every pixel. ``radvqa.ingest`` walks folders and writes
the copy; this module knows nothing about files or labels.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.uid import UID

from .errors import ConfigError, MissingDependencyError, RadVQAError, did_you_mean
from .resources import check_keys, default_path, load_yaml

EXTRA_HINT = 'pip install "radvqa[dicom]"'
GREY_MAX = 255
# Above this many distinct stored values a lookup table costs more than a direct float pass.
_MAX_LUT = 1 << 17
_PNG_LEVEL = 1  # zlib level 1: ~20% faster than Pillow's default, a few % larger files
_WINDOW_KEYS = frozenset({"center", "width"})
_TOP_KEYS = frozenset({"ct", "mr"})
_CT_KEYS = frozenset({"windows", "by_anatomy"})
_MR_KEYS = frozenset({"low_percentile", "high_percentile"})
DICOM_WINDOW = "dicom"  # the window named by the file itself
# Top-level attributes a frame view carries over from an enhanced multi-frame file.
_VIEW_KEYWORDS = (
    "PhotometricInterpretation", "BitsStored", "PixelRepresentation", "ModalityLUTSequence",
    "VOILUTSequence", "PixelPaddingValue", "PixelPaddingRangeLimit", "PresentationLUTShape",
)


class BlankSlice(RadVQAError):
    """A slice holds one value only (before or after windowing): nothing to learn from."""


@dataclass(frozen=True)
class Window:
    """A linear VOI window (PS3.3 C.11.2.1.2) in modality units (Hounsfield for CT)."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class WindowTable:
    """CT windows by name and by anatomy folder, and MR percentile scaling."""

    windows: dict[str, Window]
    by_anatomy: dict[str, str]
    mr_percentiles: tuple[float, float]
    source: str
    sha256: str

    def for_anatomy(self, anatomy: str) -> str | None:
        """Name of the CT window for an anatomy folder, or None when the table has none."""
        return self.by_anatomy.get(anatomy)


def load_windows(path: Path | str | None = None) -> WindowTable:
    """Load and check a windows table (the packaged ``configs/windows.yaml`` when None)."""
    doc = load_yaml(Path(path) if path is not None else default_path("configs", "windows.yaml"))
    where = doc.source
    check_keys(doc.data, _TOP_KEYS, where, required=_TOP_KEYS)
    ct, mr = doc.data["ct"], doc.data["mr"]
    if not isinstance(ct, dict) or not isinstance(mr, dict):
        raise ConfigError(f"{where}: 'ct' and 'mr' must be mappings")
    check_keys(ct, _CT_KEYS, f"{where}: ct", required=_CT_KEYS)
    check_keys(mr, _MR_KEYS, f"{where}: mr", required=_MR_KEYS)
    windows: dict[str, Window] = {}
    for name, spec in dict(ct["windows"]).items():
        wwhere = f"{where}: ct.windows.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{wwhere}: expected a mapping with center and width")
        check_keys(spec, _WINDOW_KEYS, wwhere, required=_WINDOW_KEYS)
        center, width = spec["center"], spec["width"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (center, width)):
            raise ConfigError(f"{wwhere}: center and width must be numbers")
        if width < 1:
            raise ConfigError(f"{wwhere}: width must be at least 1 (PS3.3 C.11.2.1.2)")
        if str(name) == DICOM_WINDOW:
            raise ConfigError(f"{wwhere}: '{DICOM_WINDOW}' is reserved for the file's own window")
        windows[str(name)] = Window(float(center), float(width))
    by_anatomy: dict[str, str] = {}
    for anatomy, name in dict(ct["by_anatomy"]).items():
        if name not in windows:
            raise ConfigError(
                f"{where}: ct.by_anatomy.{anatomy}: unknown window '{name}'{did_you_mean(str(name), windows)}"
            )
        by_anatomy[str(anatomy)] = str(name)
    low, high = mr["low_percentile"], mr["high_percentile"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not (
        0 <= low < high <= 100
    ):
        raise ConfigError(f"{where}: mr percentiles must be numbers with 0 <= low < high <= 100")
    return WindowTable(windows, by_anatomy, (float(low), float(high)), doc.source, doc.sha256)


@dataclass(frozen=True)
class PixelParams:
    """How one series is turned into grey levels and which size it is written at."""

    modality: str  # "CT" or "MR" (the label's modality)
    window: Window | None  # CT table window; None for MR percentile scaling
    use_file_window: bool  # prefer the file's WindowCenter/Width when it has one
    percentiles: tuple[float, float]
    size: int


# --- decoders ---------------------------------------------------------------------------


def check_decoder(transfer_syntax: str) -> str | None:
    """None when pixel data in this transfer syntax can be decoded, else why not.

    Raises MissingDependencyError when pydicom knows the syntax but its decoder plugins
    (pylibjpeg and friends, the ``dicom`` extra) are not installed.
    """
    from pydicom.pixels import get_decoder

    uid = UID(transfer_syntax)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"unsupported transfer syntax {uid.name or uid}"
    if not decoder.is_available:
        raise MissingDependencyError(
            f"no decoder installed for transfer syntax '{uid.name}' ({uid}); "
            f"install the DICOM decoders with: {EXTRA_HINT}"
        )
    return None


# --- per-frame attributes ------------------------------------------------------------------


def frame_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of a functional-group macro for a frame (per-frame, then shared; C.7.6.16)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        seq = per_frame[frame].get(sequence)
        if seq:
            return seq[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(sequence)
        if seq:
            return seq[0]
    return None


def frame_view(ds: Dataset, frame: int) -> Dataset:
    """A dataset with the modality, VOI, padding and presentation attributes in force for one frame.

    Single-frame and legacy multi-frame files keep them at the top level (``ds`` itself is
    returned); enhanced multi-frame files (PS3.3 C.7.6.16.2.9 / C.7.6.16.2.10) keep them in
    functional groups, copied here into a small dataset.
    """
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return ds  # everything is at the top level already (and copying it costs ~1 ms a slice)
    view = Dataset()
    for keyword in _VIEW_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    source: Dataset | None = ds if "RescaleSlope" in ds else frame_item(ds, frame, "PixelValueTransformationSequence")
    if source is not None and "RescaleSlope" in source and "RescaleIntercept" in source:
        view.RescaleSlope = source.RescaleSlope
        view.RescaleIntercept = source.RescaleIntercept
    voi: Dataset | None = ds if "WindowCenter" in ds else frame_item(ds, frame, "FrameVOILUTSequence")
    if voi is not None and "WindowCenter" in voi and "WindowWidth" in voi:
        view.WindowCenter = voi.WindowCenter
        view.WindowWidth = voi.WindowWidth
        if "VOILUTFunction" in voi:
            view.VOILUTFunction = voi.VOILUTFunction
    return view


def file_window(view: Dataset) -> Window | None:
    """The first WindowCenter/WindowWidth pair of a frame view, or None (PS3.3 C.11.2.1.2)."""
    if "WindowCenter" not in view or "WindowWidth" not in view:
        return None
    center, width = view["WindowCenter"], view["WindowWidth"]
    try:
        c = float(center.value[0] if center.VM > 1 else center.value)
        w = float(width.value[0] if width.VM > 1 else width.value)
    except (TypeError, ValueError):  # empty or malformed: fall back to the table
        return None
    function = str(view.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or w <= 0 or (function == "LINEAR" and w < 1):
        return None
    return Window(c, w, function)


def padding_mask(stored: np.ndarray, view: Dataset) -> np.ndarray | None:
    """True where a stored value is Pixel Padding (PS3.3 C.7.5.1.1.2), or None when none is declared.

    Pixel Padding Value alone marks one stored value; with Pixel Padding Range Limit every stored
    value between the two (inclusive, in either order) is padding. Both are stored values, compared
    before the modality LUT.
    """
    value = view.get("PixelPaddingValue")
    if value is None or value == "" or isinstance(value, (bytes, list)):
        return None
    limit = view.get("PixelPaddingRangeLimit")
    low = high = int(value)
    if limit is not None and limit != "" and not isinstance(limit, (bytes, list)):
        low, high = min(low, int(limit)), max(low, int(limit))
    return (stored >= low) & (stored <= high)


def inverts(view: Dataset) -> bool:
    """Whether the minimum output value is shown white (PS3.3 C.11.6 and C.7.6.3.1.2).

    Presentation LUT Shape INVERSE inverts the VOI output; MONOCHROME1 says the same about the
    stored data. In an image the General Image Module (PS3.3 C.7.6.1) requires INVERSE with
    MONOCHROME1 and IDENTITY with MONOCHROME2, so INVERSE restates MONOCHROME1: either one means
    a single inversion, never two.
    """
    shape = str(view.get("PresentationLUTShape", "") or "").strip().upper()
    return shape == "INVERSE" or str(view.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"


# --- grey levels ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _voi8(window: Window) -> Dataset:
    """A VOI dataset whose windowing output range is 0..255 (PS3.3 C.11.2.1.2: 8 unsigned bits).

    One per window, kept (building a Dataset costs as much as windowing a slice); never modified.
    """
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = window.center
    voi.WindowWidth = window.width
    voi.VOILUTFunction = window.function
    return voi


def _percentile_window(values: np.ndarray, counts: np.ndarray | None, percentiles: tuple[float, float]) -> Window:
    """An exact linear window between two percentiles of the modality values (nearest rank)."""
    if counts is None:
        sample = values.ravel()
        low, high = np.percentile(sample[:: max(1, sample.size // 65536)], percentiles)
    else:
        cumulative = np.cumsum(counts)
        total = int(cumulative[-1])
        ranks = [min(total - 1, int(p / 100.0 * (total - 1) + 0.5)) for p in percentiles]
        low, high = (float(values[np.searchsorted(cumulative, r, side="right")]) for r in ranks)
    if not high > low:
        raise BlankSlice("blank slice (no contrast between the MR percentiles)")
    return Window((low + high) / 2.0, high - low, "LINEAR_EXACT")


def _voi_lut_grey(values: np.ndarray, view: Dataset) -> np.ndarray:
    """The first VOI LUT Sequence item applied to modality values, scaled to 0..255 (PS3.3 C.11.2.1.1).

    Values below the first mapped one take the first entry, above the last the last; the output
    range is 0 .. 2^n - 1 with n the LUT Descriptor's third value. (Written out rather than
    ``pydicom.pixels.apply_voi``, whose 3.0 index array wraps around for 8-bit tables.)
    """
    item = view.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # PS3.3 C.11.2.1.1: 0 means 2^16 entries
    data = item.LUTData
    if isinstance(data, bytes):  # OW: 16-bit words in the file's byte order
        little = getattr(view, "original_encoding", (None, True))[1] is not False
        table = np.frombuffer(data, dtype="<u2" if little else ">u2")[:entries].astype(np.float64)
    else:
        table = np.asarray(data if isinstance(data, (list, tuple)) else [data], dtype=np.float64)[:entries]
    index = np.clip(np.rint(values) - first, 0, len(table) - 1).astype(np.int64)
    return table[index] * (GREY_MAX / float((1 << bits) - 1))


def _voi_grey(values: np.ndarray, view: Dataset, params: PixelParams, counts: np.ndarray | None) -> np.ndarray:
    """The VOI step (PS3.3 C.11.2): the file's VOI LUT or window with --window dicom, else ours."""
    if params.use_file_window and view.get("VOILUTSequence"):
        return _voi_lut_grey(values, view)
    window = _fixed_window(view, params) or _percentile_window(values, counts, params.percentiles)
    return apply_windowing(np.asarray(values, dtype=np.float64), _voi8(window))


def _fixed_window(view: Dataset, params: PixelParams) -> Window | None:
    """The file's window with --window dicom (when it has a usable one), else the table's; None for MR."""
    return (file_window(view) if params.use_file_window else None) or params.window


def to_grey(frame: np.ndarray, view: Dataset, params: PixelParams) -> np.ndarray:
    """Stored values of one frame -> uint8 grey levels at native size (MONOCHROME2 sense).

    The display pipeline in the standard's order (PS3.3 C.11, figure C.11-1): modality LUT or
    rescale (C.11.1), VOI LUT or window (C.11.2), Presentation LUT Shape (C.11.6), with
    MONOCHROME1 inverted (C.7.6.3.1.2). Pixel padding (C.7.5.1.1.2) takes no part in the MR
    percentiles and is written black, like the square padding. Raises BlankSlice when the
    frame, or the windowed result, holds a single value (padding aside).
    """
    if frame.ndim != 2:
        raise RadVQAError(f"expected a greyscale frame, got shape {frame.shape}")
    low, high = frame.min(), frame.max()
    if frame.dtype.kind in "iu" and int(high) - int(low) < _MAX_LUT:
        return _to_grey_lut(frame, int(low), int(high), view, params)
    padding = padding_mask(frame, view)
    content = frame if padding is None else frame[~padding]
    if content.size == 0 or content.min() == content.max():
        raise BlankSlice("blank slice (every pixel has the same value)")
    values = apply_modality_lut(frame, view)
    if padding is not None:
        values = np.where(padding, np.median(values[~padding]), values)
    grey = _grey(values, view, params, None)
    if padding is not None:
        grey[padding] = 0
    _check_contrast(grey if padding is None else grey[~padding])
    return grey


def _to_grey_lut(frame: np.ndarray, low: int, high: int, view: Dataset, params: PixelParams) -> np.ndarray:
    """to_grey for integer frames: every step evaluated once per distinct stored value.

    The table starts at stored value 0 when no value is negative, so that the frame itself
    indexes it (no index array: on a 512x512 slice that halves the cost of this step).
    """
    tables = "ModalityLUTSequence" in view or (params.use_file_window and "VOILUTSequence" in view)
    if params.window is not None and not tables and "PixelPaddingValue" not in view:
        return _windowed(frame, low, high, view, params)  # grey depends on the stored value alone
    base = 0 if 0 <= low and high < _MAX_LUT else low
    stored = np.arange(base, high + 1, dtype=np.int64)
    padding = padding_mask(stored, view)
    if padding is not None and not padding.any():
        padding = None
    index = frame if base == 0 else np.subtract(frame, base, dtype=np.int32)
    counts: np.ndarray | None = None
    if params.window is None or padding is not None or tables:  # else grey is monotone in the stored value
        counts = np.bincount(index.ravel(), minlength=len(stored))
        if padding is not None:
            counts[padding] = 0
        if np.count_nonzero(counts) < 2:
            raise BlankSlice("blank slice (every pixel has the same value)")
    elif low == high:
        raise BlankSlice("blank slice (every pixel has the same value)")
    grey = _grey(apply_modality_lut(stored, view), view, params, counts)
    if padding is not None:
        grey[padding] = 0
    _check_contrast(grey[counts > 0] if counts is not None else grey[low - base :])
    return np.take(grey, index)  # take: ~3x faster than fancy indexing here


def _windowed(frame: np.ndarray, low: int, high: int, view: Dataset, params: PixelParams) -> np.ndarray:
    """to_grey with a fixed window and rescale: one table per series, not one per slice.

    The table spans powers of two around the frame's values, so the slices of a series share it.
    """
    base = 0 if low >= 0 else -(1 << (-low).bit_length())
    top = (1 << high.bit_length()) - 1 if high >= 0 else -1
    if top - base >= _MAX_LUT:
        base, top = low, high
    if low == high:
        raise BlankSlice("blank slice (every pixel has the same value)")
    rescale = None
    if "RescaleSlope" in view and "RescaleIntercept" in view:  # what apply_modality_lut reads (C.11.1)
        rescale = (float(view.RescaleSlope), float(view.RescaleIntercept))
    window = _fixed_window(view, params)
    assert window is not None  # the caller checked params.window
    grey = _window_table(base, top, rescale, window, inverts(view))
    _check_contrast(grey[low - base : high - base + 1])
    return np.take(grey, frame if base == 0 else np.subtract(frame, base, dtype=np.int32))


@functools.lru_cache(maxsize=32)
def _window_table(base: int, top: int, rescale: tuple[float, float] | None, window: Window, invert: bool) -> np.ndarray:
    """Grey levels of the stored values base..top: rescale (C.11.1), window (C.11.2.1.2), inversion."""
    view = Dataset()
    if rescale is not None:
        view.RescaleSlope, view.RescaleIntercept = rescale
    values = np.asarray(apply_modality_lut(np.arange(base, top + 1, dtype=np.int64), view), dtype=np.float64)
    grey = _eight_bits(apply_windowing(values, _voi8(window)), invert)
    grey.flags.writeable = False  # shared by every slice that uses it
    return grey


def _grey(values: np.ndarray, view: Dataset, params: PixelParams, counts: np.ndarray | None) -> np.ndarray:
    """Modality values -> uint8 after the VOI step and any inversion (C.11.2, C.11.6)."""
    return _eight_bits(_voi_grey(values, view, params, counts), inverts(view))


def _eight_bits(voi: np.ndarray, invert: bool) -> np.ndarray:
    """VOI output (0..255 floats) -> uint8, inverted when the minimum is shown white (C.11.6)."""
    grey = np.clip(np.rint(voi), 0, GREY_MAX).astype(np.uint8)
    return GREY_MAX - grey if invert else grey


def _check_contrast(used: np.ndarray) -> None:
    if used.size == 0 or used.min() == used.max():
        raise BlankSlice("blank slice (a single grey level after windowing)")


def square_resize(grey: np.ndarray, size: int) -> Image.Image:
    """Pad to a centred square (black) and resize with a Lanczos filter to ``size`` pixels."""
    rows, cols = grey.shape
    side = max(rows, cols)
    if rows != cols:
        canvas = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - rows) // 2, (side - cols) // 2
        canvas[top : top + rows, left : left + cols] = grey
        grey = canvas
    image = Image.fromarray(grey)
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """Encode an image as PNG (fast zlib level)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


def render_frame(frame: np.ndarray, view: Dataset, params: PixelParams) -> bytes:
    """One frame of stored values -> the PNG bytes of its windowed, resized slice."""
    return png_bytes(square_resize(to_grey(frame, view, params), params.size))
