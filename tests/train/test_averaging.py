"""The moving average of the weights behind ``--ema``."""

from __future__ import annotations

import torch
from torch import nn

from geopsp.train.averaging import WeightAverage


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1))


def shift_all(model: nn.Module, by: float) -> None:
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.add_(by)
            else:
                v.add_(1)


def test_first_updates_follow_the_warm_up_then_the_decay():
    model = small_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    avg = WeightAverage(model, 0.99)
    shift_all(model, 1.0)
    avg.update()  # d = min(0.99, 2 / 11): the average moves 9/11 of the way
    w = avg.module.state_dict()
    for k, v in start.items():
        if v.is_floating_point():  # weights, biases and BatchNorm statistics alike
            torch.testing.assert_close(w[k], v + 9 / 11)
        else:  # num_batches_tracked is copied, not averaged
            assert torch.equal(w[k], v + 1)
    for _ in range(2000):
        avg.update()
    # Long after the warm-up the average has reached weights that stopped moving.
    cur = model.state_dict()
    assert all(torch.allclose(w[k], cur[k]) for k in cur)
    assert avg.updates == 2001


def test_decay_after_warm_up_and_training_does_not_touch_the_copy():
    model = small_model()
    avg = WeightAverage(model, 0.5)  # (1 + n) / (10 + n) < 0.5 only for n < 8
    for _ in range(10):
        avg.update()
    before = avg.module[0].weight.clone()
    shift_all(model, 2.0)
    avg.update()
    torch.testing.assert_close(avg.module[0].weight, before + 1.0)  # half of the step
    assert not avg.module.training
    assert not any(p.requires_grad for p in avg.module.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_state_dict_round_trip():
    model = small_model()
    avg = WeightAverage(model, 0.9)
    shift_all(model, 0.5)
    for _ in range(3):
        avg.update()
    state = avg.state_dict()
    other = WeightAverage(small_model(), 0.9)
    other.load_state_dict(state)
    assert other.updates == 3
    a, b = avg.module.state_dict(), other.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The restored average keeps following its own model.
    shift_all(model, 0.5)
    avg.update()
    assert not torch.equal(avg.module[0].weight, other.module[0].weight)
