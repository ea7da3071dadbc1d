"""Datalists: patient-wise splits, relative paths, one error listing every problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ductai.data.datalist import (
    DatalistEntry,
    datalist_from_simulation,
    load_datalist,
    split_by_patient,
    write_datalist,
    write_simulation_datalist,
)
from ductai.data.errors import DatalistError


def _entries(tmp_path, n_patients=10):
    entries = []
    for p in range(n_patients):
        for view in ("CC", "MLO"):
            image = tmp_path / "images" / f"P{p:02d}_R{view}.dcm"
            image.parent.mkdir(exist_ok=True)
            image.write_bytes(b"x")
            entries.append(
                DatalistEntry(
                    image=str(image),
                    boxes=[[1, 2, 5, 6]],
                    labels=["papilloma"],
                    patient_id=f"P{p:02d}",
                    laterality="R",
                    view=view,
                )
            )
    return entries


def test_split_keeps_patients_together_and_is_deterministic(tmp_path):
    entries = _entries(tmp_path, 20)
    splits = split_by_patient(entries, (0.7, 0.15, 0.15), seed=3)
    patients = {k: {e.patient_id for e in v} for k, v in splits.items()}
    assert [len(patients[k]) for k in ("training", "validation", "test")] == [14, 3, 3]
    assert not (patients["training"] & patients["validation"])
    assert not (patients["training"] & patients["test"])
    assert not (patients["validation"] & patients["test"])
    assert sum(len(v) for v in splits.values()) == len(entries)
    again = split_by_patient(list(reversed(entries)), (0.7, 0.15, 0.15), seed=3)
    assert {k: {e.patient_id for e in v} for k, v in again.items()} == patients
    other = split_by_patient(entries, (0.7, 0.15, 0.15), seed=4)
    assert {k: {e.patient_id for e in v} for k, v in other.items()} != patients


def test_small_sets_still_fill_every_split(tmp_path):
    splits = split_by_patient(_entries(tmp_path, 3), seed=0)
    assert all(len(v) == 2 for v in splits.values())


def test_write_then_load_round_trip_with_relative_paths(tmp_path):
    entries = _entries(tmp_path, 4)
    path = write_datalist(tmp_path / "lists" / "datalist.json", split_by_patient(entries, seed=0))
    document = json.loads(path.read_text())
    assert document["training"][0]["image"].startswith("../images/")
    loaded = load_datalist(path)
    assert sorted(e.image for v in loaded.values() for e in v) == sorted(e.image for e in entries)


def test_every_problem_is_listed_at_once(tmp_path):
    document = {
        "training": [
            {
                "image": "missing.dcm",
                "patient_id": "A",
                "boxes": [[5, 5, 1, 9]],
                "labels": ["papilloma"],
            },
            {
                "image": "missing2.dcm",
                "patient_id": "B",
                "boxes": [[0, 0, 1, 1]],
                "labels": ["tumour"],
            },
            {"image": "m3.dcm", "boxes": [[0, 0, 1]], "labels": []},
        ],
        "validation": [{"image": "m4.dcm", "patient_id": "A"}],
    }
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DatalistError) as caught:
        load_datalist(path)
    text = str(caught.value)
    assert (
        "training[0] (missing.dcm): boxes: box 0 [5.0, 5.0, 1.0, 9.0] is empty or inverted" in text
    )
    assert "training[1] (missing2.dcm): labels: unknown labels ['tumour']" in text
    assert "training[2] (m3.dcm): patient_id: Field required" in text
    assert "training[2] (m3.dcm): boxes: box 0 [0.0, 0.0, 1.0] is not 4 finite numbers" in text
    assert "validation[0] (m4.dcm): image file not found" in text
    assert "patient A is in several splits: ['training', 'validation']" in text
    assert text.count("  - ") == 6  # (training[0] is invalid, so its file is not checked)


def test_simulation_output_becomes_a_datalist(tmp_path):
    for pid in ("S1", "S2", "S3"):
        for view in ("CC", "ML"):
            image_id = f"{pid}_L{view}"
            (tmp_path / "images").mkdir(exist_ok=True)
            (tmp_path / "labels").mkdir(exist_ok=True)
            (tmp_path / "images" / f"{image_id}.dcm").write_bytes(b"x")
            (tmp_path / "labels" / f"{image_id}_duct.png").write_bytes(b"x")
            truth = {
                "image_id": image_id,
                "patient_id": pid,
                "study_instance_uid": "1.2.3",
                "laterality": "L",
                "view": view,
                "rows": 10,
                "columns": 8,
                "objects": [
                    {"label": "papilloma", "bbox_px": [1, 1, 3, 4], "is_mimic": False},
                    {"label": "air_bubble", "bbox_px": [4, 4, 5, 5], "is_mimic": True},
                ],
            }
            (tmp_path / "labels" / f"{image_id}.json").write_text(json.dumps(truth))
    entries = datalist_from_simulation(tmp_path)
    assert len(entries) == 6 and entries[0].labels == ["papilloma", "air_bubble"]
    assert entries[0].duct.endswith("_duct.png") and entries[0].instances is None
    loaded = load_datalist(write_simulation_datalist(tmp_path, seed=1))
    assert {k: len(v) for k, v in loaded.items()} == {"training": 2, "validation": 2, "test": 2}
    assert np.all([e.view in ("CC", "ML") for v in loaded.values() for e in v])
