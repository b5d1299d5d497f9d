"""The picture of docs/vectorize.md: SpaceNet Atlanta footprints rasterized, vectorized again.

usage: python docs/examples/vectorize_picture.py [OUTDIR]     (default: vectorize_output)

Rasterizes the 43 SpaceNet footprints onto the 0.5 m image grid as a geopsp class raster
(the map a perfect building classifier would write), vectorizes it with
``geopsp vectorize`` twice (plain pixel outlines; simplified and regularized), scores both
against the footprints object by object, and draws them over the image in
docs/images/vectorize_atlanta.png (the first 300 x 300 m of the scene).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import rasterio

from geopsp.core.class_raster import describe_class_band
from geopsp.core.classes import from_dicts
from geopsp.labels.rasterize import open_labels, rasterize_labels

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "sample_data" / "spacenet4_atlanta_buildings"
IMAGE, FOOTPRINTS = DATA / "sample_geotiff.tif", DATA / "geotiff_labels.geojson"
CLASSES = from_dicts([{"value": 0, "name": "background", "color": [0, 0, 0]},
                      {"value": 1, "name": "building", "color": [230, 60, 30]}])  # fmt: skip


def class_raster(path: Path) -> Path:
    with rasterio.open(IMAGE) as src:
        labels = open_labels(str(FOOTPRINTS), classes=CLASSES)
        arr = rasterize_labels(labels, src.crs, src.transform, src.width, src.height)
        prof = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8",
                    crs=src.crs, transform=src.transform, nodata=255)  # fmt: skip
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr, 1)
        describe_class_band(dst, CLASSES)
    return path


def geopsp(*args) -> str:
    cmd = [sys.executable, "-m", "geopsp", "-q", *map(str, args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print("$ geopsp", " ".join(map(str, args)), "\n" + out)
    return out


def main(out: Path) -> None:
    out.mkdir(exist_ok=True)
    classes = class_raster(out / "footprints.tif")
    plain, shaped = out / "plain.gpkg", out / "regularized.gpkg"
    geopsp("vectorize", classes, "-o", plain, "--classes", "building", "--overwrite")
    geopsp("vectorize", classes, "-o", shaped, "--classes", "building", "--fill-holes", "4",
           "--min-area", "10", "--simplify", "0.5", "--regularize", "--overwrite")  # fmt: skip
    for polys in (plain, shaped):
        geopsp("evaluate", polys, "--reference", FOOTPRINTS, "--objects")
    draw(plain, shaped, ROOT / "docs" / "images" / "vectorize_atlanta.png")


def draw(plain: Path, shaped: Path, png: Path) -> None:
    import geopandas as gpd
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    with rasterio.open(IMAGE) as src:
        band = src.read(1, masked=True).astype(float)
        b = src.bounds
    lo, hi = np.percentile(band.compressed(), [2, 98])
    view = (b.left, b.left + 300, b.top - 300, b.top)
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4), dpi=80, sharey=True)
    ref = gpd.read_file(FOOTPRINTS)
    for ax, path, title in zip(axes, (plain, shaped), ("pixel outlines (vectorize)",
                               "--simplify 0.5 --regularize"), strict=True):  # fmt: skip
        ax.imshow(np.clip((band - lo) / (hi - lo), 0, 1), cmap="gray",
                  extent=(b.left, b.right, b.bottom, b.top))  # fmt: skip
        gpd.read_file(path).plot(ax=ax, facecolor=(0.9, 0.25, 0.1, 0.3),
                                 edgecolor=(1.0, 0.4, 0.1), linewidth=1.3)  # fmt: skip
        ref.boundary.plot(ax=ax, color="cyan", linewidth=0.9, linestyle="--")
        ax.set_xlim(view[:2])
        ax.set_ylim(view[2:])
        ax.set_title(title, fontsize=10)
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=7)
    axes[0].legend(handles=[
        Line2D([], [], color=(1.0, 0.4, 0.1), linewidth=2, label="geopsp polygons"),
        Line2D([], [], color="cyan", linestyle="--", label="SpaceNet footprints"),
    ], loc="lower left", fontsize=8, framealpha=0.85)  # fmt: skip
    fig.suptitle("SpaceNet 4 Atlanta, WorldView-2 panchromatic 0.5 m (EPSG:32616, metres)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "vectorize_output"))
