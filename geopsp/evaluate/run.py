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
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from geopsp.labels.rasterize import LabelSource

log = logging.getLogger(__name__)

__all__ = [
    "EvaluateOptions",
    "EvaluationResult",
    "evaluate",
    "plot_confusion",
    "result_from_matrix",
]


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


@dataclass(frozen=True)
class EvaluateOptions:
    """Options of :func:`evaluate` (``geopsp evaluate``; see docs/evaluate.md).

    Attributes
    ----------
    class_field, layer : str, optional
        Vector attribute holding the class (name or value) and layer to read.
    unlabeled : {"background", "ignore"}
        What reference pixels outside every polygon are: class 0, or not counted.
    all_touched : bool
        Rasterize every pixel a polygon touches, not only those whose center it covers.
    buffer : float, optional
        Buffer line/point references by this distance (prediction CRS units) to make areas;
        polygons keep their extent.
    boundary_tolerance : float
        Distance in pixels within which a boundary counts as matched (default 2).
    block_size : int
        Edge of the square blocks streamed through memory.
    progress : bool
        Show a progress bar on stderr.
    """

    class_field: str | None = None
    layer: str | None = None
    unlabeled: str = "background"
    all_touched: bool = False
    buffer: float | None = None
    boundary_tolerance: float = DEFAULT_BOUNDARY_TOLERANCE
    block_size: int = DEFAULT_BLOCK_SIZE
    progress: bool = False

    def checked(self) -> EvaluateOptions:
        """These options, or a :class:`UsageError` naming the wrong one."""
        if self.unlabeled not in ("background", "ignore"):
            raise UsageError(
                f"--unlabeled must be 'background' or 'ignore', got {self.unlabeled!r}"
            )
        if not self.boundary_tolerance >= 0:
            raise UsageError(
                f"--boundary-tolerance must be >= 0 pixels, got {self.boundary_tolerance}"
            )
        if self.block_size < 1:
            raise UsageError(
                f"block size must be a positive number of pixels, got {self.block_size}"
            )
        return self


def evaluate(
    prediction: str, reference: str, options: EvaluateOptions | None = None
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
    options : EvaluateOptions, optional
        Label rules, boundary tolerance, block size (defaults: ``EvaluateOptions()``).

    Returns
    -------
    EvaluationResult
    """
    from geopsp.core.class_raster import read_classes

    opts = (options or EvaluateOptions()).checked()
    with open_raster(prediction) as pred:
        _check_prediction(pred, prediction)
        table = read_classes(pred)
        source = _open_reference(reference, table, opts, prediction)
        try:
            _check_overlap(pred, source)
            matrix, bcounts = _accumulate(pred, source, opts)
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
    classes = _final_classes(table, seen_ref, seen_pred, opts.unlabeled, source.classes)
    idx = [c.value for c in classes]
    result = result_from_matrix(matrix[np.ix_(idx, idx)], classes, bcounts, opts.boundary_tolerance)
    result.prediction, result.reference = str(prediction), str(reference)
    return result


def _check_prediction(pred, address: str) -> None:
    """A class raster holds integer values and has a CRS to put the reference on."""
    if not np.issubdtype(np.dtype(pred.dtypes[0]), np.integer):
        raise InputError(
            f"{address}: a class raster holds integer class values, not {pred.dtypes[0]}"
        )
    if pred.crs is None:
        raise InputError(f"{address}: the prediction has no CRS; assign one (gdal_edit.py -a_srs)")


def _open_reference(
    reference: str, table: list[ClassInfo] | None, opts: EvaluateOptions, prediction: str
) -> LabelSource:
    """The reference labels, matched to the prediction's class table when it has one."""
    from geopsp.labels.rasterize import open_labels

    source = open_labels(
        reference,
        layer=opts.layer,
        class_field=opts.class_field,
        classes=table,
        unlabeled=opts.unlabeled,
        buffer=opts.buffer,
        buffer_polygons=False,  # polygons are areas already: keep their drawn extent
    )
    named = [c for c in source.classes if c.value and c.name != str(c.value)]
    if table is None and len(named) > 1:
        # Text classes are numbered 1..N in name order, which nothing ties to the values
        # of a prediction that carries no class table. One class (every polygon, when no
        # --class-field is given) is 1 whatever its name, as a binary map's.
        log.warning(
            "%s has no class table: the reference's named classes were numbered 1..N in "
            "name order and may not match its values; use an integer --class-field",
            prediction,
        )
    return source


def _accumulate(
    pred, source: LabelSource, opts: EvaluateOptions
) -> tuple[np.ndarray, BoundaryCounts]:
    """The 256 x 256 confusion matrix and boundary counts, one block (plus halo) at a time."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from geopsp.labels.rasterize import rasterize_labels

    halo = int(math.floor(opts.boundary_tolerance)) + 1
    matrix = np.zeros((256, 256), dtype=np.int64)
    bcounts = BoundaryCounts()
    masked = _has_mask(pred)
    blocks = list(_blocks(pred.width, pred.height, opts.block_size))
    with bar(len(blocks), "evaluate", enabled=opts.progress, unit="block") as pbar:
        for col, row, w, h in blocks:
            # The block plus a halo (clipped to the raster) so boundary pixels near the
            # block edge see their true neighbours.
            c0, r0 = max(col - halo, 0), max(row - halo, 0)
            c1, r1 = min(col + w + halo, pred.width), min(row + h + halo, pred.height)
            win = Window(c0, r0, c1 - c0, r1 - r0)
            p = _read_prediction(pred, win, masked)
            r = rasterize_labels(
                source, pred.crs, window_transform(win, pred.transform), c1 - c0, r1 - r0,
                unlabeled=opts.unlabeled, all_touched=opts.all_touched,
            )  # fmt: skip
            core = (slice(row - r0, row - r0 + h), slice(col - c0, col - c0 + w))
            matrix += confusion_matrix(p[core], r[core], 256)
            valid = (p != IGNORE) & (r != IGNORE)
            bcounts += boundary_counts(p, r, valid, opts.boundary_tolerance, core)
            pbar.update(1)
    return matrix, bcounts


def plot_confusion(result: EvaluationResult, path: str, overwrite: bool = False) -> None:
    """Write ``result``'s confusion matrix as a PNG (see :func:`geopsp.evaluate.report.plot_confusion`)."""
    from geopsp.evaluate.report import plot_confusion as _plot

    _plot(result, path, overwrite=overwrite)
