"""Pixel handling of radvqa.dicom: windows, MONOCHROME1, percentiles, decoders, resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from dicom_helpers import bundled, ct_file, linear_grey, percentile_grey, quadrants, window_grey
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
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


def test_bone_only_is_blank_though_lower_stored_values_would_differ(tmp_path: Path) -> None:
    bone = np.full((16, 16), 1000.0)  # stored values far above 0: the table starts at 0
    bone[0, 0] = 1010.0
    with pytest.raises(BlankSlice, match="single grey level"):
        grey_of(ct_file(tmp_path / "bone.dcm", bone), ct_params())


def _view(intercept: int) -> Dataset:
    view = Dataset()
    view.PhotometricInterpretation, view.BitsStored, view.PixelRepresentation = "MONOCHROME2", 16, 1
    view.RescaleSlope, view.RescaleIntercept = 1, intercept
    return view


@given(st.integers(-3000, 4000), st.integers(0, 600), st.sampled_from([-1024, 0]), st.integers(0, 2**32 - 1))
def test_integer_frames_give_the_grey_of_the_direct_float_pass(low: int, span: int, intercept: int, seed: int) -> None:
    """The lookup table (from stored 0, or from the lowest value when one is negative) changes nothing."""
    frame = np.random.default_rng(seed).integers(low, low + span + 1, size=(8, 8)).astype(np.int16)
    view, params = _view(intercept), ct_params()
    try:
        expected = to_grey(frame.astype(np.float64), view, params)
    except BlankSlice:
        with pytest.raises(BlankSlice):
            to_grey(frame, view, params)
        return
    assert np.array_equal(to_grey(frame, view, params), expected)


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


def test_file_window_functions_linear_exact_and_sigmoid(tmp_path: Path) -> None:
    hu = np.linspace(-400.0, 500.0, 32 * 32).reshape(32, 32).round()
    for function in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        path = ct_file(tmp_path / f"{function}.dcm", hu, WindowCenter=40, WindowWidth=400, VOILUTFunction=function)
        grey = grey_of(path, ct_params(use_file=True))
        assert np.array_equal(grey, window_grey(hu, 40, 400, function)), function


def test_voi_lut_sequence_is_applied_with_dicom_window(tmp_path: Path) -> None:
    """PS3.3 C.11.2.1.1: out = LUT[clip(x - first mapped, 0, entries - 1)], scaled from 2^bits - 1."""
    item = Dataset()
    item.LUTDescriptor = [256, -100, 8]  # 256 entries, first maps HU -100, 8-bit output
    table = (255 - np.arange(256)).astype(np.uint16)  # a falling ramp: unlike any window
    item["LUTData"] = pydicom.DataElement(0x00283006, "US", table.tolist())
    hu = quadrants((-1000.0, -50.0, 100.0, 1000.0))
    path = ct_file(tmp_path / "v.dcm", hu, WindowCenter=40, WindowWidth=400, VOILUTSequence=Sequence([item]))
    grey = grey_of(path, ct_params(use_file=True))
    expected = table[np.clip(hu.astype(int) + 100, 0, 255)].astype(np.uint8)
    assert np.array_equal(grey, expected) and grey[4, 4] == 255 and grey[28, 28] == 0
    assert grey_of(path, ct_params(use_file=False))[28, 28] == 255  # the table window unless asked


def test_real_voi_lut_file(tmp_path: Path) -> None:
    ds = pydicom.dcmread(bundled("vlut_04.dcm"))  # pydicom-data: 16-bit VOI LUT over 8-bit pixels
    item = ds.VOILUTSequence[0]
    entries, first, bits = item.LUTDescriptor
    lut = np.asarray(item.LUTData, dtype=np.float64)
    stored = ds.pixel_array.astype(int)
    expected = np.rint(lut[np.clip(stored - first, 0, (entries or 65536) - 1)] * 255 / (2**bits - 1)).astype(np.uint8)
    assert np.array_equal(to_grey(ds.pixel_array, frame_view(ds, 0), ct_params(use_file=True)), expected)


def test_presentation_lut_shape_and_monochrome1_invert_once(tmp_path: Path) -> None:
    hu = quadrants((-1000.0, 40.0, 140.0, 1000.0))
    normal = grey_of(ct_file(tmp_path / "n.dcm", hu), ct_params())
    inverse = grey_of(ct_file(tmp_path / "i.dcm", hu, PresentationLUTShape="INVERSE"), ct_params())
    both = grey_of(ct_file(tmp_path / "b.dcm", hu, photometric="MONOCHROME1", PresentationLUTShape="INVERSE"), ct_params())
    identity = grey_of(ct_file(tmp_path / "d.dcm", hu, PresentationLUTShape="IDENTITY"), ct_params())
    assert np.array_equal(inverse, 255 - normal) and np.array_equal(both, 255 - normal)
    assert np.array_equal(identity, normal)


def test_pixel_padding_is_background_and_not_in_percentiles(tmp_path: Path) -> None:
    """PS3.3 C.7.5.1.1.2: padding is stored values (value, or value..range limit), shown as background."""
    hu = np.linspace(-200.0, 300.0, 32 * 32).reshape(32, 32).round()
    hu[:, :12] = -3000.0  # padding outside the scanned field
    stored_pad = -3000 + 1024
    path = ct_file(tmp_path / "p.dcm", hu, photometric="MONOCHROME1", PixelPaddingValue=stored_pad)
    grey = grey_of(path, ct_params())
    expected = 255 - window_grey(hu, 40, 400)
    expected[:, :12] = 0  # black, although MONOCHROME1 would make HU -3000 white
    assert np.array_equal(grey, expected)
    # MR-style percentile scaling ignores the padding, here a range of stored values
    hu[:, :6] = -2500.0
    path = ct_file(tmp_path / "r.dcm", hu, PixelPaddingValue=stored_pad, PixelPaddingRangeLimit=-2500 + 1024)
    grey = grey_of(path, PixelParams("MR", None, False, (0.5, 99.5), 32))
    expected = percentile_grey(hu, hu[:, 12:])
    expected[:, :12] = 0
    assert np.array_equal(grey, expected)
    with pytest.raises(BlankSlice):  # padding plus one value is blank
        grey_of(ct_file(tmp_path / "e.dcm", np.where(hu < -2000, -3000.0, 40.0), PixelPaddingValue=stored_pad), ct_params())


def test_real_modality_lut_sequence_file() -> None:
    """PS3.3 C.11.1.1: a Modality LUT Sequence replaces rescale: out = LUT[clip(x - first, 0, n - 1)]."""
    ds = pydicom.dcmread(bundled("mlut_18.dcm"))  # pydicom-data: 4096-entry table over signed 12-bit pixels
    item = ds.ModalityLUTSequence[0]
    entries, first, _ = item.LUTDescriptor
    stored = ds.pixel_array.astype(int)
    values = np.asarray(item.LUTData)[np.clip(stored - first, 0, (entries or 65536) - 1)]
    grey = to_grey(ds.pixel_array, frame_view(ds, 0), PixelParams("MR", None, False, (0.5, 99.5), 64))
    assert np.array_equal(grey, percentile_grey(values, values))
