"""The chips of a training run as datasets and data loaders: the train/validation split, the
batch size one process can use, and grid or window sampling of the training area."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from geopsp.chips.folder import ChipSet
from geopsp.core.classes import value_lut
from geopsp.core.errors import InputError
from geopsp.core.runtime import Runtime
from geopsp.train.config import TrainConfig
from geopsp.train.data import ChipDataset, EpochSampler, shard

log = logging.getLogger(__name__)

WINDOW_MOSAIC_BYTES = 2 << 30  # --sampling windows keeps the training area in memory up to this


@dataclass
class Loaders:
    """The chips of one run as datasets and loaders (this rank's share)."""

    train_set: ChipDataset
    val_set: ChipDataset
    train_sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader


def split_chips(chips: ChipSet) -> tuple[list, list]:
    """The training and validation chips; an error naming the fix when either is empty."""
    train_chips, val_chips = chips.split("train"), chips.split("val")
    if not train_chips:
        raise InputError("the chip folders have no training chips; export more chips")
    if not val_chips:
        raise InputError(
            "the chip folders have no validation chips; export with --val-fraction > 0"
        )
    return train_chips, val_chips


def batch_size(asked: int, n_train: int, rt: Runtime) -> int:
    """``--batch-size``, at most the training chips of one process (at least 2 of them)."""
    per_rank = n_train // rt.world
    if per_rank < 2:
        raise InputError(
            f"{n_train} training chip(s) is too few (at least 2 per process); export more chips"
        )
    if asked > per_rank:
        log.warning(
            "--batch-size %d is larger than the %d training chips per process; using %d",
            asked, per_rank, per_rank,
        )  # fmt: skip
    return min(asked, per_rank)


def make_loaders(
    cfg: TrainConfig, chips: ChipSet, classes, mean, std, bs: int, rt: Runtime
) -> Loaders:
    """This rank's training loader (shuffled, whole batches) and validation loader (its shard)."""
    common = dict(
        lut=value_lut(classes), mean=mean, std=std, chip_size=chips.chip_size, seed=cfg.seed
    )
    train_set = _train_set(cfg, chips, common)
    val_set = ChipDataset(chips.split("val"), **common)
    sampler = EpochSampler(len(train_set), True, cfg.seed, rt.rank, rt.world)
    cuda = rt.device.type == "cuda"
    kw = dict(num_workers=cfg.workers, pin_memory=cuda, persistent_workers=cfg.workers > 0)
    train_loader = DataLoader(train_set, batch_size=bs, sampler=sampler, drop_last=True, **kw)
    val_part = torch.utils.data.Subset(val_set, shard(len(val_set), rt.rank, rt.world))
    val_loader = DataLoader(val_part, batch_size=bs, shuffle=False, **kw)
    return Loaders(train_set, val_set, sampler, train_loader, val_loader)


def _train_set(cfg: TrainConfig, chips: ChipSet, common: dict) -> ChipDataset:
    """Training chips: random windows of their area (``--sampling windows``) where the folder
    records where its chips lie and the area fits in memory, else the fixed grid."""
    from geopsp.train.windows import WindowDataset, mosaic_bytes

    train = chips.split("train")
    kw = dict(
        augment=cfg.augment,
        color_jitter=float(cfg.color_jitter),
        scale_jitter=float(cfg.scale_jitter),
        **common,
    )
    if cfg.sampling != "windows":
        return ChipDataset(train, **kw)
    area = [c for c in chips.chips if c.origin is not None]
    if len(area) < len(chips.chips):
        log.info("--sampling windows: the chips do not record their position; using the grid")
        return ChipDataset(train, **kw)
    size = mosaic_bytes(area, chips.band_count, 4, chips.chip_size)
    if size > WINDOW_MOSAIC_BYTES:
        log.warning(
            "--sampling windows: the training area needs %.1f GiB in memory; using the grid",
            size / 2**30,
        )
        return ChipDataset(train, **kw)
    return WindowDataset(train, area, **kw)
