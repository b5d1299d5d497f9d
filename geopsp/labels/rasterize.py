"""Label sources: read label vectors or label rasters and burn them onto any raster grid.

Used by ``export-chips`` (labels per chip) and ``evaluate`` (a reference on a prediction's grid).

Overlap rule (vectors): where features overlap, the **smaller** feature wins (its area measured
in the labels' own CRS); equal areas are resolved by the larger class value, then by the later
feature in the file. So a building drawn inside a land-use polygon keeps its class, and the
result never depends on the worker count or the chip.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geopsp.core.classes import IGNORE, ClassInfo
from geopsp.core.errors import InputError, UsageError
from geopsp.labels.class_rules import (
    check_unlabeled,
    classes_from_field,
    classes_from_raster_values,
)
from geopsp.labels.raster import resample_label_raster
from geopsp.labels.vectors import read_label_raster_values, read_vector

log = logging.getLogger(__name__)

POLYGON_TYPE_IDS = (3, 6)  # shapely type ids of Polygon and MultiPolygon


@dataclass
class LabelSource:
    """Labels ready to rasterize onto any grid; picklable (handles are reopened per process).

    Attributes
    ----------
    kind : str
        ``"vector"`` or ``"raster"``.
    address : str
        The labels as given.
    classes : list of ClassInfo
        Class table sorted by value (0 "background" included with ``unlabeled="background"``).
    invalid_repaired, invalid_skipped : int
        Invalid vector geometries repaired with ``make_valid`` / dropped (null, empty, unrepairable).
    """

    kind: str
    address: str
    classes: list[ClassInfo]
    crs: Any = None
    layer: str | None = None
    class_field: str | None = None
    buffer: float | None = None
    buffer_polygons: bool = True  # False: the buffer widens only lines and points
    invalid_repaired: int = 0
    invalid_skipped: int = 0
    geometries: np.ndarray | None = None  # shapely geometries in ``crs``, in drawing order
    values: np.ndarray | None = None  # uint8 class value per geometry
    nodata: float | None = None  # label raster nodata
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}  # open datasets and per-CRS trees are rebuilt in each process
        return state

    @property
    def feature_count(self) -> int:
        return 0 if self.geometries is None else len(self.geometries)

    def _vector_for(self, crs) -> tuple[np.ndarray, np.ndarray, Any]:
        """Geometries reprojected (and buffered) to ``crs``, their values and an STRtree."""
        import geopandas as gpd
        import shapely

        key = ("vec", _crs_key(crs))
        if key not in self._cache:
            geoms = gpd.GeoSeries(self.geometries, crs=self.crs).to_crs(crs).values
            geoms = np.asarray(geoms, dtype=object)
            b = shapely.bounds(geoms)
            ok = ~shapely.is_empty(geoms) & np.isfinite(b).all(axis=1)
            geoms, values = geoms[ok], self.values[ok]
            if self.buffer:
                geoms = buffered(geoms, self.buffer, polygons=self.buffer_polygons)
            self._cache[key] = (geoms, values, shapely.STRtree(geoms))
        return self._cache[key]

    def _dataset(self):
        if "ds" not in self._cache:
            from geopsp.core.sources import open_raster

            self._cache["ds"] = open_raster(self.address)
        return self._cache["ds"]

    def touches(self, crs, bounds: tuple[float, float, float, float]) -> bool:
        """Whether any label lies inside ``bounds`` (left, bottom, right, top) in ``crs``."""
        import shapely

        if self.kind == "vector":
            _, _, tree = self._vector_for(crs)
            return len(tree.query(shapely.box(*bounds))) > 0
        from rasterio.warp import transform_bounds

        ds = self._dataset()
        try:
            lb = transform_bounds(ds.crs, crs, *ds.bounds, densify_pts=21)
        except Exception:  # CRS pair with no valid transform: the extents cannot overlap
            return False
        return lb[0] < bounds[2] and bounds[0] < lb[2] and lb[1] < bounds[3] and bounds[1] < lb[3]


def buffered(geoms: np.ndarray, distance: float, polygons: bool = True) -> np.ndarray:
    """``geoms`` buffered by ``distance``: all of them, or (``polygons`` False) only lines and
    points, which have no area of their own."""
    import shapely

    widen = np.ones(len(geoms), dtype=bool)
    if not polygons:
        widen = ~np.isin(shapely.get_type_id(geoms), POLYGON_TYPE_IDS)
    out = np.array(geoms, dtype=object)
    out[widen] = shapely.buffer(out[widen], distance)
    return out


def _crs_key(crs) -> str:
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


def _is_vector(address: str) -> list[str] | None:
    """The layer names when OGR reads ``address`` as a vector, else None."""
    import pyogrio

    try:
        layers = pyogrio.list_layers(address)
    except Exception:
        return None
    return [str(n) for n in layers[:, 0]] if len(layers) else None


def open_labels(
    address: str | os.PathLike,
    *,
    layer: str | None = None,
    class_field: str | None = None,
    classes: list[ClassInfo] | None = None,
    buffer: float | None = None,
    buffer_polygons: bool = True,
    unlabeled: str = "background",
) -> LabelSource:
    """Open labels: any OGR vector (polygons; lines/points with ``buffer``) or a label raster.

    Parameters
    ----------
    address : str or path
        Vector (GeoPackage, Shapefile, GeoJSON, FlatGeobuf...) or raster of class values.
    layer : str, optional
        Layer of a multi-layer vector (required when there are several).
    class_field : str, optional
        Attribute holding the class (integers are values, strings get 1..N sorted).
    classes : list of ClassInfo, optional
        A fixed class table; field values are matched to it by value or (strings) by name.
    buffer : float, optional
        Buffer distance in the units of the CRS the labels are rasterized in.
    buffer_polygons : bool
        Buffer every feature (True) or only lines and points (False).
    unlabeled : str
        ``background`` adds class 0 to the table; ``ignore`` does not.

    Returns
    -------
    LabelSource
    """
    check_unlabeled(unlabeled)
    addr = os.fspath(address)
    if "://" not in addr and not addr.startswith("/vsi") and not os.path.exists(addr):
        raise InputError(f"{addr}: no such file")
    layers = _is_vector(addr)
    if layers is not None:
        src = _open_vector(addr, layers, layer, class_field, classes, buffer, unlabeled)
        src.buffer_polygons = buffer_polygons
        return src
    if layer is not None or class_field is not None:
        raise UsageError(
            f"{addr} is not a vector; --layer and --class-field apply to vector labels"
        )
    from geopsp.core.sources import open_raster

    try:
        ds = open_raster(addr)
    except InputError as exc:
        raise InputError(f"{addr}: not a vector OGR reads nor a raster GDAL reads") from exc
    with ds:
        if ds.crs is None:
            raise InputError(
                f"{addr}: label raster has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX)"
            )
        present = read_label_raster_values(ds)
        table = classes_from_raster_values(present, classes, unlabeled, addr)
        return LabelSource("raster", addr, table, crs=ds.crs, nodata=ds.nodata)


def _open_vector(addr, layers, layer, class_field, classes, buffer, unlabeled) -> LabelSource:
    if layer is None and len(layers) > 1:
        raise UsageError(
            f"{addr} has {len(layers)} layers ({', '.join(layers)}); choose one with --layer"
        )
    if layer is not None and layer not in layers:
        raise UsageError(f"{addr} has no layer {layer!r}; layers: {', '.join(layers)}")
    name = layer or layers[0]
    geoms, values, crs, repaired, skipped = read_vector(addr, name, class_field, buffer)
    table, feature_values = classes_from_field(
        values,
        count=len(geoms),
        field=class_field,
        given=classes,
        unlabeled=unlabeled,
        default_name=name,
    )
    import shapely

    # Drawing order implements the overlap rule: big first, so smaller features end on top.
    area = shapely.area(geoms)
    order = np.lexsort((np.arange(len(geoms)), feature_values, -area))
    return LabelSource(
        "vector",
        addr,
        table,
        crs=crs,
        layer=name,
        class_field=class_field,
        buffer=buffer,
        invalid_repaired=repaired,
        invalid_skipped=skipped,
        geometries=geoms[order],
        values=feature_values[order],
    )


def rasterize_labels(
    src: LabelSource,
    crs,
    transform,
    width: int,
    height: int,
    *,
    unlabeled: str = "background",
    all_touched: bool = False,
) -> np.ndarray:
    """Burn the labels onto a grid: uint8 ``(height, width)`` class values, 255 = ignore.

    Vectors are reprojected to ``crs`` (once per CRS), the features touching the grid are
    found through a spatial index and drawn in the overlap-rule order; pixels outside every
    feature are 0 (``background``) or 255 (``ignore``). A label raster is resampled with nearest
    neighbour onto the grid; its nodata and everything outside its extent become 255.
    """
    check_unlabeled(unlabeled)
    fill = 0 if unlabeled == "background" else IGNORE
    if src.kind == "vector":
        return _rasterize_vector(src, crs, transform, width, height, fill, all_touched)
    return resample_label_raster(src, crs, transform, width, height, fill)


def _rasterize_vector(src, crs, transform, width, height, fill, all_touched) -> np.ndarray:
    import shapely
    from rasterio.features import rasterize

    geoms, values, tree = src._vector_for(crs)
    t = transform  # corners of the grid (explicit: affine's `*`/`@` differ between versions)
    corners = np.array(
        [
            (t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f)
            for c in (0, width)
            for r in (0, height)
        ]
    )
    (xmin, ymin), (xmax, ymax) = corners.min(axis=0), corners.max(axis=0)
    idx = np.sort(tree.query(shapely.box(xmin, ymin, xmax, ymax)))
    if len(idx) == 0:
        return np.full((height, width), fill, dtype=np.uint8)
    # Clip to the grid plus a 2-pixel margin: the clip edges fall outside the grid, so the burnt
    # pixels are unchanged, but huge polygons no longer cost their full vertex count per chip.
    m = 2 * max(abs(transform.a) + abs(transform.b), abs(transform.d) + abs(transform.e))
    clipped = shapely.clip_by_rect(geoms[idx], xmin - m, ymin - m, xmax + m, ymax + m)
    keep = ~shapely.is_empty(clipped)
    if not keep.any():
        return np.full((height, width), fill, dtype=np.uint8)
    return rasterize(
        zip(clipped[keep], values[idx][keep].tolist(), strict=True),
        out_shape=(height, width),
        transform=transform,
        fill=fill,
        all_touched=all_touched,
        dtype="uint8",
    )
