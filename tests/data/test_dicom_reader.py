"""read_galactogram: metadata, pixels for every photometric/transfer syntax, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ductai.data import dicom_reader
from ductai.data.dicom_reader import read_galactogram
from ductai.data.errors import (
    ImageReadError,
    MissingSpacingError,
    NoPixelDataError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)


@pytest.mark.parametrize(("laterality", "view"), [("R", "CC"), ("L", "MLO"), ("R", "ML")])
def test_metadata_of_a_standard_file(dicom, tmp_path, laterality, view):
    ds = dicom.make(laterality=laterality, view=view)
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    assert image.laterality == laterality
    assert image.view == view
    assert image.patient_orientation == dicom.standard[(laterality, view)]
    assert image.pixel_spacing_mm == (0.1, 0.1)
    assert image.spacing_source == "PixelSpacing"
    assert (image.rows, image.columns) == (ds.Rows, ds.Columns)
    assert image.sop_instance_uid == ds.SOPInstanceUID
    assert image.study_instance_uid == ds.StudyInstanceUID
    assert image.series_instance_uid == ds.SeriesInstanceUID
    assert image.patient_id == "P001"
    assert image.modality == "MG"
    assert image.photometric == "MONOCHROME2"
    assert image.window == (1800.0, 3600.0)
    assert image.transfer_syntax == "Explicit VR Little Endian"
    assert image.warnings == []
    np.testing.assert_array_equal(image.stored, ds.pixel_array)


@pytest.mark.parametrize("bits_stored", [12, 14, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_contrast_is_bright_for_each_photometric_and_depth(
    dicom, tmp_path, bits_stored, photometric
):
    top = 2**bits_stored - 1
    stored_as_mono2 = dicom.stored_phantom("R", "CC", dicom.standard[("R", "CC")])
    stored = stored_as_mono2.astype(np.int64) * 2 ** (bits_stored - 12)
    window = (top / 2, top)
    if photometric == "MONOCHROME1":
        stored = top - stored
    ds = dicom.make(
        stored.astype(np.uint16), photometric=photometric, bits_stored=bits_stored, window=window
    )
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    pixels = image.pixels
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    nipple = stored_as_mono2 == dicom.values.nipple
    air = stored_as_mono2 == dicom.values.air
    assert pixels[nipple].mean() > pixels[air].mean() + 0.5


def test_monochrome1_reads_like_the_same_monochrome2_image(dicom, tmp_path):
    mono2 = read_galactogram(dicom.write(dicom.make(window=(1500, 2000)), tmp_path / "2.dcm"))
    ds1 = dicom.make(photometric="MONOCHROME1", window=(4095 - 1500, 2000))
    mono1 = read_galactogram(dicom.write(ds1, tmp_path / "1.dcm"))
    np.testing.assert_allclose(mono1.pixels, mono2.pixels, atol=1e-3)


def test_rescale_is_applied_before_the_window(dicom, tmp_path):
    plain = read_galactogram(dicom.write(dicom.make(window=(1500, 2000)), tmp_path / "a.dcm"))
    # Same pixels with slope 2, intercept -100: the window in output units is 2*1500-100.
    ds = dicom.make(rescale=(2.0, -100.0), window=(2900, 4000))
    rescaled = read_galactogram(dicom.write(ds, tmp_path / "b.dcm"))
    np.testing.assert_allclose(rescaled.pixels, plain.pixels, atol=1e-3)


def test_voi_lut_sequence_is_used(dicom, tmp_path):
    lut = np.clip(np.arange(4096) * 20, 0, 65535)  # saturates above 3276
    ds = dicom.make(window=None, voi_lut=lut)
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    stored = image.stored.astype(float)
    np.testing.assert_allclose(image.pixels, np.clip(stored * 20 / 65535, 0, 1), atol=1e-4)


def test_without_window_the_breast_percentiles_span_zero_to_one(dicom, tmp_path):
    image = read_galactogram(dicom.write(dicom.make(window=None), tmp_path / "a.dcm"))
    nipple = image.stored == dicom.values.nipple
    assert image.pixels[nipple].min() == 1.0
    assert image.pixels.min() == 0.0


TRANSFER_SYNTAXES = [JPEG2000Lossless, JPEGLSLossless, RLELossless]


@pytest.mark.parametrize("syntax", TRANSFER_SYNTAXES, ids=lambda uid: uid.name)
@pytest.mark.parametrize("bits_stored", [12, 16])
def test_lossless_transfer_syntaxes_decode_to_the_original(dicom, tmp_path, syntax, bits_stored):
    rng = np.random.default_rng(1)
    original = rng.integers(0, 2**bits_stored, size=(40, 36), dtype=np.uint16)
    ds = dicom.compress(dicom.make(original, bits_stored=bits_stored), syntax)
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    assert image.transfer_syntax == syntax.name
    np.testing.assert_array_equal(image.stored, original)


@pytest.mark.dicom_tools
def test_jpeg_lossless_from_dcmtk_decodes_to_the_original(dicom, tmp_path, need_dcmcjpeg):
    rng = np.random.default_rng(2)
    original = rng.integers(0, 4096, size=(40, 36), dtype=np.uint16)
    src = dicom.write(dicom.make(original), tmp_path / "raw.dcm")
    image = read_galactogram(dicom.jpeg_lossless(src, tmp_path / "jpeg.dcm"))
    assert "JPEG Lossless" in image.transfer_syntax
    np.testing.assert_array_equal(image.stored, original)


def test_imager_spacing_is_divided_by_the_magnification(dicom, tmp_path):
    ds = dicom.make(pixel_spacing=None, imager_spacing=(0.1, 0.1), magnification=1.25)
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    assert image.pixel_spacing_mm == pytest.approx((0.08, 0.08))
    assert "Magnification" in image.spacing_source


def test_pixel_spacing_is_preferred_over_imager_spacing(dicom, tmp_path):
    ds = dicom.make(pixel_spacing=(0.07, 0.07), imager_spacing=(0.1, 0.1), magnification=1.1)
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    assert image.pixel_spacing_mm == (0.07, 0.07)
    assert image.spacing_source == "PixelSpacing"


def test_missing_spacing_is_refused_unless_given(dicom, tmp_path):
    path = dicom.write(dicom.make(pixel_spacing=None), tmp_path / "nospacing.dcm")
    with pytest.raises(MissingSpacingError, match=r"nospacing\.dcm.*--pixel-spacing"):
        read_galactogram(path)
    image = read_galactogram(path, pixel_spacing=0.085)
    assert image.pixel_spacing_mm == (0.085, 0.085)
    assert image.spacing_source == "user"


def test_laterality_falls_back_to_the_series_with_a_warning(dicom, tmp_path):
    ds = dicom.make(laterality=None, orientation=("P", "L"))
    ds.Laterality = "R"
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    assert image.laterality == "R"
    assert any("series' Laterality" in w for w in image.warnings)


def test_view_from_view_code_sequence_with_a_retired_srt_code(dicom, tmp_path):
    ds = dicom.make(view=None, laterality="L", orientation=("A", "F"))
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10226", "SRT", "MLO"
    ds.ViewCodeSequence = Sequence([code])
    assert read_galactogram(dicom.write(ds, tmp_path / "a.dcm")).view == "MLO"


def test_view_position_with_laterality_prefix_is_normalised(dicom, tmp_path):
    ds = dicom.make(view="CC")
    with pytest.warns(UserWarning, match="Invalid value for VR CS"):
        ds.ViewPosition = "rcc"  # lower case breaks the standard; readers still cope
    assert read_galactogram(dicom.write(ds, tmp_path / "a.dcm")).view == "CC"


def test_non_mammography_modality_is_a_warning(dicom, tmp_path):
    image = read_galactogram(dicom.write(dicom.make(modality="DX"), tmp_path / "a.dcm"))
    assert any("'DX'" in w and "MG" in w for w in image.warnings)


def test_not_dicom(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(NotDicomError, match=r"notes\.txt: not a DICOM file"):
        read_galactogram(path)


def test_no_pixel_data(dicom, tmp_path):
    ds = Dataset()
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.SOPInstanceUID = "1.2.3"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=False)
    with pytest.raises(NoPixelDataError, match=r"report\.dcm: no PixelData: not an image .*SR"):
        read_galactogram(tmp_path / "report.dcm")


def test_image_header_without_pixels_is_called_truncated(dicom, tmp_path):
    path = dicom.write(dicom.make(), tmp_path / "cut.dcm")
    path.write_bytes(path.read_bytes()[:700])  # ends inside the header
    with pytest.raises(TruncatedFileError, match=r"cut\.dcm: an image header without pixel data"):
        read_galactogram(path)


def test_rgb_is_refused(dicom, tmp_path):
    ds = dicom.make()
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 8, 8, 3, 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    with pytest.raises(UnsupportedImageError, match=r"a\.dcm: colour image \(SamplesPerPixel=3"):
        read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))


def test_multi_frame_is_refused(dicom, tmp_path):
    frames = np.zeros((3, 10, 12), dtype=np.uint16)
    ds = dicom.make(frames[0])
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    with pytest.raises(UnsupportedImageError, match="tomosynthesis/multi-frame is not supported"):
        read_galactogram(dicom.write(ds, tmp_path / "dbt.dcm"))


def test_truncated_file(dicom, tmp_path):
    path = dicom.write(dicom.make(), tmp_path / "cut.dcm")
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(TruncatedFileError, match=r"cut\.dcm:.*truncated"):
        read_galactogram(path)


def test_truncated_compressed_file(dicom, tmp_path):
    ds = dicom.compress(dicom.make(), RLELossless)
    path = dicom.write(ds, tmp_path / "cut.dcm")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])
    with pytest.raises(ImageReadError, match=r"cut\.dcm"):
        read_galactogram(path)


def test_transfer_syntax_without_any_decoder(dicom, tmp_path):
    ds = dicom.make()
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # video: pydicom has no decoder for it
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "video.dcm"
    ds.save_as(path)
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"video\.dcm: transfer syntax MPEG2"):
        read_galactogram(path)


def test_missing_plugin_is_named(dicom, tmp_path, monkeypatch):
    ds = dicom.compress(dicom.make(), JPEG2000Lossless)
    path = dicom.write(ds, tmp_path / "j2k.dcm")

    class NoPlugin:
        is_available = False

    monkeypatch.setattr(dicom_reader, "get_decoder", lambda uid: NoPlugin())
    with pytest.raises(
        UnsupportedTransferSyntaxError, match="pip install pylibjpeg pylibjpeg-openjpeg"
    ):
        read_galactogram(path)


@pytest.mark.parametrize(
    "keyword", ["PhotometricInterpretation", "BitsStored", "SamplesPerPixel", "PixelRepresentation"]
)
def test_missing_type1_pixel_attributes_are_assumed_with_a_warning(dicom, tmp_path, keyword):
    ds = dicom.make()
    delattr(ds, keyword)
    ds.save_as(tmp_path / "a.dcm")
    image = read_galactogram(tmp_path / "a.dcm")
    assert any(w.startswith(f"{keyword} is missing; assumed") for w in image.warnings)
    np.testing.assert_array_equal(image.stored, dicom.make().pixel_array)


def test_missing_rows_is_refused(dicom, tmp_path):
    ds = dicom.make()
    del ds.Rows
    ds.save_as(tmp_path / "a.dcm")
    with pytest.raises(ImageReadError, match="Rows is missing"):
        read_galactogram(tmp_path / "a.dcm")


@pytest.mark.parametrize(
    ("keyword", "text", "laterality", "view"),
    [
        ("SeriesDescription", "R MLO", "R", "MLO"),
        ("SeriesDescription", "Galactography LCC", "L", "CC"),
        ("ProtocolName", "Right CC ductogram", "R", "CC"),
        ("ImageComments", "left ML", "L", "ML"),
    ],
)
def test_view_and_laterality_from_free_text_when_the_coded_ones_are_missing(
    dicom, tmp_path, keyword, text, laterality, view
):
    ds = dicom.make(view=None, laterality=None, orientation=None)
    setattr(ds, keyword, text)
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    assert (image.laterality, image.view) == (laterality, view)
    assert any(f"view {view} taken from the {keyword}" in w for w in image.warnings)
    assert any(f"laterality {laterality} taken from the {keyword}" in w for w in image.warnings)


def test_coded_view_and_laterality_win_over_free_text(dicom, tmp_path):
    ds = dicom.make(view="CC", laterality="L")
    ds.SeriesDescription = "R MLO"
    image = read_galactogram(dicom.write(ds, tmp_path / "a.dcm"))
    assert (image.laterality, image.view) == ("L", "CC")
    assert not any("taken from" in w for w in image.warnings)
