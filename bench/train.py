"""Training benchmark: does the data pipeline keep the model busy?

Efficiency = training throughput (chips/s) of the full pipeline (GeoTIFF chips -> read ->
normalize -> D4 augmentation -> DataLoader -> forward + backward + optimizer step) / the same
model's training throughput on a batch already in memory. 1.0 means data loading costs
nothing; the target is >= 0.9. Both are measured in alternating rounds in one run (the
machine is shared and noisy) and the medians are reported.

Two pipeline cases: the first pass over the chips (files are decoded from disk) and later
epochs (decoded chips come from the in-memory cache, only augmentation remains).

Usage::

    python bench/train.py                          # Everest sample, 64 px chips, resnet18
    python bench/train.py --chip-size 128 --batch-size 8 --rounds 3 --workers 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from geopsp.chips.export import ExportOptions, export_chips
from geopsp.chips.folder import open_chip_folder
from geopsp.core.classes import value_lut
from geopsp.models import AUX_WEIGHT, build_model
from geopsp.train.data import ChipDataset, EpochSampler
from geopsp.train.loop import Accel, train_step
from geopsp.train.losses import make_criterion
from geopsp.train.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
EVEREST = ROOT / "sample_data" / "everest_landsat7_glaciers"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--chip-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        chips = Path(tmp) / "chips"
        export_chips(
            [str(EVEREST / "LE71400412000304SGS00_RGB.tif")],
            str(EVEREST / "15_rgi60_glacier_outlines.gpkg"),
            str(chips),
            ExportOptions(chip_size=args.chip_size, stride=args.chip_size, val_fraction=0.0),
        )
        cs = open_chip_folder(chips)
        train = cs.split("train")
        arch = dict(backbone=args.backbone, in_channels=cs.band_count, num_classes=len(cs.classes))
        model = build_model(arch)
        model.train()
        accel = Accel.for_device(torch.device("cpu"), None)
        opt = make_optimizer("adamw", model, 1e-4)
        scaler = accel.scaler()
        crit = make_criterion("ce")

        def make_loader(cache: bool):
            ds = ChipDataset(
                train, value_lut(cs.classes), cs.mean, cs.std, cs.chip_size, "d4", 0.1, 0,
                cache_bytes=(1 << 30) if cache else 0,
            )  # fmt: skip
            sampler = EpochSampler(len(ds), True, 0)
            return ds, torch.utils.data.DataLoader(
                ds, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                num_workers=args.workers, persistent_workers=args.workers > 0,
            )  # fmt: skip

        def pipeline(loader, epoch: int) -> float:
            loader.sampler.set_epoch(epoch)
            it = iter(loader)
            n, t0 = 0, time.perf_counter()
            for _ in range(args.steps):
                x, y = next(it)
                x, y = accel.to_device(x, y)
                train_step(model, opt, scaler, x, y, crit, None, accel, AUX_WEIGHT)
                n += len(x)
            return n / (time.perf_counter() - t0)

        batches = len(make_loader(False)[1])
        if args.steps > batches:
            raise SystemExit(
                f"--steps {args.steps}: only {batches} batches of {args.batch_size} chips"
            )
        x0, y0 = next(iter(make_loader(False)[1]))

        def in_memory() -> float:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                x, y = accel.to_device(x0, y0)
                train_step(model, opt, scaler, x, y, crit, None, accel, AUX_WEIGHT)
            return args.steps * len(x0) / (time.perf_counter() - t0)

        def loader_only(loader, epoch: int) -> float:
            loader.sampler.set_epoch(epoch)
            it = iter(loader)
            t0 = time.perf_counter()
            n = sum(len(next(it)[0]) for _ in range(args.steps))
            return n / (time.perf_counter() - t0)

        in_memory()  # warm-up (allocator, first-call overheads)
        _, cold_loader = make_loader(False)
        _, warm_loader = make_loader(True)
        pipeline(warm_loader, 0)  # fills the cache for the chips of epoch 0
        res: dict[str, list[float]] = {
            "memory": [], "cold": [], "cached": [], "load_cold": [], "load_cached": []
        }  # fmt: skip
        for r in range(args.rounds):
            res["load_cold"].append(loader_only(cold_loader, 100 + r))
            res["load_cached"].append(loader_only(warm_loader, 0))
            res["memory"].append(in_memory())
            res["cold"].append(pipeline(cold_loader, r + 1))
            res["memory"].append(in_memory())
            res["cached"].append(pipeline(warm_loader, 0))
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {
        "chip_size": args.chip_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "backbone": args.backbone,
        "threads": torch.get_num_threads(),
        "in_memory_chips_per_s": round(med["memory"], 2),
        "pipeline_cold_chips_per_s": round(med["cold"], 2),
        "pipeline_cached_chips_per_s": round(med["cached"], 2),
        "efficiency_cold": round(med["cold"] / med["memory"], 3),
        "efficiency_cached": round(med["cached"] / med["memory"], 3),
        # Loading alone, and the efficiency it implies when loading and compute take turns
        # (workers=0): less sensitive to a noisy machine than the ratio of two timings.
        "loader_cold_chips_per_s": round(med["load_cold"], 1),
        "loader_cached_chips_per_s": round(med["load_cached"], 1),
        "implied_efficiency_cold": round(1 / (1 + med["memory"] / med["load_cold"]), 3),
        "implied_efficiency_cached": round(1 / (1 + med["memory"] / med["load_cached"]), 3),
        "rounds": {k: [round(x, 2) for x in v] for k, v in res.items()},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
