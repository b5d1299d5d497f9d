"""What a training run writes on rank 0 as it goes: ``model.safetensors``, ``last.ckpt``,
``metrics.csv``, ``curves.png`` and, at the end, ``val_preview.png``.

The model file and ``last.ckpt`` of the default network are 59 MB and 176 MB and take about
half a second to write; on a small chip folder an epoch lasts a few seconds, so writing them
after every epoch spent a tenth to a fifth of a timed run on files the next epoch replaced.
They are written after the first epoch, then at most every :data:`SAVE_EVERY_S` seconds, and
after the last epoch (also an early stop or the end of a time limit); ``metrics.csv`` after
every epoch. An interrupted run therefore loses at most that long of training.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from geopsp.core.classes import to_dicts
from geopsp.train.budget import SAVE_EVERY_S
from geopsp.train.config import saved_options
from geopsp.train.outputs import clean, model_metadata

PREVIEW_CHIPS = 4


class EpochWriter:
    """Writes a run's outputs after its epochs, the large files at most every ``every`` s.

    Parameters
    ----------
    cfg : TrainConfig
        The run's options.
    s : Session
        The training session (model, optimizer, state).
    out : Path
        The output folder.
    clock : TimeBudget
        The run's clock; the time spent writing is added to its measured output cost.
    every : float, optional
        Seconds between two writes of the model file and ``last.ckpt`` (default
        :data:`~geopsp.train.budget.SAVE_EVERY_S`).
    """

    def __init__(self, cfg, s, out: Path, clock, every: float | None = None) -> None:
        self.cfg, self.s, self.out, self.clock = cfg, s, out, clock
        self.every = SAVE_EVERY_S if every is None else every
        self.last_save: float | None = None
        self.saved_best = s.state.best_epoch  # the epoch whose weights the model file holds
        self.best_weights: dict | None = None  # CPU copy of the best epoch's weights

    def after_epoch(self, best_weights: dict | None, final: bool) -> None:
        """Record the epoch: ``metrics.csv`` always, the rest when due or ``final``.

        ``best_weights`` is a CPU copy of this epoch's weights when it is the best so far
        and not the run's last word (``--monitor miou``/``loss``), else None.
        """
        from geopsp.train.outputs import write_metrics_csv

        if best_weights is not None:
            self.best_weights = best_weights
        write_metrics_csv(self.out / "metrics.csv", self.s.state.history)
        now = time.monotonic()
        if final or self.last_save is None or now - self.last_save >= self.every:
            self._save()
            self.last_save = time.monotonic()
            self.clock.add_outputs(self.last_save - now)

    def _save(self) -> None:
        from geopsp.models.modelfile import save_model
        from geopsp.train.checkpoints import rng_state, save_checkpoint
        from geopsp.train.outputs import plot_curves

        cfg, s, st = self.cfg, self.s, self.s.state
        if st.best_epoch is not None and st.best_epoch != self.saved_best:
            weights = s.final if st.best_epoch == st.epoch else self.best_weights
            save_model(self.out / "model.safetensors", weights, self._metadata())
            self.saved_best = st.best_epoch
        st.elapsed, st.time_limit, st.costs = (
            self.clock.elapsed(),
            cfg.time_limit,
            self.clock.measured(),
        )
        progress = st.as_checkpoint()
        progress["best_metrics"] = clean(progress["best_metrics"])
        save_checkpoint(
            self.out / "last.ckpt",
            {
                "options": saved_options(cfg, s.lr),
                "architecture": s.arch,
                "classes": to_dicts(s.classes),
                "normalization": {"mean": list(s.mean), "std": list(s.std)},
                "model": s.plain.state_dict(),
                "optimizer": s.optimizer.state_dict(),
                "scheduler": s.scheduler.state_dict(),
                "scaler": s.scaler.state_dict(),
                "average": None if s.average is None else s.average.state_dict(),
                "rng": rng_state(),
                **progress,
            },
        )
        plot_curves(self.out / "curves.png", st.history, cfg.monitor)

    def _metadata(self) -> dict:
        return model_metadata(self.cfg, self.s, self.s.lr, self.s.state.best_metrics)

    def preview(self) -> None:
        """``val_preview.png`` from the model file's weights: the current ones with
        ``--monitor last``, else the best epoch's (the current ones are put back)."""
        from geopsp.train.loop import predict_chips
        from geopsp.train.outputs import plot_preview

        s = self.s
        current = None
        if self.cfg.monitor != "last" and s.state.best_epoch != s.state.epoch:
            best = self.best_weights
            if best is None:  # the best epoch was before a resume: read it back
                from safetensors.torch import load_file

                best = load_file(str(self.out / "model.safetensors"))
            current = {k: v.detach().to("cpu", copy=True) for k, v in s.final.state_dict().items()}
            s.final.load_state_dict(best)
        n = len(s.data.val_set)
        idx = sorted({int(i) for i in np.linspace(0, n - 1, min(PREVIEW_CHIPS, n))})
        chips = predict_chips(s.final, s.data.val_set, idx, s.accel)
        plot_preview(self.out / "val_preview.png", *chips, s.classes)
        if current is not None:
            s.final.load_state_dict(current)
