"""Optimizers, learning-rate schedules and the ``--lr auto`` range test.

Schedules are functions of (step, total steps) wrapped in ``LambdaLR``: the checkpoint keeps
only the step counter, so a run resumed with a larger ``--epochs`` stretches the rest of the
schedule over the new total instead of restarting it.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

WEIGHT_DECAY = {"adamw": 1e-2, "sgd": 1e-4}
LR_RANGE = (1e-6, 1.0)
LR_TEST_STEPS = 40
LR_BOUNDS = (1e-5, 0.1)  # the range test's choice is clipped to this sane band

# --lr auto under a time limit: the range test may take this share of the limit, with at
# least this many steps (fewer cannot sweep 1e-6..1); when even those do not fit, a fixed rate.
RANGE_TEST_SHARE = 0.1
RANGE_TEST_MIN_STEPS = 10
RANGE_TEST_MAX_SHARE = 0.25


def range_test_steps(limit: float | None, step_s: float, steps: int) -> int:
    """Steps of the ``--lr auto`` range test that fit a time limit; 0: skip the test.

    ``step_s`` is the measured seconds of one training step, ``steps`` the test's full length.
    """
    if limit is None:
        return steps
    fit = int(RANGE_TEST_SHARE * limit / max(step_s, 1e-9))
    if fit >= RANGE_TEST_MIN_STEPS:
        return min(steps, fit)
    if RANGE_TEST_MIN_STEPS * step_s <= RANGE_TEST_MAX_SHARE * limit:
        return min(steps, RANGE_TEST_MIN_STEPS)
    return 0


def make_optimizer(name: str, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW (weight decay 0.01) or SGD (momentum 0.9, Nesterov, weight decay 1e-4).

    Biases and normalization weights get no weight decay.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY[name]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    # fused: one kernel updates every tensor; the per-tensor loop was ~9 % of a CPU step on
    # 128 px chips (bench/train_step.py). CPU and CUDA both have it; GradScaler supports it.
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``.

    ``onecycle``: cosine warm-up from lr/25 to lr over the first 30 % of the steps, then
    cosine annealing to lr/10^4. ``poly``: ``(1 - t)^0.9``. ``cosine``: linear warm-up over 5 %,
    then cosine to 0.
    """
    total = max(total, 1)
    t = min(step / total, 1.0)
    if schedule == "onecycle":
        up = 0.3
        if t < up:
            lo = 1 / 25
            return lo + (1 - lo) * (1 - math.cos(math.pi * t / up)) / 2
        lo = 1 / 25 / 1e4
        return lo + (1 - lo) * (1 + math.cos(math.pi * (t - up) / (1 - up))) / 2
    if schedule == "poly":
        return max(1 - t, 0.0) ** 0.9
    warm = 0.05
    if t < warm:
        return max(t / warm, 1e-3)
    return (1 + math.cos(math.pi * (t - warm) / (1 - warm))) / 2


def make_scheduler(optimizer, schedule: str, total_steps_fn):
    """A ``LambdaLR`` whose total is read through ``total_steps_fn()`` at each step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(schedule, step, total_steps_fn())
    )


def lr_range_test(model, optimizer_name: str, batches, step_fn, steps: int = LR_TEST_STEPS) -> dict:
    """Short learning-rate range test (Smith 2015): raise the rate exponentially from 1e-6 to 1
    over ``steps`` training steps and pick one tenth of the rate with the lowest smoothed loss,
    clipped to [1e-5, 0.1]. The model's weights are restored afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        The (unwrapped) model; trained in place during the test, then restored.
    optimizer_name : str
        ``adamw`` or ``sgd``.
    batches : iterable of (x, y)
        Training batches, cycled as needed.
    step_fn : callable
        ``step_fn(model, optimizer, x, y) -> float`` runs one training step and returns its loss.

    Returns
    -------
    dict
        ``lr`` (the choice), ``lrs`` and ``losses`` (the curve).
    """
    saved = copy.deepcopy(model.state_dict())
    opt = make_optimizer(optimizer_name, model, LR_RANGE[0])
    lrs = np.geomspace(LR_RANGE[0], LR_RANGE[1], steps)
    losses: list[float] = []
    smooth, best = None, math.inf
    data = list(batches)
    for i, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = float(lr)
        x, y = data[i % len(data)]
        loss = step_fn(model, opt, x, y)
        if not math.isfinite(loss):
            break
        smooth = loss if smooth is None else 0.7 * smooth + 0.3 * loss
        losses.append(smooth)
        best = min(best, smooth)
        if smooth > 4 * best and i > steps // 4:
            break
    model.load_state_dict(saved)
    chosen = 1e-3 if len(losses) < 3 else float(lrs[int(np.argmin(losses))]) / 10
    chosen = float(np.clip(chosen, *LR_BOUNDS))
    return {"lr": chosen, "lrs": lrs[: len(losses)].tolist(), "losses": losses}


def steps_in_budget(limit: float, model, batches, step_fn, steps: int) -> int:
    """Range-test steps that fit ``limit`` seconds, from one timed step (weights put back)."""
    import time

    saved = copy.deepcopy(model.state_dict())
    t0 = time.monotonic()
    step_fn(model, torch.optim.SGD(model.parameters(), lr=0.0), *batches[0])
    seconds = time.monotonic() - t0
    model.load_state_dict(saved)
    return range_test_steps(limit, seconds, steps)
