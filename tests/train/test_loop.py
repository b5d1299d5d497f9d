"""``train_step`` on a CPU: the channels_last batch changes the speed, not the result; the
precision follows the CPU's bfloat16 support."""

from __future__ import annotations

import copy

import pytest
import torch

from geopsp.core.precision import has_bf16_flags
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
    accel = Accel.for_device(torch.device("cpu"), False)  # float32: results must be equal
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


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("flags\t\t: fpu sse2 avx2 avx512f avx512bw amx_bf16 amx_tile amx_int8\n", True),
        ("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n", True),
        ("flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n", False),
        ("flags\t\t: fpu xamx_bf16x\n", False),
        ("", False),
    ],
)
def test_bf16_flags(flags, expected):
    assert has_bf16_flags(flags) is expected


@pytest.mark.parametrize(
    ("native", "amp", "dtype"),
    [
        (True, None, torch.bfloat16),  # the default where the CPU has bfloat16 instructions
        (False, None, torch.float32),  # and float32 where it has not
        (True, False, torch.float32),  # --no-amp
        (False, True, torch.bfloat16),  # --amp asks for it anyway
    ],
)
def test_cpu_precision_follows_the_cpu(monkeypatch, native, amp, dtype):
    monkeypatch.setattr("geopsp.train.loop.cpu_has_bf16", lambda: native)
    accel = Accel.for_device(torch.device("cpu"), amp)
    assert accel.amp is (dtype == torch.bfloat16)
    assert accel.amp_dtype == dtype
    assert not accel.channels_last  # the weights keep their layout on a CPU
    assert not accel.scaler().is_enabled()  # bfloat16 needs no loss scaling


def test_bfloat16_step_trains_float32_weights():
    model = tiny_model()
    ref, start = copy.deepcopy(model), copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    crit = make_criterion("ce+dice")
    steps = {}
    for name, m, amp in (("bf16", model, True), ("fp32", ref, False)):
        accel = Accel.for_device(torch.device("cpu"), amp)
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        torch.manual_seed(7)
        xb, yb = accel.to_device(x, y)
        steps[name] = float(train_step(m, opt, accel.scaler(), xb, yb, crit, None, accel, 0.4))
    # bfloat16 keeps 8 bits of mantissa: the loss agrees to about a percent.
    assert abs(steps["bf16"] - steps["fp32"]) < 0.03 * steps["fp32"]
    moved = 0
    params = zip(model.named_parameters(), ref.parameters(), start.parameters(), strict=True)
    for (name, p), q, p0 in params:
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p).all(), name
        moved += int(not torch.equal(p, p0))  # the bfloat16 step changed the weights
        # The bfloat16 step follows the float32 one: same direction for the gradient.
        cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0)
        assert p.grad.abs().sum() == 0 or cos > 0.9, (name, float(cos))
    assert moved > 0
