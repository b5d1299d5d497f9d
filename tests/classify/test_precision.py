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


@pytest.mark.parametrize(
    ("device", "amp", "size", "expected"),
    [
        ("cpu", False, 64, False),
        ("cpu", False, 96, False),
        ("cpu", False, 128, True),
        ("cpu", False, 512, True),
        ("cpu", True, 64, True),
        ("cuda", False, 64, True),
    ],
)
def test_channels_last_by_device_precision_and_tile(device, amp, size, expected):
    import torch

    from geopsp.classify.predictor import channels_last_tiles

    assert channels_last_tiles(torch.device(device), amp, size * size) is expected


@pytest.mark.parametrize("size", [64, 128])
def test_float32_layout_follows_the_tiles_and_keeps_the_probabilities(tmp_path, size):
    import torch

    path = write_model_file(tmp_path / "m.safetensors", CLASSES)
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    pred = Predictor.from_file(str(path), "cpu", amp=False)
    reference = pred.model(torch.from_numpy(x)).softmax(1).detach().numpy()
    out = pred.forward_fn()(x)
    conv = next(m for m in pred.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is (size >= 128)
    np.testing.assert_allclose(out, reference, atol=1e-5)
    # A later run on other tiles puts the shared model back in the layout its tiles want.
    other = 192 - size
    pred.forward_fn()(np.zeros((1, 3, other, other), np.float32))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is (other >= 128)
