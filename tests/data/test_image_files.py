"""PNG/TIFF research images: spacing must be given; 8/16-bit grey read like DICOM."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from ductai.data.canonical import to_canonical
from ductai.data.errors import MissingSpacingError, NotDicomError, UnsupportedImageError
from ductai.data.image_files import read_image_file


@pytest.mark.parametrize(
    ("suffix", "dtype"), [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint16)]
)
def test_grey_images_are_read_with_the_given_spacing(dicom, tmp_path, suffix, dtype):
    phantom = dicom.stored_phantom("R", "CC", dicom.standard[("R", "CC")])
    pixels = (phantom // 16).astype(dtype) if dtype == np.uint8 else phantom.astype(dtype)
    path = tmp_path / f"img{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
    image = read_image_file(path, pixel_spacing=0.07, laterality="r", view="cc")
    np.testing.assert_array_equal(image.stored, pixels)
    assert image.pixel_spacing_mm == (0.07, 0.07) and image.spacing_source == "user"
    assert (image.laterality, image.view, image.patient_orientation) == ("R", "CC", None)
    _, geometry = to_canonical(image, 0.07)
    assert geometry.flip_cols  # right breast: nipple was on the left


def test_spacing_is_required(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    with pytest.raises(MissingSpacingError, match=r"x\.png: .*--pixel-spacing"):
        read_image_file(path)


def test_colour_and_junk_are_refused(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(UnsupportedImageError, match="colour"):
        read_image_file(tmp_path / "c.png", pixel_spacing=0.1)
    (tmp_path / "j.png").write_bytes(b"not a png")
    with pytest.raises(NotDicomError, match=r"j\.png"):
        read_image_file(tmp_path / "j.png", pixel_spacing=0.1)
