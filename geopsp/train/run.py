"""``geopsp train``: fit a PSPNet on chip folders, on CPU, one GPU or many (torchrun).

:func:`train` returns a :class:`TrainResult`; per-epoch rows go to an ``on_epoch`` callback so
the CLI can print them. Outputs in the output folder: ``model.safetensors`` (best epoch by
``monitor``), ``last.ckpt`` (resumable), ``metrics.csv``, ``curves.png``, ``val_preview.png``
and ``config.yaml``; see docs/train.md.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from geopsp.core.errors import Interrupted, ResourceError, UsageError
from geopsp.core.interrupts import raise_if_interrupted
from geopsp.core.runtime import Runtime, barrier, setup, teardown
from geopsp.train.budget import BudgetedLoader, TimeBudget, start_plan
from geopsp.train.config import (
    TrainConfig,
    device_defaults,
    epoch_label,
    resolve,
    saved_options,
)
from geopsp.train.outputs import check_output, clean
from geopsp.train.result import TrainResult, amp_name, collect_result
from geopsp.train.saving import EpochWriter
from geopsp.train.setup import Session, build_session, seed_everything

log = logging.getLogger(__name__)

OUTPUT_FILES = (
    "model.safetensors",
    "last.ckpt",
    "metrics.csv",
    "curves.png",
    "val_preview.png",
    "config.yaml",
)
# torch.OutOfMemoryError is the public name since torch 2.5; older versions have the CUDA one.
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _better(score: float, best: float | None, monitor: str) -> bool:
    if monitor == "last":  # every epoch replaces the model: the run keeps its final weights
        return True
    if not np.isfinite(score):
        return False
    if best is None:
        return True
    return score > best + 1e-9 if monitor == "miou" else score < best - 1e-12


def train(
    config: TrainConfig,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    on_start: Callable[[dict], None] | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train a PSPNet on one or more chip folders.

    Parameters
    ----------
    config : TrainConfig
        The options; ``None`` fields take their defaults (or, with ``resume``, the checkpoint's).
    progress : bool
        Show a progress bar per epoch on stderr (rank 0 only).
    on_epoch : callable, optional
        Called on rank 0 with each finished epoch's row (the ``metrics.csv`` row plus
        ``"best"``), e.g. to print a summary line. Raising from it stops training after the
        epoch's files are written (``last.ckpt`` can then be resumed).
    on_start : callable, optional
        Called on rank 0 before the first epoch with the resolved run: ``device``, ``amp``,
        ``world_size``, ``batch_size``, ``lr``, ``lr_auto``, ``epochs``, ``train_chips``,
        ``val_chips``, ``start_epoch``, ``time_limit`` (seconds or None).
    started : float, optional
        :func:`time.monotonic` time the run's clock (and ``time_limit``) counts from, e.g. when
        the command started; default: now.

    Returns
    -------
    TrainResult

    Raises
    ------
    UsageError, InputError, OutputError, ResourceError, ModelFileError
        One-line, actionable messages (CUDA out of memory suggests a smaller --batch-size).
    """
    from geopsp.train.checkpoints import load_checkpoint

    started = time.monotonic() if started is None else started  # --time-limit counts from here
    ckpt = load_checkpoint(config.resume) if config.resume else None
    cfg = resolve(config, ckpt["options"] if ckpt else None)
    out, in_place = check_output(cfg)
    rt = setup(cfg.device)
    device_defaults(cfg, rt.device.type, ckpt["architecture"] if ckpt else None)
    created = rt.is_main and not out.exists()
    finished = 0
    try:
        with _kernel_settings(rt.device.type), _one_line_errors(cfg, out, rt):
            s = build_session(cfg, ckpt, rt)
            if rt.is_main:
                _prepare_output(out, cfg.overwrite and not in_place)
            barrier(rt)
            clock = TimeBudget(cfg.time_limit, s.state.elapsed, start=started, prior=s.state.costs)
            result = _fit(cfg, s, rt, out, clock, (on_epoch, on_start), progress)
            finished = result.epochs_run
        return result
    finally:
        teardown(rt)
        if created and finished == 0 and not (out / "last.ckpt").exists():
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: leave no trace


@contextmanager
def _kernel_settings(device_type: str) -> Iterator[None]:
    """The device's kernel choices for the run, restored on the way out (``train`` is also a
    library call)."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if device_type == "cpu":
        # Same seed -> same run (resume equivalence); CPU kernels have deterministic variants.
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


@contextmanager
def _one_line_errors(cfg, out: Path, rt: Runtime) -> Iterator[None]:
    """Ctrl-C and CUDA out-of-memory as errors that say what to do next."""
    try:
        yield
    except KeyboardInterrupt as exc:
        ckpt = out / "last.ckpt"
        if rt.is_main and ckpt.exists():  # the last finished epoch can be continued
            raise Interrupted([str(ckpt)], f"continue with --resume {ckpt}") from exc
        raise
    except _OOM as exc:
        bs = cfg.batch_size
        raise ResourceError(
            f"CUDA out of memory with --batch-size {bs}; use a smaller --batch-size "
            f"(e.g. {max(1, bs // 2)}) or smaller chips"
        ) from exc


def _prepare_output(out: Path, replace: bool) -> None:
    """Create the output folder; with ``replace`` (``--overwrite`` of another run's folder)
    delete that run's outputs first, so none of them is mistaken for this run's."""
    out.mkdir(exist_ok=True)
    if replace:
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)


def _fit(cfg, s: Session, rt: Runtime, out: Path, clock: TimeBudget, calls, progress):
    """Train from the session's state to ``cfg.epochs``, early stopping or the end of the
    time limit's planned steps, writing the outputs on rank 0 (:class:`EpochWriter`)."""
    from geopsp.train.outputs import write_config

    on_epoch, on_start = calls
    st = s.state
    if rt.is_main:
        write_config(out / "config.yaml", clean(saved_options(cfg, s.lr)))
    epochs = int(cfg.epochs)
    if st.epoch >= epochs:
        raise UsageError(
            f"the checkpoint has already finished {st.epoch} epoch(s); raise --epochs to train more"
        )
    plan = start_plan(cfg.time_limit, s, rt, clock, epochs)
    if rt.is_main and on_start is not None:
        on_start(_start_info(s, rt, epochs, cfg.time_limit))
    writer = EpochWriter(cfg, s, out, clock) if rt.is_main else None
    stopped = False
    for epoch in range(st.epoch + 1, epochs + 1):
        done = int(s.scheduler.last_epoch)
        loader = None if plan is None else BudgetedLoader(s.data.train_loader, plan, done, epoch)
        row, weights = _run_epoch(cfg, s, rt, epoch, epochs, progress, clock, loader)
        done = int(s.scheduler.last_epoch)
        # Decided before writing, so the last epoch's outputs are always written.
        spent = plan is not None and plan.refit(done, epoch + 1, 0) <= done
        patience_out = bool(cfg.patience) and st.bad_epochs >= cfg.patience
        stopped = patience_out and not spent and epoch < epochs
        final = epoch == epochs or spent or stopped
        if writer is not None:
            writer.after_epoch(weights, final)
            if on_epoch is not None:
                on_epoch(dict(row))
        barrier(rt)
        raise_if_interrupted()
        if final:
            break
    if stopped:
        log.info("no improvement of %s for %d epochs: stopping early", cfg.monitor, cfg.patience)
    if writer is not None:
        writer.preview()
    return collect_result(cfg, s, rt, out, stopped, clock)


def _start_info(s: Session, rt: Runtime, epochs: int, time_limit: float | None) -> dict:
    """What ``on_start`` gets: the resolved run."""
    return {
        "device": str(rt.device),
        "amp": amp_name(s),
        "world_size": rt.world,
        "batch_size": s.batch_size,
        "lr": float(s.lr),
        "lr_auto": s.lr_auto,
        "epochs": epochs,
        "start_epoch": s.state.epoch + 1,
        "train_chips": len(s.data.train_set),
        "val_chips": len(s.data.val_set),
        "time_limit": time_limit,
    }


def _run_epoch(cfg, s: Session, rt, epoch: int, epochs: int, progress, clock, loader=None):
    """Train (on ``loader``, by default the whole training loader) and validate one epoch and
    record it in the state.

    Returns the epoch's ``metrics.csv`` row and, on rank 0 when it is the best so far, a CPU
    copy of its weights (else None).
    """
    from geopsp.models import AUX_WEIGHT
    from geopsp.train.loop import run_epoch, validate
    from geopsp.train.outputs import per_class_rows

    seed_everything(cfg.seed, epoch, rt.rank)
    s.data.train_sampler.set_epoch(epoch)
    batches = s.data.train_loader if loader is None else loader
    tr = run_epoch(
        s.model, batches, s.optimizer, s.scheduler, s.scaler, s.criterion, s.weight,
        s.accel, AUX_WEIGHT, rt, epoch_label(epoch, epochs), progress, s.average,
    )  # fmt: skip
    t0 = time.monotonic()
    va = validate(s.final, s.data.val_loader, s.criterion, len(s.classes), s.accel, rt)
    val_seconds = time.monotonic() - t0
    clock.add_val(val_seconds)
    score = va["val_loss"] if cfg.monitor == "loss" else va["miou"]
    is_best = _better(score, s.state.best_score, cfg.monitor)
    summary = {k: va[k] for k in ("val_loss", "pixel_accuracy", "miou", "kappa")}
    row = {
        "epoch": epoch,
        "train_loss": tr["train_loss"],
        **summary,
        "lr": s.optimizer.param_groups[0]["lr"],
        "seconds": round(tr["seconds"], 3),
        "chips_per_s": round(tr["chips"] / max(tr["seconds"], 1e-9), 3),
        "val_seconds": round(val_seconds, 3),
        "steps": int(s.scheduler.last_epoch),
        "elapsed": round(clock.elapsed(), 3),
        "best": is_best,
        **{f"iou_{c.name}": va["iou"][i] for i, c in enumerate(s.classes)},
    }
    row = clean(row)
    best = {"epoch": epoch, **summary, "per_class": per_class_rows(va, s.classes)}
    s.state.record(epoch, row, score, best if is_best else None)
    # Only rank 0 writes the model file; with --monitor last the final weights are its own.
    if not is_best or cfg.monitor == "last" or not rt.is_main:
        return row, None
    return row, {k: v.detach().to("cpu", copy=True) for k, v in s.final.state_dict().items()}


__all__ = ["TrainConfig", "TrainResult", "train"]
