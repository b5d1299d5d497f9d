"""``geopsp classify --adapt-priors TRAINING_RASTER``: correct the map for the input's class mix.

A model's probabilities carry the class mix of the area it was trained on (and, with class
weights, a reweighted one). A spatially separate area usually has another mix (the
benchmark's glacier held-out area is 71 % glacier against 44 % in training). Under the usual
label-shift assumption (a class looks the same, only its share changes) the input's
probabilities are the model's reweighted by ``input_c / training_c`` and renormalized
(Saerens, Latinne and Decaestecker 2002, one update of their EM; iterating further made
land-cover maps worse, where classes are confused with each other). Both mixes are the
model's mean class probability over up to :data:`AREA_WINDOWS` windows spread over the
raster, read and cut the same way: measured any other way (e.g. on the labelled pixels of the
training chips, which leave out the area's edges) the ratio of a rare class's two shares is
noise, and the correction made land-cover maps worse (docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from geopsp.classify.tiling import TileGrid

log = logging.getLogger(__name__)

AREA_WINDOWS = 64  # windows of the first pass, spread evenly over the processing order
PRIOR_FLOOR = 1e-6  # a class the model (almost) never predicts keeps a finite weight


def area_prior(
    grid: TileGrid,
    read_tile: Callable,
    forward: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    windows: int = AREA_WINDOWS,
) -> np.ndarray | None:
    """Mean class probability over the valid pixels of up to ``windows`` windows.

    Parameters
    ----------
    grid : TileGrid
        The raster's windows.
    read_tile : callable
        ``read_tile(tile) -> (image (C, H, W), valid (H, W))``, as the pipeline reads them.
    forward : callable
        ``forward(batch (B, C, H, W)) -> probabilities (B, K, H, W)``.
    batch_size : int
        Windows per forward pass.
    windows : int
        At most this many windows, spread evenly over the raster.

    Returns
    -------
    numpy.ndarray or None
        ``(K,)`` shares summing to 1; None when every sampled window is nodata.
    """
    n = len(grid)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(windows, n))}) if n else []
    total = None
    for start in range(0, len(picks), max(int(batch_size), 1)):
        tiles = [grid.tile_range(k, k + 1)[0] for k in picks[start : start + batch_size]]
        read = [read_tile(t) for t in tiles]
        keep = [(x, v) for x, v in read if v.any()]
        if not keep:
            continue
        probs = forward(np.stack([x for x, _ in keep])).astype(np.float64)
        valid = np.stack([v for _, v in keep])[:, None]
        part = (probs * valid).sum(axis=(0, 2, 3))
        total = part if total is None else total + part
    return None if total is None else total / total.sum()


def prior_weights(training: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Per-class factors ``area_c / training_c`` (float32) that move the model's probabilities
    from its training class mix to the area's."""
    prior = np.maximum(np.asarray(training, dtype=np.float64), PRIOR_FLOOR)
    return (np.asarray(area, dtype=np.float64) / prior).astype(np.float32)


def reweighted(
    forward: Callable[[np.ndarray], np.ndarray], weights: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """``forward`` with each pixel's probabilities multiplied by ``weights`` and renormalized."""
    w = np.asarray(weights, dtype=np.float32)[None, :, None, None]

    def adapted(x: np.ndarray) -> np.ndarray:
        probs = forward(x) * w
        probs /= np.maximum(probs.sum(axis=1, keepdims=True), np.float32(1e-12))
        return probs

    return adapted


def class_mixes(job, predictor, reader, forward) -> tuple[np.ndarray, np.ndarray] | None:
    """(training raster's mix, input's mix) as the model sees them, or None when either
    raster's sampled windows are all nodata. ``job`` is the input's planned
    :class:`~geopsp.classify.plan.RasterJob` (with its ``training`` raster's) and ``reader``
    its window reader. The training raster's mix is measured once and kept on its job, which
    every input of a run shares."""
    from geopsp.classify.reader import TileReader

    ref, batch = job.training, job.options.batch_size
    if ref.mix is None:
        ref_reader = TileReader(ref.address, ref.bands, predictor, ref.grid.tile)
        try:
            ref.mix = area_prior(ref.grid, ref_reader, forward, batch)
        finally:
            ref_reader.close()
    area = area_prior(job.grid, reader, forward, batch)
    return None if ref.mix is None or area is None else (ref.mix, area)
