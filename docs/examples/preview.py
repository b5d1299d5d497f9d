"""Side-by-side picture of an image, its reference labels and a geopsp class map.

usage: python preview.py IMAGE REFERENCE CLASSES.tif OUT.png [ACCURACY.json]

REFERENCE is a label vector or raster (put on the class map's grid the same way
``geopsp evaluate`` does); colors and the legend come from the class map's class table.
ACCURACY.json (``geopsp evaluate --json``) puts the map's mIoU in the prediction's title.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.patches import Patch

from geopsp.core.class_raster import read_classes
from geopsp.labels.rasterize import open_labels, rasterize_labels


def colorize(values: np.ndarray, classes) -> np.ndarray:
    rgb = np.full(values.shape + (3,), 255, dtype=np.uint8)  # white = no data / ignore
    for c in classes:
        rgb[values == c.value] = c.color
    return rgb


def _title(accuracy: str) -> str:
    if not accuracy:
        return "geopsp prediction"
    with open(accuracy, encoding="utf-8") as f:
        miou = json.load(f)["miou"]
    return f"geopsp prediction (mIoU {miou:.3f})"


def main(image: str, reference: str, prediction: str, out: str, accuracy: str = "") -> None:
    with rasterio.open(prediction) as pred_src:
        pred = pred_src.read(1)
        classes = read_classes(pred_src)
        grid = (pred_src.crs, pred_src.transform, pred_src.width, pred_src.height)
    with rasterio.open(image) as src:
        img = src.read(indexes=[1, 2, 3] if src.count >= 3 else [1]).astype(np.float32)
    lo, hi = np.percentile(img, [2, 98])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).transpose(1, 2, 0).squeeze()
    ref = rasterize_labels(open_labels(reference, classes=classes), *grid)

    fig, axes = plt.subplots(1, 3, figsize=(10, 7), layout="constrained")
    for ax, data, title in zip(
        axes,
        (img, colorize(ref, classes), colorize(pred, classes)),
        ("image", "reference", _title(accuracy)),
        strict=True,
    ):
        ax.imshow(data, cmap="gray" if data.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    handles = [Patch(color=np.array(c.color) / 255, label=c.name) for c in classes]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    main(*sys.argv[1:])
