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
from torch.utils.data import DataLoader

from geopsp.chips.folder import ChipSet, open_chip_folders
from geopsp.core.classes import ClassInfo, from_dicts, value_lut
from geopsp.core.errors import InputError, ModelFileError, UsageError
from geopsp.core.runtime import Runtime, broadcast_float
from geopsp.train.config import ARCH_KEYS, TrainConfig
from geopsp.train.data import ChipDataset, EpochSampler, band_stats, class_pixels, shard
from geopsp.train.loop import Accel, train_step
from geopsp.train.losses import auto_class_weights, make_criterion
from geopsp.train.optim import lr_range_test, make_optimizer, make_scheduler

log = logging.getLogger(__name__)

LR_TEST_BATCHES = 10


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
    train_set: ChipDataset
    val_set: ChipDataset
    train_sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    criterion: Any
    weight: torch.Tensor | None
    accel: Accel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    lr: float
    lr_auto: bool
    batch_size: int
    state: dict = field(default_factory=dict)


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
    from geopsp.models import build_model

    chips = open_chip_folders(cfg.chips_dirs, seed=cfg.seed, arcgis_nodata=cfg.arcgis_nodata)
    classes = _classes(chips, cfg.ignore_classes)
    train_chips, val_chips = chips.split("train"), chips.split("val")
    if not train_chips:
        raise InputError("the chip folders have no training chips; export more chips")
    if not val_chips:
        raise InputError(
            "the chip folders have no validation chips; export with --val-fraction > 0"
        )
    if ckpt is not None:
        mean, std = ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
    elif chips.mean is not None and len(chips.mean) == chips.band_count:
        mean, std = chips.mean, chips.std
    else:  # ArcGIS folders have no stats.json: measure the training chips
        mean, std = band_stats(train_chips, chips.band_count)
    arch = {k: getattr(cfg, k) for k in ARCH_KEYS}
    arch.update(in_channels=chips.band_count, num_classes=len(classes))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    weights = None if (ckpt is not None or cfg.init) else cfg.encoder_weights
    model = build_model(arch, encoder_weights=weights)
    arch = model.arch
    h, w = chips.chip_size
    m = int(model.size_multiple)
    if h % m or w % m:
        raise UsageError(
            f"the chips are {w}x{h} pixels but this model needs sizes that are multiples of {m} "
            f"(--output-stride {arch['output_stride']}); re-export with --chip-size {max(m, (w // m) * m)}"
        )
    if ckpt is not None:
        _check_resume(ckpt, arch, classes, chips)
        model.load_state_dict(ckpt["model"])
    elif cfg.init:
        _load_init(model, cfg.init)
    per_rank = len(train_chips) // rt.world
    if per_rank < 2:
        raise InputError(
            f"{len(train_chips)} training chip(s) is too few (at least 2 per process); export more chips"
        )
    bs = int(cfg.batch_size)
    if bs > per_rank:
        log.warning(
            "--batch-size %d is larger than the %d training chips per process; using %d",
            bs,
            per_rank,
            per_rank,
        )
        bs = per_rank
    accel = Accel.for_device(rt.device, cfg.amp)
    if cfg.amp and rt.device.type != "cuda":
        log.warning("--amp needs a CUDA device; training in float32 on %s", rt.device)
    lut = value_lut(classes)
    common = dict(lut=lut, mean=mean, std=std, chip_size=chips.chip_size, seed=cfg.seed)
    train_set = ChipDataset(
        train_chips, augment=cfg.augment, color_jitter=float(cfg.color_jitter), **common
    )
    val_set = ChipDataset(val_chips, **common)
    sampler = EpochSampler(len(train_set), True, cfg.seed, rt.rank, rt.world)
    cuda = rt.device.type == "cuda"
    loader_kw = dict(num_workers=cfg.workers, pin_memory=cuda, persistent_workers=cfg.workers > 0)
    train_loader = DataLoader(
        train_set, batch_size=bs, sampler=sampler, drop_last=True, **loader_kw
    )
    val_part = torch.utils.data.Subset(val_set, shard(len(val_set), rt.rank, rt.world))
    val_loader = DataLoader(val_part, batch_size=bs, shuffle=False, **loader_kw)

    model.to(rt.device)
    if accel.channels_last:
        model.to(memory_format=torch.channels_last)
    weight = None
    if cfg.class_weights == "auto":
        wts = auto_class_weights(class_pixels(train_chips, classes))
        log.info(
            "class weights: %s",
            ", ".join(f"{c.name}={x:.3g}" for c, x in zip(classes, wts, strict=True)),
        )
        weight = torch.tensor(wts, device=rt.device)
    criterion = make_criterion(cfg.loss, weight)
    from geopsp.models import AUX_WEIGHT

    if ckpt is not None or cfg.lr != "auto":
        lr, lr_auto = float(cfg.lr), False
    else:
        probe = torch.amp.GradScaler("cuda", enabled=accel.amp and accel.amp_dtype == torch.float16)
        sampler.set_epoch(0)
        batches = [
            accel.to_device(x, y) for x, y in itertools.islice(train_loader, LR_TEST_BATCHES)
        ]

        def step(mdl, opt, x, y):
            return float(train_step(mdl, opt, probe, x, y, criterion, weight, accel, AUX_WEIGHT))

        steps = int(cfg.extra.get("lr_test_steps", 40))
        lr = broadcast_float(lr_range_test(model, cfg.optimizer, batches, step, steps)["lr"], rt)
        lr_auto = True
        log.info("--lr auto: the range test chose %.3g", lr)
    plain = model
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if cuda:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            plain = model
        model = DDP(model, device_ids=[rt.device.index] if cuda else None)
    optimizer = make_optimizer(cfg.optimizer, plain, lr)
    total = {"steps": len(train_loader) * int(cfg.epochs)}
    scheduler = make_scheduler(optimizer, cfg.schedule, lambda: total["steps"])
    scaler = accel.scaler()
    state = {
        "epoch": 0,
        "best_score": None,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "best_metrics": {},
    }
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler.is_enabled() and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        for k in ("epoch", "best_score", "best_epoch", "bad_epochs", "history", "best_metrics"):
            state[k] = ckpt.get(k, state[k])
        state["history"] = list(state["history"])
        from geopsp.train.checkpoints import set_rng_state

        set_rng_state(ckpt["rng"])
    return Session(
        chips, classes, list(mean), list(std), arch, model, plain, train_set, val_set, sampler,
        train_loader, val_loader, criterion, weight, accel, optimizer, scheduler, scaler, lr,
        lr_auto, bs, state,
    )  # fmt: skip
