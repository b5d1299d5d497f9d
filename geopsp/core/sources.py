"""Opening inputs with clear errors: any GDAL raster address, band selections."""

from __future__ import annotations

import os
from collections.abc import Sequence

from geopsp.core.errors import InputError, UsageError


def open_raster(address: str | os.PathLike):
    """Open a raster with rasterio, turning every failure into one clear :class:`InputError`.

    Accepts anything GDAL reads: local paths, ``/vsicurl/...``, VRT, ``GTIFF_DIR:...``.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    addr = os.fspath(address)
    if "://" not in addr and not addr.startswith("/vsi") and ":" not in addr[2:]:
        if not os.path.exists(addr):
            raise InputError(f"{addr}: no such file")
        if os.path.isfile(addr) and os.path.getsize(addr) == 0:
            raise InputError(f"{addr}: file is empty (0 bytes)")
    try:
        src = rasterio.open(addr)
    except RasterioIOError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InputError(f"{addr}: not a raster GDAL can read ({msg})") from exc
    if src.count == 0:
        src.close()
        raise InputError(f"{addr}: raster has no bands")
    if any(dt.startswith("complex") for dt in src.dtypes):
        src.close()
        raise InputError(
            f"{addr}: complex-valued rasters are not supported; convert to real values first"
        )
    if src.crs is None and src.transform.is_identity and (src.gcps[0] or src.rpcs):
        # GCP/RPC-only georeferencing has no pixel grid: chips, labels and class maps would all
        # come out without georeferencing (silently useless in a GIS), so refuse up front.
        kind, opt = ("ground control points (GCPs)", "") if src.gcps[0] else ("RPCs", "-rpc ")
        src.close()
        raise InputError(
            f"{addr}: georeferenced only by {kind}, not by a geotransform; "
            f"warp it onto a grid first (gdalwarp {opt}-r bilinear in.tif out.tif)"
        )
    return src


def read_error(address: str, exc: Exception, col: int, row: int) -> InputError:
    """One clear line for a GDAL failure while reading pixels (truncated or corrupt files).

    rasterio's own message is a generic "Read failed"; GDAL's reason is in the chained error.
    """
    cause = exc.__cause__ or exc.__context__ or exc
    text = (str(cause).strip() or str(exc).strip() or type(exc).__name__).splitlines()[0]
    return InputError(
        f"{address}: cannot read the pixels at column {col}, row {row}; the file is truncated "
        f"or corrupt ({text})"
    )


def parse_bands(text: str | Sequence[int] | None) -> list[int] | None:
    """Parse ``-b/--bands`` (``"1,2,3"``, 1-based as in GDAL) into a list of ints, or None."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        try:
            bands = [int(t) for t in text.replace(" ", "").split(",") if t]
        except ValueError as exc:
            raise UsageError(
                f"--bands must be comma-separated band numbers such as 1,2,3, got {text!r}"
            ) from exc
    else:
        bands = [int(b) for b in text]
    if not bands:
        raise UsageError("--bands is empty")
    if any(b < 1 for b in bands):
        raise UsageError(f"--bands are 1-based band numbers, got {bands}")
    return bands


def check_bands(bands: list[int] | None, count: int, address: str) -> list[int]:
    """Return ``bands`` (or all bands) after checking each exists in a raster of ``count`` bands."""
    if bands is None:
        return list(range(1, count + 1))
    bad = [b for b in bands if b > count]
    if bad:
        raise UsageError(
            f"--bands {','.join(map(str, bad))} out of range: {address} has {count} band(s)"
        )
    return bands
