"""Classification benchmark: pipeline efficiency, peak memory vs raster size, MP/s, overlap cost.

1. **Pipeline efficiency** = end-to-end tile throughput of ``classify_raster`` / model-only
   throughput (forward passes over the same tiles, already in memory, same batch size).
2. **Peak RSS** of a classification of synthetic 3-band tiled DEFLATE rasters of 4096^2,
   8192^2 and 16384^2 pixels, each in a fresh subprocess (``ru_maxrss`` of that process).
   The 16384^2 run must stay within 1.15 x the 4096^2 one.
3. **Throughput**: end-to-end megapixels/second and the overlap cost (tiles computed /
   tiles a grid without overlap would need).
4. **Precision** (``--precision``): end-to-end time of the same classification in float32 and
   in bfloat16 autocast, alternating, and the share of pixels whose class agrees; and the
   forward pass alone per tile size, precision and memory layout (contiguous or channels-last).

Usage::

    python bench/classify.py                      # everything (about 10 min on 2 cores)
    python bench/classify.py --skip-memory        # efficiency and throughput only
    python bench/classify.py --sizes 2048 4096    # smaller memory runs
    python bench/classify.py --skip-memory --skip-efficiency --precision --size 2048
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from geopsp.classify.predictor import Predictor
from geopsp.classify.ranks import batches
from geopsp.classify.run import ClassifyOptions, TileReader, classify_raster, plan_tiles
from geopsp.classify.tiling import TileGrid, default_block
from geopsp.core.classes import ClassInfo

CLASSES = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "foreground", (255, 0, 0))]


def synthetic_raster(path: Path, size: int, block: int = 512) -> Path:
    """A 3-band uint8 tiled DEFLATE GeoTIFF with smooth structure plus noise, written in strips."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    prof = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                crs="EPSG:32632", transform=from_origin(500000, 5000000, 1, 1), tiled=True,
                blockxsize=block, blockysize=block, compress="deflate", bigtiff="IF_SAFER")  # fmt: skip
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **prof) as dst:
        for r in range(0, size, block):
            h = min(block, size - r)
            y = np.arange(r, r + h, dtype=np.float32)[:, None]
            base = 100 + 60 * np.sin(x[None, :] / 97.0) * np.cos(y / 131.0)
            arr = np.stack([base + 20 * b for b in range(3)])
            arr += rng.integers(0, 8, size=arr.shape)
            dst.write(np.clip(arr, 0, 255).astype(np.uint8), window=Window(0, r, size, h))
    return path


def make_predictor(kind: str, amp: bool = False) -> Predictor:
    """``pspnet``: resnet18 PSPNet (OS16, upsample decoder, no PointRend), random weights;
    ``cpu-default``: the network ``geopsp train`` builds on a CPU (the same with the FPN
    decoder); ``tiny``: two 3x3 convolutions (fast, for the memory runs)."""
    import torch

    torch.manual_seed(0)
    if kind in ("pspnet", "cpu-default"):
        from geopsp.models import build_model
        from geopsp.train.config import CPU_ARCH_DEFAULTS

        arch = {"in_channels": 3, "num_classes": 2, **CPU_ARCH_DEFAULTS}
        if kind == "pspnet":
            arch.update(output_stride=16, decoder="upsample", pointrend=False)
        model = build_model(arch).eval()
        mult = model.size_multiple
    else:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3, padding=1)
        ).eval()  # fmt: skip
        mult = 1
    return Predictor(model, CLASSES, [120.0] * 3, [40.0] * 3, size_multiple=mult, chip_size=256,
                     amp=amp)  # fmt: skip


def efficiency(
    src: Path, tile: int, overlap: int, batch: int, out_dir: Path, reps: int = 3
) -> dict:
    """Model-only vs end-to-end throughput on the same tiles and batch size."""
    import torch

    pred = make_predictor("pspnet")
    tile, overlap = plan_tiles(pred, tile, overlap)
    reader = TileReader(str(src), [1, 2, 3], pred, tile)
    grid = TileGrid(reader.height, reader.width, tile, overlap, default_block(tile))
    xs = [np.stack([reader(t)[0] for t in b]) for b in batches(grid, batch)]
    reader.close()
    fwd = pred.forward_fn("none")
    opts = ClassifyOptions(tile_size=tile, overlap=overlap, batch_size=batch, overwrite=True,
                           progress=False)  # fmt: skip
    fwd(xs[0])  # warm-up (oneDNN primitive creation)
    classify_raster(str(src), out_dir / "warm.tif", pred, opts)
    # The machine is shared: alternate the two measurements and keep the best of each.
    # CPU time (all threads of this process) is far less sensitive to other processes than
    # wall time; it charges the pipeline for every cycle its reader/blender/writer use.
    model_runs, e2e_runs, model_cpu, e2e_cpu, busy = [], [], [], [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for x in xs:
            fwd(x)
        model_runs.append(time.perf_counter() - t0)
        model_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        s = classify_raster(str(src), out_dir / "eff.tif", pred, opts)
        e2e_runs.append(time.perf_counter() - t0)
        e2e_cpu.append(time.process_time() - c0)
        busy.append(s.forward_seconds / e2e_runs[-1])
    model_s, e2e_s = min(model_runs), min(e2e_runs)
    n = len(grid)
    no_overlap = math.ceil(grid.height / tile) * math.ceil(grid.width / tile)
    return {
        "tiles": n, "tile": tile, "overlap": overlap, "batch": batch,
        "threads": torch.get_num_threads(),
        "model_tiles_per_s": n / model_s, "e2e_tiles_per_s": s.computed / e2e_s,
        "efficiency": (s.computed / e2e_s) / (n / model_s),
        "e2e_mp_per_s": grid.height * grid.width / 1e6 / e2e_s,
        "overlap_cost": n / no_overlap,
        "model_runs_s": model_runs, "e2e_runs_s": e2e_runs,
        "cpu_efficiency": float(np.median(model_cpu) / np.median(e2e_cpu)),
        "model_busy": float(np.median(busy)),
        "model_cpu_s": model_cpu, "e2e_cpu_s": e2e_cpu,
        "default_overlap_cost_16384": overlap_cost(16384, 512, 64),
    }  # fmt: skip


def precision(src: Path, tile: int, overlap: int, batch: int, out_dir: Path, reps: int) -> dict:
    """End-to-end seconds in float32 and in bfloat16 (alternating, best of ``reps``) and the
    share of pixels with the same class in both maps; ``float32 contiguous`` is float32 with
    the layout of the code before channels-last float32 tiles (the model and tiles NCHW)."""
    import rasterio

    import geopsp.classify.predictor as predictor_module

    opts = ClassifyOptions(tile_size=tile, overlap=overlap, batch_size=batch, overwrite=True,
                           progress=False)  # fmt: skip
    kind = "cpu-default"
    preds = {"float32": make_predictor(kind), "float32 contiguous": make_predictor(kind),
             "bfloat16": make_predictor(kind, amp=True)}  # fmt: skip
    runs: dict[str, list[float]] = {name: [] for name in preds}
    least = predictor_module.CPU_FP32_CHANNELS_LAST_PIXELS
    try:
        for rep in range(reps + 1):  # the first round warms up oneDNN and is not counted
            for name, pred in preds.items():
                forced = name == "float32 contiguous"
                predictor_module.CPU_FP32_CHANNELS_LAST_PIXELS = math.inf if forced else least
                t0 = time.perf_counter()
                classify_raster(str(src), out_dir / f"{name.replace(' ', '_')}.tif", pred, opts)
                if rep:
                    runs[name].append(time.perf_counter() - t0)
    finally:
        predictor_module.CPU_FP32_CHANNELS_LAST_PIXELS = least
    maps = [rasterio.open(out_dir / f"{name.replace(' ', '_')}.tif").read(1) for name in preds]
    best = {name: min(v) for name, v in runs.items()}
    return {"seconds": best, "runs_s": runs, "speedup": best["float32"] / best["bfloat16"],
            "layout_speedup": best["float32 contiguous"] / best["float32"],
            "agreement": float((maps[0] == maps[2]).mean()),
            "layout_agreement": float((maps[0] == maps[1]).mean())}  # fmt: skip


def layouts(sizes=(64, 128, 256, 512), pixels: int = 512 * 512, reps: int = 3) -> dict:
    """Seconds of one forward pass of ``pixels`` pixels in tiles of each size, per precision
    and memory layout of the model and the tiles (best of ``reps`` alternating rounds)."""
    import torch

    model = make_predictor("cpu-default").model
    out: dict = {}
    for size in sizes:
        x = torch.randn(max(1, pixels // size**2), 3, size, size)
        best: dict[str, float] = {}
        for _ in range(reps):
            for amp in (False, True):
                for fmt in (torch.contiguous_format, torch.channels_last):
                    key = f"{'bfloat16' if amp else 'float32'} {str(fmt).split('.')[-1]}"
                    m, xi = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
                    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, amp):
                        m(xi)  # oneDNN builds its kernels for this shape and layout
                        t0 = time.perf_counter()
                        m(xi)
                    best[key] = min(best.get(key, math.inf), time.perf_counter() - t0)
        out[size] = best
    return out


def overlap_cost(size: int, tile: int, overlap: int) -> float:
    """Tiles computed / tiles without overlap for a ``size``^2 raster."""
    g = TileGrid(size, size, tile, overlap, default_block(tile))
    return len(g) / math.ceil(size / tile) ** 2


def memory_child(src: str, out: str, tile: int, overlap: int, batch: int) -> None:
    """Run one classification and print its peak RSS (MiB) as JSON (called in a subprocess)."""
    pred = make_predictor("tiny")
    opts = ClassifyOptions(tile_size=tile, overlap=overlap, batch_size=batch, overwrite=True,
                           progress=False)  # fmt: skip
    t0 = time.perf_counter()
    s = classify_raster(src, out, pred, opts)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": rss, "seconds": dt, "tiles": s.computed,
                      "mp_per_s": s.pixels / 1e6 / dt}))  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=1024, help="raster size for the efficiency run")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--reps", type=int, default=7, help="alternating repetitions (best kept)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--mem-tile", type=int, default=512)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-efficiency", action="store_true")
    ap.add_argument("--precision", action="store_true", help="float32 against bfloat16")
    ap.add_argument("--workdir", default=None, help="where the synthetic rasters go")
    ap.add_argument("--child", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    return ap.parse_args()


def report_efficiency(a: argparse.Namespace, work: Path) -> dict:
    src = synthetic_raster(work / f"eff_{a.size}.tif", a.size)
    r = efficiency(src, a.tile, a.overlap, a.batch, work, a.reps)
    print(
        f"pipeline efficiency: {r['efficiency']:.3f} (end-to-end {r['e2e_tiles_per_s']:.2f} "
        f"tiles/s vs model-only {r['model_tiles_per_s']:.2f} tiles/s; {r['tiles']} tiles of "
        f"{r['tile']} px, overlap {r['overlap']}, batch {r['batch']}, {r['threads']} threads; "
        f"best of {len(r['model_runs_s'])} alternating runs)"
    )
    print(f"pipeline efficiency by CPU time (medians): {r['cpu_efficiency']:.3f}; "
          f"model busy {100 * r['model_busy']:.1f}% of the end-to-end wall time (median)")  # fmt: skip
    print(f"end-to-end: {r['e2e_mp_per_s']:.3f} MP/s; overlap cost {r['overlap_cost']:.3f} x "
          f"(defaults tile 512 / overlap 64 on 16384^2: {r['default_overlap_cost_16384']:.3f} x)")  # fmt: skip
    return r


def report_precision(a: argparse.Namespace, work: Path) -> dict:
    src = work / f"eff_{a.size}.tif"  # the efficiency run's raster, when it ran
    if not src.exists():
        synthetic_raster(src, a.size)
    r = precision(src, a.tile, a.overlap, a.batch, work, a.reps)
    sec = r["seconds"]
    print(f"float32 {sec['float32']:.2f} s, bfloat16 {sec['bfloat16']:.2f} s "
          f"(x{r['speedup']:.2f}); same class for {100 * r['agreement']:.3f} % of the pixels")  # fmt: skip
    print(f"float32 with NCHW tiles {sec['float32 contiguous']:.2f} s (channels-last "
          f"x{r['layout_speedup']:.2f}); same class for {100 * r['layout_agreement']:.3f} %")  # fmt: skip
    lay = layouts()
    for size, row in lay.items():
        print(f"forward, {size} px tiles: " + ", ".join(f"{k} {v:.3f} s" for k, v in row.items()))
    return {"precision": r, "layouts": lay}


def report_memory(a: argparse.Namespace, work: Path) -> dict:
    mem = {}
    for size in a.sizes:
        src = work / f"mem_{size}.tif"
        if not src.exists():
            t0 = time.perf_counter()
            synthetic_raster(src, size)
            print(f"wrote {src.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        cmd = [sys.executable, __file__, "--child", str(src), str(work / f"out_{size}.tif"),
               "--mem-tile", str(a.mem_tile), "--batch", str(a.batch)]  # fmt: skip
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        mem[size] = res
        print(f"{size:>6}^2: peak RSS {res['peak_rss_mib']:.0f} MiB, {res['seconds']:.0f} s, "
              f"{res['mp_per_s']:.1f} MP/s, {res['tiles']} tiles")  # fmt: skip
    first, last = mem[a.sizes[0]], mem[a.sizes[-1]]
    print(f"peak RSS ratio {a.sizes[-1]}^2 / {a.sizes[0]}^2: "
          f"{last['peak_rss_mib'] / first['peak_rss_mib']:.3f} (limit 1.15)")  # fmt: skip
    return mem


def main() -> None:
    a = parse_args()
    if a.child:
        memory_child(a.child[0], a.child[1], a.mem_tile, a.mem_tile // 8, a.batch)
        return
    work = Path(a.workdir or tempfile.mkdtemp(prefix="geopsp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if not a.skip_efficiency:
        results["efficiency"] = report_efficiency(a, work)
    if a.precision:
        results.update(report_precision(a, work))
    if not a.skip_memory:
        results["memory"] = report_memory(a, work)
    print(json.dumps(results, indent=1, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
