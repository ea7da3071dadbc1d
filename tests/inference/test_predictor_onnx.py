"""ONNX Runtime backend of the segmentation net: same maps as eager, cached export."""

from __future__ import annotations

import numpy as np
import pytest

from ductai.inference.onnx_backend import onnx_available
from ductai.inference.predictor import Predictor

pytestmark = pytest.mark.skipif(not onnx_available(), reason="needs onnx and onnxruntime")


def test_onnx_and_eager_agree(tiny_bundle, simulated_study, tmp_path):
    path = simulated_study.images[0]
    eager = Predictor.from_path(tiny_bundle, backend="eager", device="cpu")
    ort = Predictor.from_path(tiny_bundle, backend="onnx", device="cpu", onnx_cache=tmp_path)
    assert (eager.backend, ort.backend) == ("eager", "onnx")
    a, b = eager.predict(path), ort.predict(path)
    np.testing.assert_allclose(b.duct_prob, a.duct_prob, atol=1e-4)
    np.testing.assert_allclose(b.lesion_prob, a.lesion_prob, atol=1e-4)
    assert b.model["backend"] == "onnx"

    # The export is cached by the weights' hash: a second Predictor reuses the file.
    (exported,) = tmp_path.glob("*.onnx")
    stamp = exported.stat().st_mtime_ns
    again = Predictor.from_path(tiny_bundle, backend="auto", device="cpu", onnx_cache=tmp_path)
    assert again.backend == "onnx" and exported.stat().st_mtime_ns == stamp
