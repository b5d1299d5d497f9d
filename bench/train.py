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


def parse_args() -> argparse.Namespace:
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
    return ap.parse_args()


class StepBench:
    """One model, optimizer and chip folder, timed three ways: in memory, loading, both."""

    def __init__(self, args: argparse.Namespace, chips: Path) -> None:
        self.args = args
        self.cs = open_chip_folder(chips)
        arch = dict(
            backbone=args.backbone, in_channels=self.cs.band_count, num_classes=len(self.cs.classes)
        )
        self.model = build_model(arch)
        self.model.train()
        self.accel = Accel.for_device(torch.device("cpu"), None)
        self.opt = make_optimizer("adamw", self.model, 1e-4)
        self.scaler = self.accel.scaler()
        self.crit = make_criterion("ce")

    def loader(self, cache: bool) -> torch.utils.data.DataLoader:
        cs, a = self.cs, self.args
        ds = ChipDataset(
            cs.split("train"), value_lut(cs.classes), cs.mean, cs.std, cs.chip_size, "d4", 0.1, 0,
            cache_bytes=(1 << 30) if cache else 0,
        )  # fmt: skip
        return torch.utils.data.DataLoader(
            ds, batch_size=a.batch_size, sampler=EpochSampler(len(ds), True, 0), drop_last=True,
            num_workers=a.workers, persistent_workers=a.workers > 0,
        )  # fmt: skip

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = self.accel.to_device(x, y)
        train_step(self.model, self.opt, self.scaler, x, y, self.crit, None, self.accel, AUX_WEIGHT)

    def pipeline(self, loader, epoch: int) -> float:
        """Chips/s of loading and training together."""
        loader.sampler.set_epoch(epoch)
        it = iter(loader)
        n, t0 = 0, time.perf_counter()
        for _ in range(self.args.steps):
            x, y = next(it)
            self.step(x, y)
            n += len(x)
        return n / (time.perf_counter() - t0)

    def in_memory(self, x0: torch.Tensor, y0: torch.Tensor) -> float:
        """Chips/s of training on one batch already in memory."""
        t0 = time.perf_counter()
        for _ in range(self.args.steps):
            self.step(x0, y0)
        return self.args.steps * len(x0) / (time.perf_counter() - t0)

    def loader_only(self, loader, epoch: int) -> float:
        """Chips/s of loading alone."""
        loader.sampler.set_epoch(epoch)
        it = iter(loader)
        t0 = time.perf_counter()
        n = sum(len(next(it)[0]) for _ in range(self.args.steps))
        return n / (time.perf_counter() - t0)

    def rounds(self) -> dict[str, list[float]]:
        """Alternating rounds of every measurement (the machine is shared and noisy)."""
        a = self.args
        cold, warm = self.loader(False), self.loader(True)
        if a.steps > len(cold):
            raise SystemExit(f"--steps {a.steps}: only {len(cold)} batches of {a.batch_size} chips")
        x0, y0 = next(iter(cold))
        self.in_memory(x0, y0)  # warm-up (allocator, first-call overheads)
        self.pipeline(warm, 0)  # fills the cache for the chips of epoch 0
        res: dict[str, list[float]] = {
            "memory": [], "cold": [], "cached": [], "load_cold": [], "load_cached": []
        }  # fmt: skip
        for r in range(a.rounds):
            res["load_cold"].append(self.loader_only(cold, 100 + r))
            res["load_cached"].append(self.loader_only(warm, 0))
            res["memory"].append(self.in_memory(x0, y0))
            res["cold"].append(self.pipeline(cold, r + 1))
            res["memory"].append(self.in_memory(x0, y0))
            res["cached"].append(self.pipeline(warm, 0))
        return res


def report(args: argparse.Namespace, res: dict[str, list[float]]) -> dict:
    """Medians of the rounds and the efficiencies they give."""
    med = {k: statistics.median(v) for k, v in res.items()}
    return {
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


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        chips = Path(tmp) / "chips"
        export_chips(
            [str(EVEREST / "LE71400412000304SGS00_RGB.tif")],
            str(EVEREST / "15_rgi60_glacier_outlines.gpkg"),
            str(chips),
            ExportOptions(chip_size=args.chip_size, stride=args.chip_size, val_fraction=0.0),
        )
        res = StepBench(args, chips).rounds()
    out = report(args, res)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
