"""Pixel handling of radvqa.dicom: windows, MONOCHROME1, percentiles, decoders, resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import bundled, ct_file, quadrants
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from radvqa.dicom import (
    EXTRA_HINT,
    BlankSlice,
    PixelParams,
    Window,
    check_decoder,
    frame_view,
    load_windows,
    square_resize,
    to_grey,
)
from radvqa.errors import ConfigError, MissingDependencyError

ABDOMEN = Window(40.0, 400.0)


def linear_grey(hu: float, window: Window) -> int:
    """PS3.3 C.11.2.1.2.1 LINEAR window onto 0..255, written out independently of pydicom."""
    c, w = window.center - 0.5, window.width - 1
    if hu <= c - w / 2:
        return 0
    if hu > c + w / 2:
        return 255
    return int(np.rint(((hu - c) / w + 0.5) * 255))


def ct_params(window: Window | None = ABDOMEN, size: int = 32, use_file: bool = False) -> PixelParams:
    return PixelParams("CT", window, use_file, (0.5, 99.5), size)


def grey_of(path: Path, params: PixelParams) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return to_grey(ds.pixel_array, frame_view(ds, 0), params)


def test_known_hounsfield_values_map_to_expected_grey(tmp_path: Path) -> None:
    hu = (-1000.0, 40.0, 140.0, 1000.0)
    grey = grey_of(ct_file(tmp_path / "q.dcm", quadrants(hu)), ct_params())
    assert grey.dtype == np.uint8
    assert [grey[4, 4], grey[4, 28], grey[28, 4], grey[28, 28]] == [0, 128, 192, 255]
    assert [linear_grey(v, ABDOMEN) for v in hu] == [0, 128, 192, 255]


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    hu = (-160.0, 40.0, 100.0, 240.0)
    path = ct_file(tmp_path / "s.dcm", quadrants(hu), slope=2.0, intercept=-2048.0)
    grey = grey_of(path, ct_params())
    assert [grey[4, 4], grey[4, 28], grey[28, 4], grey[28, 28]] == [linear_grey(v, ABDOMEN) for v in hu]
    assert grey[4, 28] == 128 and grey[28, 28] == 255


def test_lung_window_from_the_table(tmp_path: Path) -> None:
    lung = load_windows().windows["lung"]
    hu = (-1000.0, -600.0, 0.0, 200.0)
    grey = grey_of(ct_file(tmp_path / "l.dcm", quadrants(hu)), ct_params(lung))
    assert grey[4, 28] == 128  # the window centre
    assert [grey[4, 4], grey[28, 4]] == [linear_grey(-1000, lung), linear_grey(0, lung)]


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    hu = quadrants((-1000.0, 40.0, 140.0, 1000.0))
    normal = grey_of(ct_file(tmp_path / "m2.dcm", hu), ct_params())
    inverted = grey_of(ct_file(tmp_path / "m1.dcm", hu, photometric="MONOCHROME1"), ct_params())
    assert np.array_equal(inverted, 255 - normal)
    assert inverted[4, 4] == 255 and inverted[28, 28] == 0


def test_file_window_used_with_dicom_mode_else_table(tmp_path: Path) -> None:
    path = ct_file(tmp_path / "w.dcm", quadrants((-1000.0, 40.0, 500.0, 1000.0)))
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 500, 1000
    view = frame_view(ds, 0)
    own = to_grey(ds.pixel_array, view, ct_params(use_file=True))
    table = to_grey(ds.pixel_array, view, ct_params(use_file=False))
    assert own[28, 4] == linear_grey(500, Window(500, 1000)) == 128
    assert table[28, 4] == 255


def test_malformed_file_window_falls_back_to_the_table(tmp_path: Path) -> None:
    path = ct_file(tmp_path / "w.dcm", quadrants((-1000.0, 40.0, 500.0, 1000.0)))
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = "", 0
    grey = to_grey(ds.pixel_array, frame_view(ds, 0), ct_params(use_file=True))
    assert grey[4, 28] == 128  # abdomen table window
    ds.WindowCenter, ds.WindowWidth = [300, 40], [1500, 400]  # several views: the first is used
    grey = to_grey(ds.pixel_array, frame_view(ds, 0), ct_params(use_file=True))
    assert grey[28, 4] == linear_grey(500, Window(300, 1500))


def test_mr_percentile_scaling_spans_the_grey_range() -> None:
    ramp = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    view = Dataset()
    view.PhotometricInterpretation = "MONOCHROME2"
    grey = to_grey(ramp, view, PixelParams("MR", None, False, (1.0, 99.0), 100))
    assert grey.min() == 0 and grey.max() == 255
    flat = grey.ravel()
    assert np.all(np.diff(flat.astype(int)) >= 0)  # monotone in the stored value
    # 1st and 99th percentiles of 0..9999 (nearest rank) are 99 and 9900: clipped below/above.
    assert flat[99] == 0 and flat[9900] == 255
    assert flat[4999] in (127, 128) and 0 < flat[400] < flat[9500] < 255


def test_blank_slices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BlankSlice):
        grey_of(ct_file(tmp_path / "b.dcm", np.full((16, 16), 40.0)), ct_params())
    # Air only: not constant in HU, but one grey level once windowed.
    air = np.full((16, 16), -1000.0)
    air[0, 0] = -990.0
    with pytest.raises(BlankSlice):
        grey_of(ct_file(tmp_path / "air.dcm", air), ct_params())


def test_square_resize_pads_and_keeps_size() -> None:
    tall = np.full((64, 16), 200, dtype=np.uint8)
    image = np.asarray(square_resize(tall, 32))
    assert image.shape == (32, 32)
    assert image[16, 0] == 0 and image[16, 16] == 200  # black side bars, content in the middle
    same = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(np.asarray(square_resize(same, 8)), same)  # no resampling at native size


def test_windows_table_loads_and_rejects_typos(tmp_path: Path) -> None:
    table = load_windows()
    assert table.for_anatomy("abd") == "abdomen" and table.for_anatomy("lung") == "lung"
    assert table.windows["abdomen"] == Window(40.0, 400.0)
    bad = tmp_path / "w.yaml"
    bad.write_text("ct:\n  windows: {a: {center: 1, widht: 2}}\n  by_anatomy: {}\nmr: {low_percentile: 1, high_percentile: 99}\n")
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        load_windows(bad)
    bad.write_text("ct:\n  windows: {a: {center: 1, width: 2}}\n  by_anatomy: {abd: b}\nmr: {low_percentile: 1, high_percentile: 99}\n")
    with pytest.raises(ConfigError, match="unknown window 'b'"):
        load_windows(bad)


def test_decoders_present_for_bundled_compressed_files() -> None:
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm"):
        syntax = pydicom.dcmread(bundled(name), stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert check_decoder(syntax) is None
    assert check_decoder(ExplicitVRLittleEndian) is None
    assert check_decoder("1.2.3.4.5") == "unsupported transfer syntax 1.2.3.4.5"


def test_missing_decoder_names_syntax_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: not self.UID.is_compressed))
    assert check_decoder(ExplicitVRLittleEndian) is None
    with pytest.raises(MissingDependencyError) as caught:
        check_decoder(JPEG2000Lossless)
    message = str(caught.value)
    assert "JPEG 2000 Image Compression (Lossless Only)" in message and EXTRA_HINT in message
    with pytest.raises(MissingDependencyError, match="RLE Lossless"):
        check_decoder(RLELossless)
