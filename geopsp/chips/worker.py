"""Cutting and writing chips: the work each process does for a batch of windows.

Functions are top level and take only picklable arguments, so they run the same in the main
process and in spawned worker processes; each process opens its own datasets. Chip files are
written under a name derived from the window's candidate number; the main process renames kept
chips to consecutive ids in window order, so the output never depends on the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geopsp.core.band_stats import BandStats
from geopsp.core.classes import IGNORE, ClassInfo
from geopsp.core.errors import GeopspError, InputError
from geopsp.core.normalize import has_data
from geopsp.labels.rasterize import LabelSource, rasterize_labels


@dataclass(frozen=True)
class ChipParams:
    """Settings shared by every window of one export."""

    chip_size: int
    bands: tuple[int, ...]
    unlabeled: str
    all_touched: bool
    keep_empty: float
    max_nodata: float
    seed: int
    workdir: str
    classes: tuple[ClassInfo, ...]


@dataclass
class ChipResult:
    """What happened to one window: ``written``, ``empty`` or ``nodata``."""

    cand: int
    status: str
    nodata_fraction: float = 0.0
    counts: np.ndarray | None = None  # pixels per label value (256,)
    stats: BandStats | None = None  # band statistics over the chip's valid pixels


_STATE: dict = {}


def init_worker(labels: LabelSource, params: ChipParams) -> None:
    """Process initializer: keep the labels and settings for every batch."""
    import logging

    _STATE.clear()
    _STATE.update(labels=labels, params=params, datasets={})
    logging.getLogger("rasterio").setLevel(logging.ERROR)


def temp_names(workdir: str, cand: int) -> tuple[str, str]:
    """Where a candidate chip is written before it gets its id."""
    return f"{workdir}/images/.c{cand:09d}.tif", f"{workdir}/labels/.c{cand:09d}.tif"


def keep_empty_draw(seed: int, image_index: int, col: int, row: int) -> float:
    """A uniform number per window that depends only on the seed and the window."""
    return float(np.random.default_rng([seed, image_index, row, col]).random())


def process_batch(job: tuple[int, str, list[tuple[int, int, int]]]) -> list[ChipResult]:
    """Cut the windows ``[(cand, col_off, row_off), ...]`` of image ``job[1]``."""
    import rasterio

    image_index, address, windows = job
    params: ChipParams = _STATE["params"]
    labels: LabelSource = _STATE["labels"]
    datasets = _STATE["datasets"]
    if address not in datasets:
        from geopsp.core.sources import open_raster

        datasets[address] = open_raster(address)
    ds = datasets[address]
    out = []
    from rasterio.errors import RasterioIOError

    from geopsp.core.sources import read_error

    # One GDAL environment for the batch: rasterio would otherwise set one up and tear it down
    # around every open/read/rasterize call, a large share of the time for small chips.
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):  # chip masks inside the chip files
        for cand, col, row in windows:
            try:
                out.append(_one_chip(ds, image_index, cand, col, row, labels, params))
            except GeopspError:
                raise
            except RasterioIOError as exc:  # pixels unreadable: name the cause GDAL gave
                raise read_error(address, exc, col, row) from None
            except Exception as exc:  # GDAL/OGR failures mid-run: one clear line, no traceback
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(
                    f"{address}: failed on the window at column {col}, row {row}: {msg}"
                ) from None
    return out


def _read_window(ds, bands, col, row, size) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Chip pixels (padded past the edge), validity masks and the in-raster pixel count.

    Two masks, both False in the padding: ``data`` where classify reads data
    (:func:`geopsp.core.normalize.has_data`), and ``full`` where every band has data (the
    pixels that get labels and enter the band statistics).
    """
    from rasterio.enums import MaskFlags
    from rasterio.windows import Window

    nodata = ds.nodata if ds.nodata is not None else 0
    img = np.full((len(bands), size, size), nodata, dtype=ds.dtypes[bands[0] - 1])
    data = np.zeros((size, size), dtype=bool)
    full = np.zeros((size, size), dtype=bool)
    w, h = min(size, ds.width - col), min(size, ds.height - row)
    win = Window(col, row, w, h)
    img[:, :h, :w] = ds.read(list(bands), window=win)
    inside = img[:, :h, :w]
    masks = None
    if any(flags != [MaskFlags.all_valid] for flags in (ds.mask_flag_enums[b - 1] for b in bands)):
        masks = ds.read_masks(list(bands), window=win) > 0
    data[:h, :w] = has_data(inside, masks)
    full[:h, :w] = True if masks is None else masks.all(axis=0)
    if np.issubdtype(img.dtype, np.floating):  # NaN is nodata even when not declared
        full[:h, :w] &= np.isfinite(inside).all(axis=0)
    return img, data, full, w * h


def _one_chip(ds, image_index, cand, col, row, labels, params: ChipParams) -> ChipResult:
    from rasterio.windows import Window, transform

    size = params.chip_size
    tr = transform(Window(col, row, size, size), ds.transform)
    label = rasterize_labels(
        labels, ds.crs, tr, size, size, unlabeled=params.unlabeled, all_touched=params.all_touched
    )
    keep = (
        params.keep_empty > 0
        and keep_empty_draw(params.seed, image_index, col, row) < params.keep_empty
    )
    if not keep and not _has_labels(label):
        return ChipResult(cand, "empty")  # decided before reading any imagery
    img, has_data, valid, inside = _read_window(ds, params.bands, col, row, size)
    nodata_fraction = float(inside - valid.sum()) / inside if inside else 1.0
    if nodata_fraction > params.max_nodata:
        return ChipResult(cand, "nodata", nodata_fraction)
    label[~valid] = IGNORE
    if not keep and not _has_labels(label):
        return ChipResult(cand, "empty", nodata_fraction)
    img_path, lab_path = temp_names(params.workdir, cand)
    _write_chip(ds, img, has_data, label, tr, params, img_path, lab_path)
    counts = np.bincount(label.ravel(), minlength=256)
    return ChipResult(
        cand, "written", nodata_fraction, counts, BandStats.from_pixels(img[:, valid])
    )


def _has_labels(label: np.ndarray) -> bool:
    """True when a chip holds a pixel of a class other than background (0) and ignore (255)."""
    return bool(np.any((label > 0) & (label < IGNORE)))


def _write_chip(
    ds, img, has_data, label, tr, params: ChipParams, img_path: str, lab_path: str
) -> None:
    """Write the image chip (with an internal mask wherever a pixel has no data, so that
    padding and the source's masks survive without a nodata value) and the label chip."""
    import rasterio

    size = params.chip_size
    base = {"driver": "GTiff", "width": size, "height": size, "crs": ds.crs, "transform": tr}
    base["compress"] = "deflate"
    if size % 16 == 0:  # GeoTIFF tiles must be multiples of 16; otherwise strips
        base.update(tiled=True, blockxsize=min(size, 256), blockysize=min(size, 256))
    with rasterio.open(
        img_path, "w", **base, count=img.shape[0], dtype=img.dtype, nodata=ds.nodata
    ) as dst:
        dst.write(img)
        if not has_data.all():
            dst.write_mask(np.where(has_data, 255, 0).astype(np.uint8))
        descr = [ds.descriptions[b - 1] for b in params.bands]
        if any(descr):
            dst.descriptions = tuple(d or "" for d in descr)
    with rasterio.open(lab_path, "w", **base, count=1, dtype="uint8", nodata=IGNORE) as dst:
        dst.write(label, 1)
        dst.write_colormap(1, {c.value: (*c.color, 255) for c in params.classes})
