"""Files that describe a chip folder: the chip index (GeoPackage), classes.json, stats.json
and the ArcGIS "Classified_Tiles" files (written by :mod:`geopsp.chips.arcgis`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geopsp.chips import arcgis
from geopsp.core.classes import IGNORE, ClassInfo, save_classes

# A fixed GeoPackage timestamp keeps the index byte-identical between runs.
_GPKG_DATE = "2000-01-01T00:00:00.000Z"


@dataclass
class ChipRecord:
    """One written chip, as the index lists it."""

    chip_id: int
    source_index: int
    col_off: int
    row_off: int
    size: int
    nodata_fraction: float
    counts: np.ndarray  # pixels per label value (256,)

    @property
    def name(self) -> str:
        return f"{self.chip_id:09d}.tif"


def footprints(records: list[ChipRecord], sources: list[dict]) -> list:
    """Chip outlines in EPSG:4326 (edges densified so they stay exact after reprojection)."""
    import geopandas as gpd
    import shapely

    out: list = [None] * len(records)
    by_source: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_source.setdefault(r.source_index, []).append(i)
    for si, idx in by_source.items():
        t = sources[si]["transform"]
        polys = []
        for i in idx:
            r = records[i]
            corners = [(r.col_off, r.row_off), (r.col_off + r.size, r.row_off)]
            corners += [(r.col_off + r.size, r.row_off + r.size), (r.col_off, r.row_off + r.size)]
            polys.append(
                shapely.Polygon(
                    [(t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f) for c, r in corners]
                )
            )
        seg = abs(t.a) * max(records[idx[0]].size / 8, 1)
        geo = gpd.GeoSeries(
            shapely.segmentize(np.asarray(polys, dtype=object), seg), crs=sources[si]["crs"]
        )
        for i, g in zip(idx, geo.to_crs("EPSG:4326").values, strict=True):
            out[i] = g
    return out


def write_index(
    path: Path,
    records: list[ChipRecord],
    splits: np.ndarray,
    sources: list[dict],
    classes: list[ClassInfo],
) -> None:
    """Write ``chips.gpkg`` (layer ``chips``): one footprint per chip with its window and counts."""
    import geopandas as gpd
    import pyogrio

    data: dict[str, list] = {
        "chip_id": [r.chip_id for r in records],
        "image": [f"images/{r.name}" for r in records],
        "label": [f"labels/{r.name}" for r in records],
        "source": [sources[r.source_index]["address"] for r in records],
        "col_off": [r.col_off for r in records],
        "row_off": [r.row_off for r in records],
        "width": [r.size for r in records],
        "height": [r.size for r in records],
        "split": [str(s) for s in splits],
        "nodata_fraction": [round(r.nodata_fraction, 6) for r in records],
    }
    for v in [c.value for c in classes] + [IGNORE]:
        data[f"count_{v}"] = [int(r.counts[v]) for r in records]
    gdf = gpd.GeoDataFrame(data, geometry=footprints(records, sources), crs="EPSG:4326")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _GPKG_DATE})
    try:
        gdf.to_file(path, layer="chips", driver="GPKG", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


def _strict(obj):
    """Non-finite floats as the strings GDAL's JSON uses ("NaN", "Infinity"): a NaN nodata
    value would otherwise make the file invalid JSON for ArcGIS, jq and most parsers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    return obj


def _dump(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_strict(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def write_metadata(
    folder: Path,
    records: list[ChipRecord],
    classes: list[ClassInfo],
    stats: dict,
) -> None:
    """Write ``classes.json``, ``stats.json`` and the ArcGIS Classified_Tiles files
    (:func:`geopsp.chips.arcgis.write_files`)."""
    save_classes(folder / "classes.json", classes)
    _dump(folder / "stats.json", stats)
    arcgis.write_files(
        folder,
        [r.name for r in records],
        np.array([r.counts for r in records]),
        classes,
        stats["bands"],
        stats["chip_size"],
    )
