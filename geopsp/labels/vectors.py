"""Reading label files with clear errors: vector features (repairing invalid geometries) and
the values present in a label raster (block by block, so memory stays bounded)."""

from __future__ import annotations

import logging

import numpy as np

from geopsp.core.errors import InputError, UsageError

log = logging.getLogger(__name__)

_POLYGONAL = {"Polygon", "MultiPolygon"}


def _polygonal_part(geom):
    """The polygons of a repaired geometry (make_valid can return collections with lines)."""
    import shapely

    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in _POLYGONAL:
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in _POLYGONAL]
    if not parts:
        return None
    return shapely.multipolygons(parts) if len(parts) > 1 else parts[0]


def read_vector(address: str, layer: str, class_field: str | None, buffer: float | None):
    """Read the geometries (and class field) of one vector layer.

    Returns
    -------
    (geometries, values, crs, repaired, skipped)
        Geometries as an object array of shapely geometries (invalid ones repaired), the class
        field values (None without a field), the layer CRS, and the counts of repaired and
        skipped (null, empty or unrepairable) geometries.
    """
    import pyogrio

    class_field = _class_field(address, layer, class_field)
    try:
        df = pyogrio.read_dataframe(
            address, layer=layer, columns=[class_field] if class_field else []
        )
    except Exception as exc:
        raise InputError(f"{address}: cannot read features ({_first_line(exc)})") from exc
    if len(df) == 0:
        raise InputError(f"{address}: layer {layer!r} has no features")
    geoms = np.asarray(df.geometry.values, dtype=object)
    values = df[class_field].to_numpy() if class_field else None
    if values is not None:
        missing = np.asarray(df[class_field].isna().to_numpy(), dtype=bool)
        if missing.any():
            log.warning(
                "%d feature(s) without a %r value are not used", int(missing.sum()), class_field
            )
            geoms, values = geoms[~missing], values[~missing]
    keep, repaired, skipped = _repair(address, geoms, buffer)
    if not keep.any():
        raise InputError(f"{address}: layer {layer!r} has no usable geometries")
    return geoms[keep], (values[keep] if values is not None else None), df.crs, repaired, skipped


def _class_field(address: str, layer: str, class_field: str | None) -> str | None:
    """The layer's spelling of ``--class-field``, after checking the layer has a CRS."""
    import pyogrio

    try:
        info = pyogrio.read_info(address, layer=layer)
    except Exception as exc:
        raise InputError(f"{address}: cannot read layer {layer!r} ({_first_line(exc)})") from exc
    if info.get("crs") is None:
        raise InputError(
            f"{address}: the labels have no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:4326 out.gpkg {address})"
        )
    if class_field is None:
        return None
    fields = [str(f) for f in info["fields"]]
    if class_field not in fields:
        # OGR matches field names case-insensitively (and shapefiles/DBF often upper-case
        # them), so --class-field class finds CLASS when that match is unambiguous.
        same = [f for f in fields if f.lower() == class_field.lower()]
        if len(same) == 1:
            log.info("--class-field %r: using field %r", class_field, same[0])
            return same[0]
        shown = ", ".join(fields) if fields else "none"
        raise UsageError(f"--class-field {class_field!r} not found in {address}; fields: {shown}")
    return class_field


def _repair(address: str, geoms: np.ndarray, buffer: float | None) -> tuple[np.ndarray, int, int]:
    """Repair invalid geometries in place; the mask of usable ones and the repaired and skipped
    counts. Lines and points without ``buffer`` are a usage error."""
    import shapely

    null = np.array([g is None or g.is_empty for g in geoms], dtype=bool)
    skipped = int(null.sum())
    kinds = np.array(["" if g is None else g.geom_type for g in geoms], dtype=object)
    linear = ~null & ~np.isin(kinds, list(_POLYGONAL))
    if linear.any() and not buffer:
        types = ", ".join(sorted(set(kinds[linear])))
        raise UsageError(
            f"{address} has {int(linear.sum())} {types} feature(s); give --buffer DIST "
            "(in the raster CRS units) to turn lines and points into areas"
        )
    invalid = ~null & ~np.array([g is None or g.is_valid for g in geoms], dtype=bool)
    repaired = 0
    for i in np.flatnonzero(invalid):
        fixed = shapely.make_valid(geoms[i])
        if kinds[i] in _POLYGONAL:
            fixed = _polygonal_part(fixed)
        if fixed is None or fixed.is_empty:
            null[i] = True
            skipped += 1
        else:
            geoms[i] = fixed
            repaired += 1
    if repaired or skipped:
        log.warning("%s: %d invalid geometries repaired, %d skipped", address, repaired, skipped)
    return ~null, repaired, skipped


def read_label_raster_values(ds) -> np.ndarray:
    """The distinct values of band 1 of a label raster, nodata excluded, read block by block."""
    if ds.dtypes[0] not in (
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "int64",
        "uint64",
    ):
        raise InputError(
            f"{ds.name}: a label raster must hold integer class values, not {ds.dtypes[0]}"
        )
    seen: set[int] = set()
    for _, window in ds.block_windows(1):
        block = ds.read(1, window=window)
        if ds.nodata is not None:
            block = block[block != ds.nodata]
        if block.dtype == np.uint8:
            seen.update(np.flatnonzero(np.bincount(block.ravel(), minlength=256)).tolist())
        else:
            seen.update(np.unique(block).tolist())
        if len(seen) > 1000:  # clearly not a class raster; stop scanning
            break
    return np.array(sorted(seen), dtype=np.int64)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
