"""How far pixel colour alone can separate a sample dataset's classes on its held-out area.

For each dataset of ``bench/quality.py`` the held-out area's pixels are binned by colour
(16 levels per band, up to three bands) and every bin is given the class most of its pixels
have *in the held-out area itself*: an oracle that has seen the answers, so no per-pixel
classifier on these bands can score higher. A second row fits the same bins on the
training area (the honest version). Where the oracle's mIoU is low, what the labels call a
class is not visible in the pixel's colour (snow on rock against snow on ice, debris-covered
ice against moraine), and only spatial context can help.

Usage::

    python bench/colour_separability.py [--datasets glaciers,buildings,landcover]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).parent))
from quality import DATASETS, Dataset  # noqa: E402  (bench/ sibling)

from geopsp.labels.rasterize import open_labels, rasterize_labels  # noqa: E402

LEVELS = 16


def colour_codes(image: np.ndarray) -> np.ndarray:
    """One integer per pixel: its colour, quantized to ``LEVELS`` per band (first 3 bands)."""
    bands = image[:3].astype(np.float64)
    code = np.zeros(bands.shape[1:], np.int64)
    for b in bands:
        lo, hi = np.percentile(b, [0.5, 99.5])
        q = np.clip((b - lo) / max(hi - lo, 1e-9) * LEVELS, 0, LEVELS - 1).astype(np.int64)
        code = code * LEVELS + q
    return code


def bin_classes(codes: np.ndarray, labels: np.ndarray, n_codes: int) -> np.ndarray:
    """The majority class of each colour bin (-1 where the bin is empty)."""
    classes = np.unique(labels)
    counts = np.stack([np.bincount(codes[labels == c], minlength=n_codes) for c in classes])
    return np.where(counts.sum(0) > 0, classes[counts.argmax(0)], -1)


def miou(pred: np.ndarray, ref: np.ndarray) -> float:
    ious = []
    for c in np.unique(ref):
        union = ((pred == c) | (ref == c)).sum()
        ious.append(((pred == c) & (ref == c)).sum() / union)
    return float(np.mean(ious))


def separability(ds: Dataset) -> tuple[float, float]:
    """(training-area fit, held-out oracle) mIoU of colour bins on the held-out area."""
    with rasterio.open(ds.image) as src:
        image = src.read()
        valid = src.dataset_mask() > 0
        source = open_labels(ds.labels)
        labels = rasterize_labels(source, src.crs, src.transform, src.width, src.height)
    codes = colour_codes(image)
    cut = int(round(image.shape[2] * ds.split))
    ok = valid & (labels != 255)
    train, held = ok.copy(), ok.copy()
    train[:, cut:] = False
    held[:, :cut] = False
    n = LEVELS ** min(3, image.shape[0])
    ref = labels[held]
    fitted = bin_classes(codes[train], labels[train], n)[codes[held]]
    oracle = bin_classes(codes[held], ref, n)[codes[held]]
    return miou(fitted, ref), miou(oracle, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    args = ap.parse_args()
    print("| dataset | colour bins fitted on the training area | oracle (fitted on held-out) |")
    print("|---|---|---|")
    for name in args.datasets.split(","):
        fitted, oracle = separability(DATASETS[name])
        print(f"| {name} | {fitted:.3f} | {oracle:.3f} |")


if __name__ == "__main__":
    main()
