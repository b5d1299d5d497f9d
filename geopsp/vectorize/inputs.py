"""Opening the inputs of ``geopsp vectorize`` with clear errors, and reading them by block."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from geopsp.core.errors import InputError, UsageError
from geopsp.core.sources import open_raster, read_error
from geopsp.vectorize.polygonize import Block

log = logging.getLogger(__name__)

# Types rasterio.features.shapes polygonizes; other integer types are cast when values fit.
_SHAPES_TYPES = ("uint8", "uint16", "int16", "int32")


def open_class_raster(address: str):
    """Open a single-band integer raster with a CRS; anything else is a one-line error."""
    src = open_raster(address)
    try:
        if src.count != 1:
            raise InputError(
                f"{address}: not a class raster ({src.count} bands; a class raster has one "
                "band of integer class values); extract one with gdal_translate -b N"
            )
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError(
                f"{address}: not a class raster (values are {src.dtypes[0]}; a class raster "
                "holds integer class values)"
            )
        if src.crs is None:
            raise InputError(f"{address}: the raster has no CRS; assign one (gdal_edit.py -a_srs)")
    except BaseException:
        src.close()
        raise
    return src


def parse_classes(text: str | Sequence | None, table) -> list[int] | None:
    """``--classes`` ("1,3" or class names from the raster's table) as a list of values."""
    if text is None or text == "" or text == ():
        return None
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    by_name = {c.name.lower(): c.value for c in table or []}
    values = []
    for item in (t.strip() for t in items if t.strip()):
        if item.lstrip("-").isdigit():
            values.append(int(item))
        elif item.lower() in by_name:
            values.append(by_name[item.lower()])
        else:
            known = ", ".join(sorted(by_name)) or "none (the raster has no class table)"
            raise UsageError(f"--classes: unknown class {item!r}; class names: {known}")
    return sorted(set(values))


def open_confidence(address: str, src):
    """Open the ``--confidence`` raster and check it lies on the class raster's grid."""
    conf = open_raster(address)
    if (conf.width, conf.height) != (src.width, src.height) or not conf.transform.almost_equals(
        src.transform
    ):
        conf.close()
        raise InputError(
            f"{address}: the confidence raster is not on the grid of {src.name} "
            f"({conf.width}x{conf.height} vs {src.width}x{src.height} pixels, or another "
            "transform); give the confidence raster written with the class raster"
        )
    return conf


def _read(ds, window, band: int = 1):
    from rasterio.errors import RasterioIOError

    try:
        return ds.read(band, window=window), ds.read_masks(band, window=window)
    except RasterioIOError as exc:
        raise read_error(ds.name, exc, int(window.col_off), int(window.row_off)) from None


def block_reader(
    src, classes: list[int] | None, nodata: float | None, conf=None
) -> Callable[[int, int, int, int], Block]:
    """A ``read(col, row, w, h)`` giving :class:`Block` s of class values and validity.

    Valid pixels: not nodata (``nodata`` if given, else the raster's nodata/mask), and in
    ``classes`` when given. Confidence values of uint8 rasters (geopsp's ``value/255``) are
    scaled to 0..1.
    """
    from rasterio.windows import Window

    dtype = np.dtype(src.dtypes[0])
    scale = 1 / 255 if conf is not None and conf.dtypes[0] == "uint8" else 1.0

    def read(col: int, row: int, w: int, h: int) -> Block:
        win = Window(col, row, w, h)
        values, mask = _read(src, win)
        valid = values != nodata if nodata is not None else mask > 0
        if classes is not None:
            valid &= np.isin(values, classes)
        if dtype.name not in _SHAPES_TYPES:
            if values.size and (values.min() < -(2**31) or values.max() >= 2**31):
                raise InputError(f"{src.name}: class values beyond the int32 range")
            values = values.astype(np.int32)
        block = Block(col, row, values, valid)
        if conf is not None:
            cv, cm = _read(conf, win)
            block.confidence, block.conf_valid = cv.astype(np.float64) * scale, cm > 0
        return block

    return read
