"""``train_step`` on a CPU: the channels_last batch changes the speed, not the result."""

from __future__ import annotations

import copy

import pytest
import torch

from geopsp.models import AUX_WEIGHT, build_model
from geopsp.train.loop import Accel, train_step
from geopsp.train.losses import make_criterion, total_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    arch = {"backbone": "resnet18", "in_channels": 3, "num_classes": 3, "output_stride": 8,
            "decoder": "fpn", "pointrend": True,
            "pointrend_params": {"train_points": 64, "points": 100}}  # fmt: skip
    return build_model(arch).train()


def test_channels_last_step_equals_plain_step(monkeypatch):
    monkeypatch.setattr("geopsp.train.loop.CPU_CHANNELS_LAST_PIXELS", 32 * 32)  # this chip too
    model = tiny_model()
    ref = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    y[0, :4] = 255  # ignored pixels
    crit = make_criterion("ce")
    accel = Accel.for_device(torch.device("cpu"), None)
    # Plain SGD with lr 1 turns the parameter change into the gradient itself.
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=1.0)

    torch.manual_seed(7)  # same dropout masks and PointRend points in both steps
    loss = train_step(model, opt, accel.scaler(), x, y, crit, None, accel, AUX_WEIGHT)
    torch.manual_seed(7)
    ref_loss = total_loss(ref(x.contiguous()), y, crit, None, AUX_WEIGHT)
    ref_opt.zero_grad()
    ref_loss.backward()
    ref_opt.step()

    assert torch.allclose(loss, ref_loss.detach(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name
        # Weights keep their layout: checkpoints and model files see the same tensors.
        assert p.is_contiguous() and p.grad.is_contiguous(), name
    for (name, b), c in zip(model.named_buffers(), ref.buffers(), strict=True):
        assert torch.allclose(b.float(), c.float(), rtol=1e-4, atol=1e-5), name


def test_network_without_aux_head():
    model = tiny_model()
    model.aux_head = None
    out = model(torch.randn(1, 3, 32, 32))
    assert out["aux"] is None and out["logits"].shape == (1, 3, 32, 32)
