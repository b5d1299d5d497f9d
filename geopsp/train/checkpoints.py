"""The resumable training checkpoint (``last.ckpt``).

Saved with :func:`torch.save` but made only of tensors, dicts, lists, numbers and strings, so
it loads with ``torch.load(..., weights_only=True)``: nothing is unpickled as code.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from geopsp.core.atomic import atomic_path
from geopsp.core.errors import InputError

CHECKPOINT_FORMAT = "geopsp-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TrainState:
    """How far a run has come: what ``last.ckpt`` stores beside the weights and optimizer."""

    epoch: int = 0  # last finished epoch
    best_score: float | None = None  # of the monitored validation score
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement (for --patience)
    history: list[dict] = field(default_factory=list)  # metrics.csv rows
    best_metrics: dict = field(default_factory=dict)  # validation metrics of the best epoch
    total_steps: int = 0  # optimizer steps the learning-rate schedule spans
    elapsed: float = 0.0  # seconds the run had spent when the checkpoint was written
    time_limit: float | None = None  # --time-limit in seconds (None: no limit)
    costs: dict = field(default_factory=dict)  # measured seconds: step, val, outputs

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> TrainState:
        default = cls()
        return cls(
            epoch=int(ckpt.get("epoch", default.epoch)),
            best_score=ckpt.get("best_score", default.best_score),
            best_epoch=int(ckpt.get("best_epoch", default.best_epoch)),
            bad_epochs=int(ckpt.get("bad_epochs", default.bad_epochs)),
            history=list(ckpt.get("history", default.history)),
            best_metrics=dict(ckpt.get("best_metrics", default.best_metrics)),
            total_steps=int(ckpt.get("total_steps", default.total_steps)),
            elapsed=float(ckpt.get("elapsed", default.elapsed)),
            time_limit=ckpt.get("time_limit", default.time_limit),
            costs=dict(ckpt.get("costs", default.costs)),
        )

    def as_checkpoint(self) -> dict:
        """The checkpoint's progress entries (top-level keys of ``last.ckpt``)."""
        return asdict(self)

    def record(self, epoch: int, row: dict, score: float, best: dict | None) -> None:
        """Add a finished epoch: its ``metrics.csv`` row, and its metrics when it is the best."""
        if best is not None:
            self.best_score, self.best_epoch, self.bad_epochs = float(score), epoch, 0
            self.best_metrics = best
        else:
            self.bad_epochs += 1
        self.history.append(row)
        self.epoch = epoch


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain containers."""
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_state(ckpt: dict, optimizer, scheduler, scaler) -> None:
    """Load a checkpoint's optimizer, schedule, GradScaler and RNG states into a new run."""
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write a checkpoint atomically (a crash mid-write keeps the previous one)."""
    full = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(full, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--resume {p}: no such checkpoint file")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or foreign pickles all mean "not ours"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--resume {p}: not a readable geopsp checkpoint ({first[:200]})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"--resume {p}: not a geopsp training checkpoint (last.ckpt)")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise InputError(f"--resume {p}: written by a newer geopsp; upgrade geopsp to resume it")
    return ckpt
