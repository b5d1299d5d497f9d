"""export-chips benchmark: chips per second and the ratio to the I/O floor.

The **I/O floor** is a bare rasterio loop over the same windows that reads each window of the
image and writes it (and a constant uint8 label chip) as GeoTIFFs with the same creation
options, in one process: what any chip exporter must at least do. ``export_chips`` adds label
rasterization (reprojected vectors), masks, statistics, the index and the metadata files.
With ``--keep-empty 1`` every window is written, so both sides write the same chips.

Each configuration runs ``--repeat`` times and the best time is kept (the machine is shared);
ratios come from one run of this script.

``--memory`` also measures the peak resident memory of exports (each in a fresh process) of
the scene and of the same scene resampled to 4x and 16x as many pixels.

Usage::

    python bench/export_chips.py                          # Everest sample, 64 px chips every 16 px
    python bench/export_chips.py --chip-size 128 --stride 64 --repeat 5
    python bench/export_chips.py --memory --workers 0 --repeat 1
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geopsp.chips.export import ExportOptions, export_chips
from geopsp.core.windows import window_grid

ROOT = Path(__file__).resolve().parents[1]
EVEREST = ROOT / "sample_data" / "everest_landsat7_glaciers"


def io_floor(image: str, chip: int, stride: int, outdir: Path) -> tuple[float, int]:
    """Seconds for a bare read + write of every window, and the number of windows."""
    outdir.mkdir()
    t = time.perf_counter()
    with rasterio.open(image) as ds:
        wins = window_grid(ds.width, ds.height, chip, stride)
        prof = {
            "driver": "GTiff",
            "width": chip,
            "height": chip,
            "crs": ds.crs,
            "compress": "deflate",
        }
        prof.update(tiled=True, blockxsize=min(chip, 256), blockysize=min(chip, 256))
        label = np.zeros((1, chip, chip), dtype="uint8")
        for i, (c, r) in enumerate(wins):
            win = Window(c, r, chip, chip)
            data = ds.read(window=win)  # every window lies inside the raster (size >= chip)
            tr = window_transform(win, ds.transform)
            with rasterio.open(
                outdir / f"i{i}.tif", "w", **prof, transform=tr, count=ds.count, dtype=data.dtype
            ) as dst:
                dst.write(data)
            with rasterio.open(
                outdir / f"l{i}.tif", "w", **prof, transform=tr, count=1, dtype="uint8", nodata=255
            ) as dst:
                dst.write(label)
    return time.perf_counter() - t, len(wins)


def run_export(image, labels, chip, stride, workers, outdir: Path) -> tuple[float, int]:
    t = time.perf_counter()
    s = export_chips(
        [image],
        labels,
        str(outdir),
        ExportOptions(chip_size=chip, stride=stride, keep_empty=1.0, workers=workers),
    )
    return time.perf_counter() - t, s.chips_written


def upsampled(image: str, factor: int, path: Path) -> Path:
    """The scene resampled (nearest) to ``factor`` x as many pixels per axis, tiled."""
    from rasterio.enums import Resampling
    from rasterio.transform import Affine

    with rasterio.open(image) as ds:
        prof = ds.profile | {"width": ds.width * factor, "height": ds.height * factor}
        t = ds.transform
        prof |= {
            "transform": Affine(t.a / factor, t.b / factor, t.c, t.d / factor, t.e / factor, t.f)
        }
        prof |= {"tiled": True}
        prof |= {"blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        data = ds.read(
            out_shape=(ds.count, prof["height"], prof["width"]), resampling=Resampling.nearest
        )
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
    return path


def peak_rss_mb(image: str, labels: str, outdir: Path) -> float:
    """Peak RSS (MB) of a fresh process running one export with 256 px chips."""
    code = (
        "import resource, sys; from geopsp.chips.export import ExportOptions, export_chips; "
        "export_chips([sys.argv[1]], sys.argv[2], sys.argv[3], "
        "ExportOptions(chip_size=256, stride=256, keep_empty=1.0)); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, image, labels, str(outdir)], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(EVEREST / "LE71400412000304SGS00_RGB.tif"))
    ap.add_argument("--labels", default=str(EVEREST / "15_rgi60_glacier_outlines.gpkg"))
    ap.add_argument("--chip-size", type=int, default=64)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--memory", action="store_true", help="also measure peak RSS against raster size"
    )
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-chips-"))
    try:
        floor, n = min(
            io_floor(a.image, a.chip_size, a.stride, tmp / f"f{i}") for i in range(a.repeat)
        )
        rows = []
        for w in a.workers:
            best, written = min(
                run_export(a.image, a.labels, a.chip_size, a.stride, w, tmp / f"w{w}-{i}")
                for i in range(a.repeat)
            )
            assert written == n, (written, n)
            rows.append((w, best))
        with rasterio.open(a.image) as ds:
            desc = (
                f"{Path(a.image).name} ({ds.width} x {ds.height}, {ds.count} bands {ds.dtypes[0]})"
            )
        print(
            f"image: {desc}; {n} chips of {a.chip_size} px, stride {a.stride}; best of {a.repeat}\n"
        )
        print("| run | seconds | chips/s | time / I/O floor |")
        print("|---|---:|---:|---:|")
        print(
            f"| I/O floor (bare rasterio read + write, 1 process) | {floor:.2f} | {n / floor:.0f} | 1.00 |"
        )
        for w, t in rows:
            label = "in-process (`--workers 0`)" if w == 0 else f"`--workers {w}`"
            print(f"| export-chips {label} | {t:.2f} | {n / t:.0f} | {t / floor:.2f} |")
        if a.memory:
            print("\n| raster | pixels | peak RSS (MB) |\n|---|---:|---:|")
            for f in (1, 2, 4):
                img = a.image if f == 1 else str(upsampled(a.image, f, tmp / f"up{f}.tif"))
                with rasterio.open(img) as ds:
                    px = ds.width * ds.height
                rss = peak_rss_mb(img, a.labels, tmp / f"mem{f}")
                print(f"| {Path(a.image).stem} x{f * f} | {px / 1e6:.1f} M | {rss:.0f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
