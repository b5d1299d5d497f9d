"""Accuracy assessment of a class raster against reference labels, streamed block by block.

The reference (a label vector in any CRS, or a label raster) is rasterized onto the
prediction's grid one block at a time with :func:`geopsp.labels.rasterize.rasterize_labels`, so
rasters larger than memory are assessed in bounded memory. One confusion matrix is
accumulated over every pixel that is valid in both maps; pixels that are nodata in either,
or 255 (ignore), never count. Boundary F1 is computed per block with a halo of
``boundary_tolerance + 1`` pixels, so block edges never create or hide boundaries and the
result equals a single pass over the whole raster.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from geopsp.core.classes import IGNORE, ClassInfo, from_dicts
from geopsp.core.errors import InputError, UsageError
from geopsp.core.progress import bar
from geopsp.core.sources import open_raster
from geopsp.core.windows import window_grid
from geopsp.evaluate.accuracy import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_BOUNDARY_TOLERANCE,
    EvaluationResult,
    result_from_matrix,
)
from geopsp.evaluate.boundary import BoundaryCounts, boundary_counts
from geopsp.evaluate.metrics import confusion_matrix

log = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "evaluate", "plot_confusion", "result_from_matrix"]


def _blocks(width: int, height: int, size: int) -> list[tuple[int, int, int, int]]:
    """``(col, row, width, height)`` of square blocks, row by row, clipped at the edges."""
    grid = window_grid(width, height, size, size, edge="clip")
    return [(c, r, min(size, width - c), min(size, height - r)) for c, r in grid]


def _has_mask(src) -> bool:
    """Whether band 1 is masked by a mask band or alpha (beyond a nodata value)."""
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums[0]
    return MaskFlags.per_dataset in flags or MaskFlags.alpha in flags


def _read_prediction(src, window, masked: bool) -> np.ndarray:
    """Band 1 of the prediction as uint8 class values with 255 wherever it is invalid."""
    from rasterio.errors import RasterioIOError

    from geopsp.core.sources import read_error

    try:  # a truncated or corrupt file fails only here, at the first unreadable block
        data = src.read(1, window=window)
        mask = src.read_masks(1, window=window) if masked else None
    except RasterioIOError as exc:
        raise read_error(src.name, exc, int(window.col_off), int(window.row_off)) from None
    invalid = np.zeros(data.shape, dtype=bool)
    if src.nodata is not None:
        invalid |= data == src.nodata
    if mask is not None:
        invalid |= mask == 0
    if np.issubdtype(data.dtype, np.floating):
        invalid |= ~np.isfinite(data)
    bad = ~invalid & ((data < 0) | (data > IGNORE))
    if bad.any():
        raise InputError(
            f"{src.name}: class values must be 0..254 (255 = nodata); found {data[bad].flat[0]}"
        )
    out = np.where(invalid, IGNORE, data).astype(np.uint8)
    return out


def _check_overlap(pred, source) -> None:
    """Fail early when no reference label lies within the prediction's extent."""
    if not source.touches(pred.crs, tuple(pred.bounds)):
        b = [round(v, 3) for v in pred.bounds]
        raise InputError(
            f"the reference {source.address} does not overlap the prediction {pred.name} "
            f"(prediction bounds {b} in its CRS); check that both cover the same area"
        )


def _final_classes(
    table: list[ClassInfo] | None,
    seen_ref: np.ndarray,
    seen_pred: np.ndarray,
    unlabeled: str,
    ref_table: list[ClassInfo],
) -> list[ClassInfo]:
    """The classes (rows/columns) of the final matrix, checking the reference against the table."""
    if table is None:
        # No class table: the sorted union of the values found in either map, named as in
        # the reference's table where it names them.
        values = sorted(set(np.flatnonzero(seen_ref)) | set(np.flatnonzero(seen_pred)))
        names = {c.value: c.to_dict() for c in ref_table}
        return from_dicts([names.get(int(v), {"value": int(v)}) for v in values])
    known = {c.value for c in table}
    extra_ref = [int(v) for v in np.flatnonzero(seen_ref) if v not in known]
    if extra_ref:
        hint = ""
        if 0 in extra_ref and unlabeled == "background":
            hint = " (0 is unlabeled background: use --unlabeled ignore to leave it out)"
        raise InputError(
            f"reference class value(s) {extra_ref} are not in the prediction's class table "
            f"{sorted(known)}{hint}; relabel the reference or evaluate a matching prediction"
        )
    extra_pred = [int(v) for v in np.flatnonzero(seen_pred) if v not in known]
    if extra_pred:
        log.warning(
            "prediction values %s are not in its own class table; scored as extra classes",
            extra_pred,
        )
        table = from_dicts([c.to_dict() for c in table] + [{"value": v} for v in extra_pred])
    return table


def evaluate(
    prediction: str,
    reference: str,
    *,
    class_field: str | None = None,
    layer: str | None = None,
    unlabeled: str = "background",
    all_touched: bool = False,
    boundary_tolerance: float = DEFAULT_BOUNDARY_TOLERANCE,
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: bool = False,
    buffer: float | None = None,
) -> EvaluationResult:
    """Score a class raster against reference labels.

    Parameters
    ----------
    prediction : str
        Class raster (any GDAL address), e.g. written by ``geopsp classify``: band 1 holds
        class values 0..254, nodata/255 is never counted. Its class table (tag
        ``GEOPSP_CLASSES``) names the classes; without one, the classes are the sorted
        union of the values found in either map.
    reference : str
        Label vector (any OGR address, any CRS) or label raster (resampled nearest).
    class_field, layer : str, optional
        Vector attribute holding the class (name or value) and layer to read.
    unlabeled : {"background", "ignore"}
        What reference pixels outside every polygon are: class 0, or not counted.
    all_touched : bool
        Rasterize every pixel a polygon touches, not only those whose center it covers.
    boundary_tolerance : float
        Distance in pixels within which a boundary counts as matched (default 2).
    block_size : int
        Edge of the square blocks streamed through memory.
    progress : bool
        Show a progress bar on stderr.
    buffer : float, optional
        Buffer line/point references by this distance (prediction CRS units) to make areas.

    Returns
    -------
    EvaluationResult
    """
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from geopsp.core.class_raster import read_classes
    from geopsp.labels.rasterize import open_labels, rasterize_labels

    if unlabeled not in ("background", "ignore"):
        raise UsageError(f"--unlabeled must be 'background' or 'ignore', got {unlabeled!r}")
    if not boundary_tolerance >= 0:
        raise UsageError(f"--boundary-tolerance must be >= 0 pixels, got {boundary_tolerance}")
    if block_size < 1:
        raise UsageError(f"block size must be a positive number of pixels, got {block_size}")
    halo = int(math.floor(boundary_tolerance)) + 1
    with open_raster(prediction) as pred:
        if not np.issubdtype(np.dtype(pred.dtypes[0]), np.integer):
            raise InputError(
                f"{prediction}: a class raster holds integer class values, not {pred.dtypes[0]}"
            )
        if pred.crs is None:
            raise InputError(
                f"{prediction}: the prediction has no CRS; assign one (gdal_edit.py -a_srs)"
            )
        table = read_classes(pred)
        source = open_labels(
            reference,
            layer=layer,
            class_field=class_field,
            classes=table,
            unlabeled=unlabeled,
            buffer=buffer,
        )
        if table is None and any(c.name != str(c.value) for c in source.classes if c.value):
            # Text classes are numbered 1..N in name order, which nothing ties to the values
            # of a prediction that carries no class table.
            log.warning(
                "%s has no class table: the reference's named classes were numbered 1..N in "
                "name order and may not match its values; use an integer --class-field",
                prediction,
            )
        try:
            _check_overlap(pred, source)
            matrix = np.zeros((256, 256), dtype=np.int64)
            bcounts = BoundaryCounts()
            masked = _has_mask(pred)
            blocks = list(_blocks(pred.width, pred.height, block_size))
            with bar(len(blocks), "evaluate", enabled=progress, unit="block") as pbar:
                for col, row, w, h in blocks:
                    # The block plus a halo (clipped to the raster) so boundary pixels near the
                    # block edge see their true neighbours.
                    c0, r0 = max(col - halo, 0), max(row - halo, 0)
                    c1, r1 = min(col + w + halo, pred.width), min(row + h + halo, pred.height)
                    win = Window(c0, r0, c1 - c0, r1 - r0)
                    p = _read_prediction(pred, win, masked)
                    r = rasterize_labels(
                        source,
                        pred.crs,
                        window_transform(win, pred.transform),
                        c1 - c0,
                        r1 - r0,
                        unlabeled=unlabeled,
                        all_touched=all_touched,
                    )
                    core = (slice(row - r0, row - r0 + h), slice(col - c0, col - c0 + w))
                    matrix += confusion_matrix(p[core], r[core], 256)
                    valid = (p != IGNORE) & (r != IGNORE)
                    bcounts += boundary_counts(p, r, valid, boundary_tolerance, core)
                    pbar.update(1)
        finally:
            ds = source._cache.pop("ds", None)  # the label raster, when the reference is one
            if ds is not None:
                ds.close()
    if matrix.sum() == 0:
        raise InputError(
            f"no pixel is valid in both {prediction} and {reference}: they do not overlap, "
            "or one is entirely nodata/unlabeled"
        )
    seen_ref, seen_pred = matrix.sum(axis=1) > 0, matrix.sum(axis=0) > 0
    classes = _final_classes(table, seen_ref, seen_pred, unlabeled, source.classes)
    idx = [c.value for c in classes]
    result = result_from_matrix(matrix[np.ix_(idx, idx)], classes, bcounts, boundary_tolerance)
    result.prediction, result.reference = str(prediction), str(reference)
    return result


def plot_confusion(result: EvaluationResult, path: str, overwrite: bool = False) -> None:
    """Write ``result``'s confusion matrix as a PNG (see :func:`geopsp.evaluate.report.plot_confusion`)."""
    from geopsp.evaluate.report import plot_confusion as _plot

    _plot(result, path, overwrite=overwrite)
