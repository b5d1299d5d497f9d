"""How far pixel colour alone can separate a sample dataset's classes on its held-out area.

For each dataset of ``bench/quality.py`` the held-out area's pixels are binned by colour
(16 levels per band, up to three bands) and every bin is given the class most of its pixels
have *in the held-out area itself*: an oracle that has seen the answers, so no per-pixel
classifier on these bands can score higher. A second row fits the same bins on the
training area (the honest version). Where the oracle's mIoU is low, what the labels call a
class is not visible in the pixel's colour (snow on rock against snow on ice, debris-covered
ice against moraine), and only spatial context can help.

A third column is a classic per-pixel classifier fitted on the training area: a linear
discriminant (Fisher's LDA, shared covariance, training-area priors) on every band plus each
band's mean over 3, 7 and 15 pixel squares around the pixel. It is what a remote-sensing
analyst would try before a network, and it tells whether a network's held-out map has
learned more than local spectra.

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
BOX_SIZES = (3, 7, 15)  # local-mean windows of the linear discriminant's features


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


def box_mean(band: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``band`` over the valid pixels of the ``size`` x ``size`` square around each
    pixel (an integral image, so any size costs the same)."""
    r = size // 2
    sums = []
    for a in (np.where(valid, band, 0.0), valid.astype(np.float64)):
        c = np.pad(a, ((r + 1, r), (r + 1, r))).cumsum(0).cumsum(1)
        sums.append(c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size])
    return sums[0] / np.maximum(sums[1], 1.0)


def pixel_features(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(pixels, features): every band and its local means over ``BOX_SIZES``."""
    bands = image.astype(np.float64)
    feats = [bands] + [np.stack([box_mean(b, valid, s) for b in bands]) for s in BOX_SIZES]
    stacked = np.concatenate(feats)
    return stacked.reshape(stacked.shape[0], -1).T


def linear_discriminant(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """Fisher's linear discriminant fitted on ``(x, y)``; the classes of ``x_new``."""
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / max(len(x) - len(classes), 1)
    cov += np.eye(len(cov)) * 1e-6 * np.trace(cov) / len(cov)  # constant bands stay solvable
    coef = np.linalg.solve(cov, means.T)  # (features, classes)
    prior = np.log(np.array([(y == c).mean() for c in classes]))
    scores = x_new @ coef - 0.5 * np.einsum("kf,fk->k", means, coef) + prior
    return classes[scores.argmax(1)]


def separability(ds: Dataset) -> tuple[float, float, float]:
    """(training-area fit, held-out oracle, linear discriminant) mIoU on the held-out area."""
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
    feats = pixel_features(image, valid)
    lda = linear_discriminant(feats[train.ravel()], labels[train], feats[held.ravel()])
    return miou(fitted, ref), miou(oracle, ref), miou(lda, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    args = ap.parse_args()
    print(
        "| dataset | colour bins fitted on the training area | oracle (fitted on held-out) "
        "| linear discriminant, bands + local means |"
    )
    print("|---|---|---|---|")
    for name in args.datasets.split(","):
        fitted, oracle, lda = separability(DATASETS[name])
        print(f"| {name} | {fitted:.3f} | {oracle:.3f} | {lda:.3f} |")


if __name__ == "__main__":
    main()
