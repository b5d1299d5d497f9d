"""An exponential moving average of the weights being trained (``--ema DECAY``).

After every optimizer step the average moves a fraction ``1 - d`` of the way to the current
weights (BatchNorm running statistics included), so it follows the last ``1 / (1 - d)`` or so
steps: at ``--ema 0.99`` about a hundred. Validation, the model file and the preview use the
average; the optimizer keeps working on the raw weights, which ``last.ckpt`` stores beside it.
Early in a run the average would mostly remember the random start, so ``d`` grows as
``min(decay, (1 + n) / (10 + n))`` with the update count ``n`` (as timm's model EMA does).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """A moving average of ``model``'s state, kept in a copy of the model.

    Parameters
    ----------
    model : torch.nn.Module
        The bare model being trained (not a DDP wrapper); its current state starts the average.
    decay : float
        ``0 < decay < 1``; the weight of the old average at each update once warmed up.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pair(model)

    def _pair(self, model: nn.Module) -> None:
        # state_dict() tensors share storage with the parameters and buffers, so the pairs
        # stay valid while the optimizer updates them in place.
        src, dst = model.state_dict(), self.module.state_dict()
        floats = [k for k, v in dst.items() if v.is_floating_point()]
        self._avg = [dst[k] for k in floats]
        self._cur = [src[k] for k in floats]
        self._copied = [(v, src[k]) for k, v in dst.items() if not v.is_floating_point()]

    def update(self) -> None:
        """Move the average towards the model's current weights (call after each step)."""
        self.updates += 1
        n = self.updates
        d = min(self.decay, (1 + n) / (10 + n))
        with torch.no_grad():
            torch._foreach_lerp_(self._avg, self._cur, 1.0 - d)
            for avg, cur in self._copied:  # e.g. BatchNorm's num_batches_tracked
                avg.copy_(cur)

    def state_dict(self) -> dict:
        """What ``last.ckpt`` keeps of the average."""
        return {"decay": self.decay, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore an average saved by :meth:`state_dict` (same architecture)."""
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def start_average(decay: float, model: nn.Module, checkpoint: dict | None) -> WeightAverage | None:
    """``--ema DECAY``'s average of ``model`` (None when ``decay`` is 0), continuing the one
    a resumed ``checkpoint`` saved, if any; otherwise it starts from the current weights."""
    if not decay:
        return None
    average = WeightAverage(model, decay)
    if checkpoint is not None and checkpoint.get("average"):
        average.load_state_dict(checkpoint["average"])
    return average
