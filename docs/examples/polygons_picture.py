"""Polygons over their image: predicted outlines filled, reference outlines dashed.

usage: python polygons_picture.py IMAGE POLYGONS REFERENCE OUT.png

IMAGE is drawn in grey (2-98 % stretch of band 1); POLYGONS (e.g. from geopsp vectorize or
classify --polygons) and REFERENCE (any OGR vector) are reprojected to the image's CRS and
clipped to its extent.
"""

from __future__ import annotations

import sys

import geopandas as gpd
import matplotlib
import numpy as np
import rasterio
from shapely.geometry import box

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


def main(image: str, polygons: str, reference: str, out: str) -> None:
    with rasterio.open(image) as src:
        band = src.read(1, masked=True).astype(float)
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
        crs, frame = src.crs, box(*src.bounds)
    lo, hi = np.percentile(band.compressed(), [2, 98])
    pred = gpd.read_file(polygons).to_crs(crs).clip(frame)
    ref = gpd.read_file(reference).to_crs(crs).clip(frame)
    fig, ax = plt.subplots(figsize=(6, 12), dpi=110)
    ax.imshow(np.clip((band - lo) / (hi - lo), 0, 1), cmap="gray", extent=extent)
    pred.plot(ax=ax, facecolor=(0.9, 0.25, 0.1, 0.35), edgecolor=(1.0, 0.35, 0.1), linewidth=1.4)
    ref.boundary.plot(ax=ax, color="cyan", linewidth=1.0, linestyle="--")
    ax.legend(
        handles=[
            Patch(facecolor=(0.9, 0.25, 0.1, 0.35), edgecolor=(1.0, 0.35, 0.1),
                  label=f"geopsp polygons ({len(pred)})"),
            Line2D([], [], color="cyan", linestyle="--", label=f"reference ({len(ref)})"),
        ],
        loc="lower left", fontsize=8, framealpha=0.8,
    )  # fmt: skip
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.set_xlabel(f"x ({crs.linear_units})")
    ax.set_ylabel(f"y ({crs.linear_units})")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
