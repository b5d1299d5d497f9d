"""Held-out map quality at a fixed training budget: geopsp configurations against a plain baseline.

For each dataset the scene is split by a vertical line into a training area (west) and a
held-out area (east) that no chip touches. Chips are cut from the training area once; every
configuration then trains on those chips for the same wall-clock budget, maps the held-out
area with ``geopsp classify`` and is scored there with ``geopsp evaluate`` (mIoU, per-class
IoU, boundary F1). Validation chips only pick checkpoints; they are never the score.

The plain baseline is what a user of other tools gets: segmentation-models-pytorch's stock
``smp.PSPNet("resnet34")`` trained on the same chips for the same time with Adam (lr 1e-3),
random flips and cross-entropy, its last epoch kept, mapped with a half-overlapping sliding
window (softmax averaged) and scored by the same ``geopsp evaluate``.

Usage::

    python bench/quality.py --budget 3m --threads 1            # every dataset, geopsp's defaults
    python bench/quality.py --budget 3m --threads 1 --datasets glaciers --config "default=" \\
        --config "stride8=--output-stride 8" --json quality.json

Two invocations on different datasets can run side by side (``--threads 1`` each) on a
2-core machine; ``--no-baseline`` leaves the baseline out of a run.

Each ``--config NAME=ARGS`` adds a geopsp run with extra ``geopsp train`` arguments;
``{work}`` in ARGS stands for the work folder (e.g. ``--init {work}/glaciers/model_x/...``).
The reported training seconds are the run's own clock (``elapsed`` of its last epoch) for
geopsp and the training loop's for the baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geopsp.core.durations import parse_duration

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sample_data"


@dataclass(frozen=True)
class Dataset:
    """A scene, its labels and where the held-out area starts (a fraction of the width)."""

    image: Path
    labels: Path
    split: float
    chips: tuple[str, ...] = ("--chip-size", "128", "--stride", "64")  # export-chips arguments
    reference: tuple[str, ...] = ()  # extra evaluate arguments
    target: int = 1  # the class value reported on its own ("target class")


DATASETS = {
    "glaciers": Dataset(
        DATA / "everest_landsat7_glaciers" / "LE71400412000304SGS00_RGB.tif",
        DATA / "everest_landsat7_glaciers" / "15_rgi60_glacier_outlines.gpkg",
        split=0.625,
    ),
    "buildings": Dataset(
        DATA / "spacenet4_atlanta_buildings" / "sample_geotiff.tif",
        DATA / "spacenet4_atlanta_buildings" / "geotiff_labels.geojson",
        split=0.6,
    ),
    "landcover": Dataset(
        DATA / "nc_landsat7_landcover" / "lsat7_2000_6band.tif",
        DATA / "nc_landsat7_landcover" / "landclass_strata.tif",
        split=0.6,
        # 128 px chips would leave 7 training chips in 293 x 443 px: 64 px chips give 52.
        chips=("--chip-size", "64", "--stride", "32"),
        target=5,  # forest, the largest class
    ),
}

DEFAULT_CONFIGS = {"geopsp-default": ""}


@dataclass
class Result:
    dataset: str
    config: str
    miou: float
    target_iou: float
    boundary_f1: float
    per_class: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    epochs: int = 0


def geopsp(*args: str) -> str:
    """Run a geopsp command as a user would, returning its stdout."""
    cmd = [sys.executable, "-m", "geopsp", "-q", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def crop(src_path: Path, dst: Path, col0: int, col1: int) -> None:
    """Write columns [col0, col1) of a raster as a new GeoTIFF (same CRS, shifted transform)."""
    with rasterio.open(src_path) as src:
        win = Window(col0, 0, col1 - col0, src.height)
        profile = src.profile | {
            "driver": "GTiff",
            "width": col1 - col0,
            "transform": src.window_transform(win),
            "tiled": False,
        }
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(src.read(window=win))
            if src.nodata is None and any(f.value & 2 for f in src.mask_flag_enums[0]):
                out.write_mask(src.dataset_mask(window=win))


def split_scene(ds: Dataset, work: Path) -> tuple[Path, Path]:
    """The training and held-out areas of a scene, written as GeoTIFFs under ``work``."""
    with rasterio.open(ds.image) as src:
        cut = int(round(src.width * ds.split))
        width = src.width
    train, held = work / "train_area.tif", work / "heldout_area.tif"
    crop(ds.image, train, 0, cut)
    crop(ds.image, held, cut, width)
    return train, held


def score(map_path: Path, ds: Dataset, work: Path, name: str) -> dict:
    out = geopsp("evaluate", str(map_path), "--reference", str(ds.labels), *ds.reference, "--json")
    report = json.loads(out)
    (work / f"{name}_accuracy.json").write_text(out)
    return report


def run_geopsp(
    chips: Path, held: Path, work: Path, name: str, extra: str, budget: str, seed: int = 0
) -> tuple[Path, float, int]:
    """Train one configuration, map the held-out area; the map, training seconds, epochs."""
    model_dir = work / f"model_{name}"
    geopsp(
        "train",
        str(chips),
        "-o",
        str(model_dir),
        "--encoder-weights",
        "none",
        "--time-limit",
        budget,
        "--seed",
        str(seed),
        *shlex.split(extra.replace("{work}", str(work.parent))),
    )
    with open(model_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seconds = float(rows[-1]["elapsed"]) if rows else 0.0
    return map_area(held, model_dir, work, name), seconds, len(rows)


def map_area(held: Path, model_dir: Path, work: Path, name: str, args: str = "") -> Path:
    """``geopsp classify`` the held-out area with a trained configuration (and ``args``)."""
    out = work / f"map_{name}.tif"
    model = str(model_dir / "model.safetensors")
    geopsp("classify", str(held), "-m", model, "-o", str(out), *shlex.split(args))
    return out


def to_result(
    dataset: str, config: str, report: dict, target: int, seconds: float, epochs: int
) -> Result:
    per_class = {str(c["value"]): c.get("iou") for c in report.get("per_class", [])}
    return Result(
        dataset=dataset,
        config=config,
        miou=report.get("miou"),
        target_iou=per_class.get(str(target)),
        boundary_f1=report.get("boundary_f1"),
        per_class=per_class,
        train_seconds=seconds,
        epochs=epochs,
    )


def bench_dataset(
    name: str,
    ds: Dataset,
    configs: dict[str, str],
    budget: str,
    work: Path,
    baseline: bool,
    chip_args: tuple[str, ...] = (),
    maps: dict[str, str] | None = None,
    seed: int = 0,
) -> list[Result]:
    """Every configuration and the baseline on one dataset, in one run.

    ``chip_args`` replaces the dataset's ``export-chips`` arguments (e.g. another chip size);
    ``maps`` maps each trained configuration again with other ``classify`` arguments, scored
    as ``CONFIG+NAME``; ``seed`` seeds every training, the baseline's included.
    """
    from baseline import predict_raster, train_baseline  # noqa: PLC0415  (bench/ sibling)

    work.mkdir(parents=True, exist_ok=True)
    train_area, held = split_scene(ds, work)
    chips = work / "chips"
    shutil.rmtree(chips, ignore_errors=True)
    geopsp(
        "export-chips",
        str(train_area),
        "--labels",
        str(ds.labels),
        "-o",
        str(chips),
        "--val-fraction",
        "0.15",
        *(chip_args or ds.chips),
    )
    results = []
    for cname, extra in configs.items():
        out, seconds, epochs = run_geopsp(chips, held, work, cname, extra, budget, seed)
        report = score(out, ds, work, cname)
        results.append(to_result(name, cname, report, ds.target, seconds, epochs))
        print(_row(results[-1]), flush=True)
        for mname, margs in (maps or {}).items():
            variant = f"{cname}+{mname}"
            margs = margs.replace("{train_area}", str(train_area))
            out = map_area(held, work / f"model_{cname}", work, variant, margs)
            report = score(out, ds, work, variant)
            results.append(to_result(name, variant, report, ds.target, seconds, epochs))
            print(_row(results[-1]), flush=True)
    if not baseline:
        return results
    t0 = time.perf_counter()
    model, epochs = train_baseline(chips, parse_duration(budget), seed)
    seconds = time.perf_counter() - t0
    out = work / "map_baseline.tif"
    predict_raster(model, chips, held, out)
    report = score(out, ds, work, "baseline")
    results.append(to_result(name, "smp-PSPNet-resnet34", report, ds.target, seconds, epochs))
    print(_row(results[-1]), flush=True)
    return results


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _row(r: Result) -> str:
    return (
        f"| {r.dataset} | {r.config} | {_fmt(r.miou)} | {_fmt(r.target_iou)} | "
        f"{_fmt(r.boundary_f1)} | {r.train_seconds:.0f} | {r.epochs} |"
    )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--budget", default="3m", help="training time per configuration")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--config", action="append", default=[], metavar="NAME=ARGS")
    ap.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="also map each configuration with these classify arguments (row CONFIG+NAME); "
        "{train_area} stands for the training area's raster",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the work folder here")
    ap.add_argument("--threads", type=int, help="CPU threads of every run (default: all)")
    ap.add_argument("--no-baseline", action="store_true", help="geopsp configurations only")
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every training, the baseline's included: repeated runs with the same "
        "seed and the same number of baseline epochs give the same baseline",
    )
    ap.add_argument(
        "--chips",
        default="",
        metavar="ARGS",
        help='export-chips arguments instead of each dataset\'s (e.g. "--chip-size 256 --stride 64")',
    )
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:  # children read it at start-up; this process sets it for the baseline
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    configs = dict(c.split("=", 1) for c in args.config) or DEFAULT_CONFIGS
    sys.path.insert(0, str(Path(__file__).parent))
    print(
        "| dataset | configuration | held-out mIoU | target-class IoU | boundary F1 | train s | epochs |"
    )
    print("|---|---|---|---|---|---|---|")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for name in args.datasets.split(","):
            results += bench_dataset(
                name,
                DATASETS[name],
                configs,
                args.budget,
                base / name,
                not args.no_baseline,
                tuple(shlex.split(args.chips)),
                dict(m.split("=", 1) for m in args.map),
                args.seed,
            )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    _summary(results)


def _summary(results: list[Result]) -> None:
    base = {r.dataset: r.miou for r in results if r.config.startswith("smp-")}
    for r in results:
        if not r.config.startswith("smp-") and r.miou is not None and base.get(r.dataset):
            print(
                f"{r.dataset} {r.config}: {100 * (r.miou - base[r.dataset]):+.1f} mIoU points "
                "against the baseline"
            )
    gains = [
        r.miou - base[r.dataset]
        for r in results
        if not r.config.startswith("smp-") and base.get(r.dataset) is not None
    ]
    if gains:
        print(f"mean gain over the baseline: {100 * float(np.mean(gains)):+.1f} mIoU points")


if __name__ == "__main__":
    main()
