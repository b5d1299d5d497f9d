"""Classify's precision: bfloat16 on CPUs that compute it in hardware, else float32."""

from __future__ import annotations

import numpy as np
import pytest
from model_files import write_model_file

from geopsp.classify.predictor import Predictor

CLASSES = [{"value": v, "name": f"c{v}", "color": [v, v, v]} for v in range(3)]


@pytest.mark.parametrize(
    ("native", "amp", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_cpu_mixed_precision_only_with_bf16_hardware(tmp_path, monkeypatch, native, amp, expected):
    monkeypatch.setattr("geopsp.core.precision.cpu_has_bf16", lambda: native)
    path = write_model_file(tmp_path / "m.safetensors", CLASSES)
    assert Predictor.from_file(str(path), "cpu", amp=amp).amp is expected


def test_bf16_probabilities_follow_float32(tmp_path, monkeypatch):
    monkeypatch.setattr("geopsp.core.precision.cpu_has_bf16", lambda: True)
    path = write_model_file(tmp_path / "m.safetensors", CLASSES)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    x = np.stack([np.sin(xx / 9), np.cos(yy / 7), np.sin((xx + yy) / 11)])[None]
    x = np.concatenate([x, -x]).astype(np.float32)  # (2, 3, 64, 64), already normalized
    p32 = Predictor.from_file(str(path), "cpu", amp=False).forward_fn()(x)
    p16 = Predictor.from_file(str(path), "cpu", amp=True).forward_fn()(x)
    assert p16.dtype == np.float32 and p16.shape == p32.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(p16.sum(1), 1.0, atol=1e-5)
    assert not np.array_equal(p16, p32)  # the bfloat16 path really ran
    assert np.abs(p16 - p32).max() < 0.05
    assert (p16.argmax(1) == p32.argmax(1)).mean() > 0.95
