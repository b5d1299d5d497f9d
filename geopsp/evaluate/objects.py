"""Object-level accuracy: predicted polygons matched one-to-one to reference polygons by IoU.

The SpaceNet building metric: per class, every pair of a predicted and a reference object
whose intersection over union is at least the threshold is a candidate; candidates are taken
in descending IoU (ties: the lower prediction index, then the lower reference index) and a
pair is kept when neither object is matched yet. Kept pairs are true positives, unmatched
predictions false positives, unmatched references false negatives. Objects are the features
of a vector file, or the connected regions of each class of a raster (4-connected, as
``geopsp vectorize`` writes them). Value 0 (background) is never an object.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import shapely

from geopsp.core.classes import IGNORE
from geopsp.core.errors import InputError, UsageError

log = logging.getLogger(__name__)
DEFAULT_IOU = 0.5


def iou_pairs(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` and IoU of every intersecting pair of ``pred[i]`` and ``ref[j]``."""
    if not len(pred) or not len(ref):
        return np.empty(0, int), np.empty(0, int), np.empty(0)
    j, i = shapely.STRtree(pred).query(ref, predicate="intersects")
    inter = shapely.area(shapely.intersection(pred[i], ref[j]))
    union = shapely.area(pred[i]) + shapely.area(ref[j]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return i, j, iou


def match(pred: np.ndarray, ref: np.ndarray, threshold: float = DEFAULT_IOU) -> list[tuple]:
    """Greedy one-to-one matching at ``IoU >= threshold``: ``[(pred_i, ref_j, iou), ...]``."""
    i, j, iou = iou_pairs(pred, ref)
    keep = iou >= threshold
    i, j, iou = i[keep], j[keep], iou[keep]
    order = np.lexsort((j, i, -iou))
    used_p, used_r, out = set(), set(), []
    for k in order:
        if i[k] not in used_p and j[k] not in used_r:
            used_p.add(i[k])
            used_r.add(j[k])
            out.append((int(i[k]), int(j[k]), float(iou[k])))
    return out


@dataclass
class ObjectScores:
    """Object counts and scores of one class (or of all classes pooled)."""

    value: int | None
    name: str
    predicted: int
    reference: int
    tp: int
    mean_iou: float

    @property
    def fp(self) -> int:
        return self.predicted - self.tp

    @property
    def fn(self) -> int:
        return self.reference - self.tp

    @property
    def precision(self) -> float:
        return self.tp / self.predicted if self.predicted else math.nan

    @property
    def recall(self) -> float:
        return self.tp / self.reference if self.reference else math.nan

    @property
    def f1(self) -> float:
        n = self.predicted + self.reference
        return 2 * self.tp / n if n else math.nan

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "value": self.value, "name": self.name, "predicted": self.predicted,
            "reference": self.reference, "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "precision": num(self.precision), "recall": num(self.recall), "f1": num(self.f1),
            "mean_iou": num(self.mean_iou),
        }  # fmt: skip


@dataclass
class ObjectResult:
    """Per-class object scores, all classes pooled, and the IoU threshold."""

    per_class: list[ObjectScores]
    overall: ObjectScores
    iou: float

    def to_dict(self) -> dict:
        return {
            "iou_threshold": self.iou,
            "overall": self.overall.to_dict(),
            "per_class": [s.to_dict() for s in self.per_class],
        }


def score_objects(
    pred: np.ndarray, pred_values: np.ndarray, ref: np.ndarray, ref_values: np.ndarray,
    names: dict[int, str], threshold: float = DEFAULT_IOU,
) -> ObjectResult:  # fmt: skip
    """Match objects class by class and score them (geometries in one CRS)."""
    if not 0 < threshold <= 1:
        raise UsageError(f"--iou must be in (0, 1], got {threshold}")
    values = sorted(
        (set(map(int, pred_values)) | set(map(int, ref_values))) - {0, IGNORE}
    )  # fmt: skip
    per_class, ious = [], []
    for v in values:
        p, r = pred[pred_values == v], ref[ref_values == v]
        m = match(p, r, threshold)
        iou = [x[2] for x in m]
        ious += iou
        mean = float(np.mean(iou)) if iou else math.nan
        per_class.append(ObjectScores(v, names.get(v, str(v)), len(p), len(r), len(m), mean))
    overall = ObjectScores(
        None, "all", sum(s.predicted for s in per_class), sum(s.reference for s in per_class),
        sum(s.tp for s in per_class), float(np.mean(ious)) if ious else math.nan,
    )  # fmt: skip
    return ObjectResult(per_class, overall, threshold)


def _vector_objects(address: str, layer: str | None):
    """Features of a predicted vector: geometries, ``class`` values (1 without), CRS, table."""
    import geopandas as gpd
    import pyogrio

    try:
        gdf = pyogrio.read_dataframe(address, layer=layer)
    except Exception as exc:  # any OGR failure is one line about the input
        raise InputError(f"{address}: not a raster GDAL reads nor a vector OGR reads") from exc
    if gdf.crs is None:
        raise InputError(f"{address}: the predicted polygons have no CRS")
    gdf = gdf[~gdf.geometry.isna() & ~gdf.geometry.is_empty]
    geoms = np.asarray(shapely.make_valid(gdf.geometry.values.to_numpy()), dtype=object)
    if "class" in gdf.columns:
        values = gdf["class"].to_numpy(dtype=np.int64)
        names = gdf["class_name"] if "class_name" in gdf.columns else gdf["class"].astype(str)
        table = {int(v): str(n) for v, n in zip(values, names, strict=True)}
    else:
        values, table = np.ones(len(gdf), dtype=np.int64), {}
    return geoms, values, gpd.GeoSeries([], crs=gdf.crs).crs, table


def _reference_objects(reference, layer, class_field, table, buffer, crs):
    """The reference's label source, its objects in ``crs`` and their class values."""
    import geopandas as gpd

    from geopsp.labels.rasterize import buffered, open_labels
    from geopsp.vectorize.regions import raster_regions

    source = open_labels(reference, layer=layer, class_field=class_field,
                         classes=table or None, buffer=buffer)  # fmt: skip
    if source.kind == "vector":
        ref = gpd.GeoSeries(source.geometries, crs=source.crs).to_crs(crs).values.to_numpy()
        if buffer:  # as for pixel scores: lines and points become areas, polygons stay
            ref = buffered(ref, buffer, polygons=False)
        return source, ref, np.asarray(source.values, dtype=np.int64)
    r = raster_regions(reference, crs)
    return source, r["geometries"], r["values"]


def is_raster(address: str) -> bool:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(address) as ds:
            return ds.count > 0
    except RasterioIOError:
        return False


def evaluate_objects(
    prediction: str,
    reference: str,
    *,
    class_field: str | None = None,
    layer: str | None = None,
    buffer: float | None = None,
    iou: float = DEFAULT_IOU,
) -> ObjectResult:
    """Object-level scores of ``prediction`` against ``reference``, per class.

    Parameters
    ----------
    prediction : str
        Predicted objects: a class raster (its connected regions) or a polygon vector (its
        features; the column ``class`` holds class values, as ``geopsp vectorize`` writes
        them; without it every feature is the reference's single class).
    reference : str
        Reference objects: a vector (each feature one object; ``class_field``/``layer`` as in
        pixel evaluation) or a label raster (its connected regions). With a raster
        prediction, reference objects whose interior point lies outside it are left out.
    buffer : float, optional
        Buffer line/point references by this distance (prediction CRS units).
    iou : float
        IoU from which a predicted and a reference object can match (SpaceNet: 0.5).

    Returns
    -------
    ObjectResult
    """
    from geopsp.core.classes import from_dicts
    from geopsp.vectorize.regions import raster_regions

    if not 0 < iou <= 1:
        raise UsageError(f"--iou must be in (0, 1], got {iou}")
    extent = None
    if is_raster(prediction):
        r = raster_regions(prediction)
        pred, pred_values, crs, table, extent = (
            r["geometries"], r["values"], r["crs"], r["classes"], r["outline"]
        )  # fmt: skip
    else:
        pred, pred_values, crs, names = _vector_objects(prediction, None)
        items = [{"value": v, "name": n} for v, n in sorted(names.items()) if 0 <= v < IGNORE]
        table = from_dicts(items) if items else None
    source, ref, ref_values = _reference_objects(reference, layer, class_field, table, buffer, crs)
    if extent is not None:  # only reference objects in the mapped area can be found
        inside = shapely.within(shapely.point_on_surface(ref), extent)
        ref, ref_values = ref[inside], ref_values[inside]
    if not table and source.classes and len(set(map(int, pred_values))) <= 1:
        # A vector without a class column: its objects are the reference's single class.
        only = [c.value for c in source.classes if c.value != 0]
        if len(only) == 1:
            pred_values = np.full(len(pred), only[0], dtype=np.int64)
    names = {c.value: c.name for c in [*(source.classes or []), *(table or [])]}
    result = score_objects(pred, pred_values, ref, ref_values, names, iou)
    if not result.per_class:
        raise InputError(f"no objects in {prediction} nor in {reference} (besides background)")
    return result


def format_objects(result: ObjectResult) -> str:
    """A plain-text table of the object scores."""

    def f(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.4f}"

    head = (f"{'class':<16}  {'value':>5}  {'pred':>6}  {'ref':>6}  {'TP':>6}  {'FP':>6}  "
            f"{'FN':>6}  {'precision':>9}  {'recall':>7}  {'F1':>7}  {'mean IoU':>8}")  # fmt: skip
    lines = [f"Objects (one-to-one matches at IoU >= {result.iou:g})", head, "-" * len(head)]
    for s in [*result.per_class, result.overall]:
        v = "" if s.value is None else str(s.value)
        lines.append(
            f"{s.name[:16]:<16}  {v:>5}  {s.predicted:>6}  {s.reference:>6}  {s.tp:>6}  "
            f"{s.fp:>6}  {s.fn:>6}  {f(s.precision):>9}  {f(s.recall):>7}  {f(s.f1):>7}  "
            f"{f(s.mean_iou):>8}"
        )
    return "\n".join(lines)
