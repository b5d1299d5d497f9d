"""Everything a training run needs before its first epoch, checked with clear errors.

Chips, classes and normalization; the model (fresh, ``--init`` weights or a checkpoint); data
loaders; loss; learning rate (``--lr auto`` runs the range test); optimizer, schedule, scaler.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geopsp.chips.folder import ChipSet, open_chip_folders
from geopsp.core.classes import ClassInfo, from_dicts
from geopsp.core.errors import InputError, ModelFileError, UsageError
from geopsp.core.precision import cpu_has_bf16
from geopsp.core.runtime import Runtime, broadcast_float
from geopsp.train.averaging import WeightAverage, start_average
from geopsp.train.checkpoints import TrainState, restore_state
from geopsp.train.config import ARCH_KEYS, TrainConfig
from geopsp.train.data import band_stats, class_pixels
from geopsp.train.loaders import Loaders, batch_size, make_loaders, split_chips
from geopsp.train.loop import Accel, train_step
from geopsp.train.losses import auto_class_weights, make_criterion
from geopsp.train.optim import lr_range_test, make_optimizer, make_scheduler, steps_in_budget

log = logging.getLogger(__name__)

LR_TEST_BATCHES = 10
BUDGET_FALLBACK_LR = 1e-3  # when a time limit leaves no room for the range test


@dataclass
class Session:
    """The objects one training run works with."""

    chips: ChipSet
    classes: list[ClassInfo]
    mean: list[float]
    std: list[float]
    arch: dict
    model: Any  # the model being trained (DDP-wrapped when distributed)
    plain: Any  # the bare model (for validation, saving and previews)
    data: Loaders
    criterion: Any
    weight: torch.Tensor | None
    accel: Accel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    lr: float
    lr_auto: bool
    batch_size: int
    state: TrainState = field(default_factory=TrainState)
    average: WeightAverage | None = None  # --ema

    @property
    def final(self) -> Any:
        """The model that is validated and saved: the weight average, else the bare model."""
        return self.plain if self.average is None else self.average.module


def seed_everything(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed torch, numpy and random from ``(seed, epoch, rank)``: an epoch's dropout and
    PointRend point sampling do not depend on what ran before it (resume equivalence)."""
    a, b = np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(2)
    torch.manual_seed(int(a))
    np.random.seed(int(b))  # noqa: NPY002 (third-party code may use the global generator)
    random.seed(int(a))


def _classes(chips: ChipSet, ignore: list[int]) -> list[ClassInfo]:
    values = {c.value for c in chips.classes}
    unknown = [v for v in ignore if v not in values]
    if unknown:
        raise UsageError(
            f"--ignore-classes {','.join(map(str, unknown))}: no such class value "
            f"(the chips have {', '.join(str(v) for v in sorted(values))})"
        )
    classes = [c for c in chips.classes if c.value not in ignore]
    if len(classes) < 2:
        raise InputError(
            f"training needs at least 2 classes; the chips have {len(classes)} left to learn"
        )
    return classes


def _load_init(model, path: str) -> None:
    """Copy the weights of a model file whose tensors fit (same name and shape)."""
    from geopsp.models.modelfile import read_weights

    # The same checks (and one-line ModelFileError) as classify: truncated, corrupt, foreign
    # and newer-format files are refused before any weight is copied.
    src, _ = read_weights(path)
    own = model.state_dict()
    fit = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not fit:
        raise ModelFileError(
            f"--init {path}: none of its weights fit this architecture; check --backbone"
        )
    model.load_state_dict(fit, strict=False)
    log.info("--init: %d of %d tensors loaded from %s", len(fit), len(own), path)


def _check_resume(ckpt: dict, arch: dict, classes: list[ClassInfo], chips: ChipSet) -> None:
    old = ckpt["architecture"]
    for key in ARCH_KEYS + ("pointrend_params",):
        if old.get(key) != arch.get(key):
            raise UsageError(
                f"--resume: the checkpoint has a different architecture ({key} {old.get(key)} "
                f"vs {arch.get(key)}); resume with the same model options or start a new run"
            )
    if [c.value for c in from_dicts(ckpt["classes"])] != [c.value for c in classes]:
        raise InputError(
            "--resume: the chips' classes differ from the checkpoint's; resume with the same chips"
        )
    if old["in_channels"] != chips.band_count:
        raise InputError(
            f"--resume: the chips have {chips.band_count} band(s) but the checkpoint was trained on {old['in_channels']}"
        )


def build_session(cfg: TrainConfig, ckpt: dict | None, rt: Runtime) -> Session:
    """Open the chips, build the model and everything around it; raise clear errors early."""
    chips = open_chip_folders(cfg.chips_dirs, seed=cfg.seed, arcgis_nodata=cfg.arcgis_nodata)
    classes = _classes(chips, cfg.ignore_classes)
    train_chips, val_chips = split_chips(chips)
    mean, std = _normalization(ckpt, chips, train_chips)
    model = _model(cfg, ckpt, chips, classes)
    arch = model.arch
    bs = batch_size(int(cfg.batch_size), len(train_chips), rt)
    accel = Accel.for_device(rt.device, cfg.amp)
    if cfg.amp and rt.device.type == "cpu" and not cpu_has_bf16():
        log.warning("--amp: this CPU has no bfloat16 instructions; float32 may be faster")
    data = make_loaders(cfg, chips, classes, mean, std, bs, rt)
    model.to(rt.device)
    if accel.channels_last:
        model.to(memory_format=torch.channels_last)
    weight = _class_weight(cfg, train_chips, classes, rt)
    criterion = make_criterion(cfg.loss, weight)
    if ckpt is not None or cfg.lr != "auto":
        lr, lr_auto = float(cfg.lr), False
    else:
        lr, lr_auto = _range_test(cfg, model, data, criterion, weight, accel, rt)
    model, plain = _distribute(model, rt)
    optimizer = make_optimizer(cfg.optimizer, plain, lr)
    state = TrainState.from_checkpoint(ckpt) if ckpt is not None else TrainState()
    # --epochs' steps; with --time-limit the run re-fits this total to the budget.
    state.total_steps = len(data.train_loader) * int(cfg.epochs)
    scheduler = make_scheduler(optimizer, cfg.schedule, lambda: state.total_steps)
    scaler = accel.scaler()
    if ckpt is not None:
        restore_state(ckpt, optimizer, scheduler, scaler)
    return Session(
        chips=chips, classes=classes, mean=list(mean), std=list(std), arch=arch,
        model=model, plain=plain, data=data, criterion=criterion, weight=weight, accel=accel,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, lr=lr, lr_auto=lr_auto,
        batch_size=bs, state=state, average=start_average(float(cfg.ema), plain, ckpt),
    )  # fmt: skip


def _normalization(ckpt: dict | None, chips: ChipSet, train_chips: list) -> tuple[list, list]:
    """Band mean/std: the checkpoint's, the chip folders', or measured on the training chips."""
    if ckpt is not None:
        return ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
    if chips.mean is not None and len(chips.mean) == chips.band_count:
        return chips.mean, chips.std  # type: ignore[return-value]
    return band_stats(train_chips, chips.band_count)  # no stats.json (ArcGIS folders)


def _model(cfg: TrainConfig, ckpt: dict | None, chips: ChipSet, classes: list[ClassInfo]):
    """The model with its starting weights: fresh (encoder weights), ``--init`` or resumed."""
    from geopsp.models import build_model

    arch = {k: getattr(cfg, k) for k in ARCH_KEYS}
    arch.update(in_channels=chips.band_count, num_classes=len(classes))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    weights = None if (ckpt is not None or cfg.init) else cfg.encoder_weights
    model = build_model(arch, encoder_weights=weights)
    h, w = chips.chip_size
    m = int(model.size_multiple)
    if h % m or w % m:
        raise UsageError(
            f"the chips are {w}x{h} pixels but this model needs sizes that are multiples of {m} "
            f"(--output-stride {model.arch['output_stride']}); re-export with --chip-size "
            f"{max(m, (w // m) * m)}"
        )
    if ckpt is not None:
        _check_resume(ckpt, model.arch, classes, chips)
        model.load_state_dict(ckpt["model"])
    elif cfg.init:
        _load_init(model, cfg.init)
    return model


def _class_weight(cfg: TrainConfig, train_chips, classes, rt: Runtime) -> torch.Tensor | None:
    if cfg.class_weights == "none":
        return None
    power = 0.5 if cfg.class_weights == "sqrt" else 1.0
    wts = auto_class_weights(class_pixels(train_chips, classes), power)
    log.info(
        "class weights: %s",
        ", ".join(f"{c.name}={x:.3g}" for c, x in zip(classes, wts, strict=True)),
    )
    return torch.tensor(wts, device=rt.device)


def _range_test(cfg: TrainConfig, model, data: Loaders, criterion, weight, accel, rt):
    """``--lr auto``: ``(the learning rate the range test picks, True)``, the same on every
    rank; ``(BUDGET_FALLBACK_LR, False)`` when the time limit has no room for the test."""
    from geopsp.models import AUX_WEIGHT

    probe = torch.amp.GradScaler("cuda", enabled=accel.amp and accel.amp_dtype == torch.float16)
    data.train_sampler.set_epoch(0)
    batches = [
        accel.to_device(x, y) for x, y in itertools.islice(data.train_loader, LR_TEST_BATCHES)
    ]

    def step(mdl, opt, x, y):
        return float(train_step(mdl, opt, probe, x, y, criterion, weight, accel, AUX_WEIGHT))

    steps = int(cfg.extra.get("lr_test_steps", 40))
    if cfg.time_limit is not None:
        fit = steps_in_budget(float(cfg.time_limit), model, batches, step, steps)
        steps = int(broadcast_float(fit, rt))
        if steps == 0:
            log.warning(
                "--time-limit %s is too short for the --lr auto range test with this model; "
                "using --lr %g", cfg.time_limit, BUDGET_FALLBACK_LR,
            )  # fmt: skip
            return BUDGET_FALLBACK_LR, False
    lr = broadcast_float(lr_range_test(model, cfg.optimizer, batches, step, steps)["lr"], rt)
    log.info("--lr auto: the range test chose %.3g", lr)
    return lr, True


def _distribute(model, rt: Runtime) -> tuple[Any, Any]:
    """``(model to train, bare model)``: DDP-wrapped (SyncBatchNorm on CUDA) under torchrun."""
    if not rt.distributed:
        return model, model
    from torch.nn.parallel import DistributedDataParallel as DDP

    cuda = rt.device.type == "cuda"
    if cuda:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DDP(model, device_ids=[rt.device.index] if cuda else None), model
