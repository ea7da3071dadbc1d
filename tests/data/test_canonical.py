"""Canonical space: nipple to the right for every orientation, exact inverse for every output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ductai.data.canonical import CanonicalGeometry, decide_flips, to_canonical
from ductai.data.dicom_reader import read_galactogram

STANDARD = [
    ("R", "CC"),
    ("L", "CC"),
    ("R", "MLO"),
    ("L", "MLO"),
    ("R", "ML"),
    ("L", "ML"),
    ("R", "XCCL"),
    ("L", "XCCL"),
]
FLIP_BOTH = {"A": "P", "P": "A", "F": "H", "H": "F", "L": "R", "R": "L"}


def _read(dicom, tmp_path, **kwargs):
    return read_galactogram(dicom.write(dicom.make(**kwargs), tmp_path / "a.dcm"))


@pytest.mark.parametrize(("laterality", "view"), STANDARD)
@pytest.mark.parametrize("hanging", ["standard", "mirrored"])
def test_canonical_image_has_the_nipple_right_and_medial_or_feet_down(
    dicom, tmp_path, laterality, view, hanging
):
    orientation = dicom.standard[(laterality, view)]
    if hanging == "mirrored":  # a vendor storing both axes reversed, orientation says so
        orientation = tuple(FLIP_BOTH[o] for o in orientation)
    image = _read(dicom, tmp_path, laterality=laterality, view=view, orientation=orientation)
    pixels, geometry = to_canonical(image, spacing_mm=0.1)
    assert geometry.canonical_shape == (image.rows, image.columns)
    # Exactly the canonical phantom: nipple marker right, row marker at the bottom.
    labels = geometry.image_to_canonical(image.stored, interpolation="nearest")
    np.testing.assert_array_equal(labels, dicom.phantom())
    for value in (dicom.values.nipple, dicom.values.row_mark):
        box = geometry.boxes_to_canonical(_marker_box(image.stored, value)[None])[0]
        np.testing.assert_array_equal(box, _marker_box(dicom.phantom(), value))
    nipple_cols = np.nonzero(labels == dicom.values.nipple)[1]
    assert nipple_cols.min() > 0.8 * labels.shape[1]
    assert pixels[labels == dicom.values.nipple].min() > pixels[labels == dicom.values.air].max()
    assert image.warnings == []


@pytest.mark.parametrize(("laterality", "view"), STANDARD)
def test_without_orientation_the_laterality_decides(dicom, tmp_path, laterality, view):
    stored = dicom.stored_phantom(laterality, view, dicom.standard[(laterality, view)])
    image = _read(
        dicom, tmp_path, pixels=stored, laterality=laterality, view=view, orientation=None
    )
    _, geometry = to_canonical(image, 0.1)
    labels = geometry.image_to_canonical(image.stored, "nearest")
    np.testing.assert_array_equal(labels, dicom.phantom())
    assert any("laterality" in w for w in image.warnings)


@pytest.mark.parametrize("nipple_side", ["left", "right"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_without_orientation_or_laterality_the_content_decides(
    dicom, tmp_path, nipple_side, photometric
):
    stored = dicom.phantom()
    if nipple_side == "left":
        stored = np.ascontiguousarray(stored[:, ::-1])
    if photometric == "MONOCHROME1":
        stored = (4095 - stored).astype(np.uint16)
    image = _read(
        dicom,
        tmp_path,
        pixels=stored,
        laterality=None,
        view=None,
        orientation=None,
        photometric=photometric,
    )
    _, geometry = to_canonical(image, 0.1)
    assert geometry.flip_cols == (nipple_side == "left")
    assert any("image content" in w for w in image.warnings)


def _marker_box(labels: np.ndarray, value: int) -> np.ndarray:
    rows, cols = np.nonzero(labels == value)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=float)


@pytest.mark.parametrize(("laterality", "view"), STANDARD)
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_point_box_and_mask_round_trip_exactly_on_equal_spacing(
    dicom, tmp_path, laterality, view, photometric
):
    image = _read(dicom, tmp_path, laterality=laterality, view=view, photometric=photometric)
    _, geometry = to_canonical(image, 0.1)
    nipple_value = (
        dicom.values.nipple if photometric == "MONOCHROME2" else 4095 - dicom.values.nipple
    )
    mask = (image.stored == nipple_value).astype(np.uint8)
    box = _marker_box(mask, 1)
    centre = (box[:2] + box[2:]) / 2

    canonical_mask = geometry.image_to_canonical(mask, "nearest")
    np.testing.assert_array_equal(geometry.to_original(canonical_mask), mask)
    canonical_box = geometry.boxes_to_canonical(box[None])[0]
    np.testing.assert_array_equal(canonical_box, _marker_box(canonical_mask, 1))
    np.testing.assert_allclose(geometry.boxes_to_original(canonical_box[None])[0], box)
    canonical_centre = geometry.points_to_canonical(centre[None])[0]
    np.testing.assert_allclose(canonical_centre, (canonical_box[:2] + canonical_box[2:]) / 2)
    np.testing.assert_allclose(geometry.points_to_original(canonical_centre[None])[0], centre)


@pytest.mark.parametrize(("laterality", "view"), STANDARD)
def test_round_trip_through_a_coarser_spacing(dicom, tmp_path, laterality, view):
    image = _read(dicom, tmp_path, laterality=laterality, view=view)
    pixels, geometry = to_canonical(image, 0.25)
    assert geometry.canonical_shape == (24, 19)  # 60 x 48 pixels of 0.1 mm
    assert pixels.shape == geometry.canonical_shape
    mask = (image.stored >= dicom.values.tissue).astype(np.uint8)
    back = geometry.to_original(geometry.image_to_canonical(mask, "nearest"))
    assert back.shape == mask.shape
    assert np.mean(back != mask) < 0.05  # only edge pixels differ
    box = _marker_box(image.stored, dicom.values.nipple)
    canonical_box = geometry.boxes_to_canonical(box[None])[0]
    expected = _marker_box(dicom.phantom(), dicom.values.nipple) * np.array([19 / 48, 24 / 60] * 2)
    np.testing.assert_allclose(canonical_box, expected, atol=1e-9)
    nipple_canonical = geometry.image_to_canonical(image.stored.astype(np.float32), "area")
    # The mapped box covers the brightest canonical pixel (the nipple marker).
    r, c = np.unravel_index(np.argmax(nipple_canonical), nipple_canonical.shape)
    assert (
        canonical_box[0] <= c + 0.5 <= canonical_box[2]
        and canonical_box[1] <= r + 0.5 <= canonical_box[3]
    )
    np.testing.assert_allclose(geometry.boxes_to_original(canonical_box[None])[0], box)
    points = np.array([[0.0, 0.0], [48.0, 60.0], [12.3, 45.6]])
    np.testing.assert_allclose(
        geometry.points_to_original(geometry.points_to_canonical(points)), points
    )


def test_heatmaps_with_channels_go_back_to_the_exact_original_shape():
    geometry = CanonicalGeometry.create((333, 251), (0.07, 0.07), 0.2, flip_cols=True)
    heatmap = np.random.default_rng(0).random((2, *geometry.canonical_shape)).astype(np.float32)
    back = geometry.to_original(heatmap, interpolation="linear")
    assert back.shape == (2, 333, 251)
    labels = np.arange(333 * 251, dtype=np.int64).reshape(333, 251) % 7
    assert geometry.image_to_canonical(labels, "nearest").dtype == np.int64


def test_geometry_is_json_round_trippable():
    geometry = CanonicalGeometry.create((100, 80), (0.085, 0.1), 0.2, True, True, "test")
    data = json.loads(json.dumps(geometry.to_dict()))
    assert CanonicalGeometry.from_dict(data) == geometry
    assert data["scale"] == [geometry.canonical_shape[0] / 100, geometry.canonical_shape[1] / 80]


def test_cc_rows_towards_the_lateral_side_are_flipped():
    assert decide_flips("R", "CC", ("P", "R")) == (True, True, "PatientOrientation P\\R")
    assert decide_flips("L", "CC", ("A", "L"))[:2] == (False, True)
    assert decide_flips("L", "MLO", ("A", "H"))[:2] == (False, True)
    assert decide_flips("R", "MLO", ("P", "FL"))[:2] == (True, False)


def test_shape_mismatch_is_an_error():
    geometry = CanonicalGeometry.create((10, 10), (0.1, 0.1), 0.1)
    with pytest.raises(ValueError, match="original shape"):
        geometry.image_to_canonical(np.zeros((9, 10)))


def _breast_image(chest_wall_right: bool) -> np.ndarray:
    """A half-disc of tissue against one edge, air elsewhere (contrast bright)."""
    rows, cols = np.mgrid[0:300, 0:240]
    x = 240 - cols if chest_wall_right else cols
    image = np.where((x / 200.0) ** 2 + ((rows - 150) / 130.0) ** 2 < 1.0, 0.6, 0.02)
    return image.astype(np.float32)


def test_a_hanging_known_from_laterality_alone_is_checked_against_the_chest_wall():
    standard = _breast_image(chest_wall_right=True)  # a right breast as usually hung
    assert decide_flips("R", "CC", None, standard) == (
        True,
        False,
        "laterality R (no PatientOrientation)",
    )
    mirrored = _breast_image(chest_wall_right=False)  # the same breast stored mirrored
    flip_cols, flip_rows, reason = decide_flips("R", "CC", None, mirrored)
    assert (flip_cols, flip_rows) == (False, False)
    assert "chest wall is on the image's left" in reason
    # an explicit PatientOrientation is followed as written
    assert decide_flips("R", "CC", ("P", "R"), mirrored)[0] is True
    # edges that do not tell (tissue across the whole width) leave the standard hanging
    full = np.full((300, 240), 0.6, np.float32)
    assert decide_flips("L", "MLO", None, full)[:2] == (False, False)


def test_a_mirrored_file_without_orientation_gives_the_same_canonical_image(tmp_path):
    """A real simulated view stored mirrored, its PatientOrientation removed: the laterality
    alone would hang it the wrong way round; the chest wall in the image decides."""
    import pydicom

    from ductai.data.dicom_reader import read_galactogram
    from ductai.simulation.config import load_simulation_config
    from ductai.simulation.dicom_writer import DicomIdentity, write_mg_dicom
    from ductai.simulation.sample import simulate_breast

    view = simulate_breast(load_simulation_config("default"), 3, 0, spacing_mm=0.5)[0]
    path = write_mg_dicom(tmp_path / "view.dcm", view.rendered, DicomIdentity.generate("M-1"))
    ds = pydicom.dcmread(path)
    del ds.PatientOrientation
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
    ds.save_as(tmp_path / "mirrored.dcm")

    original, _ = to_canonical(read_galactogram(path), 0.5)
    image = read_galactogram(tmp_path / "mirrored.dcm")
    mirrored, geometry = to_canonical(image, 0.5)
    assert "chest wall is on the image's" in geometry.flip_reason
    assert any("image content" in w for w in image.warnings)
    # the same picture up to the rows, which nothing in a mirrored file can tell
    assert np.allclose(mirrored, original) or np.allclose(mirrored, original[::-1])
