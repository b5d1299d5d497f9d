"""Writing polygon layers batch by batch, in the format the output's extension names.

GeoPackage, FlatGeobuf, GeoJSON and Shapefile go through OGR (pyogrio, appending batches);
GeoParquet through pyarrow (one row group per batch, GeoParquet 1.0 metadata). Every output
is written under a temporary name and renamed when complete (:mod:`geopsp.core.atomic`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import shapely

from geopsp.core.atomic import atomic_path, check_writable, temp_name
from geopsp.core.errors import UsageError

DRIVERS = {
    ".gpkg": "GPKG",
    ".fgb": "FlatGeobuf",
    ".parquet": "Parquet",
    ".geoparquet": "Parquet",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
}
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def driver_for(path: str | os.PathLike) -> str:
    """The output format of ``path`` from its extension (GeoPackage when there is none)."""
    ext = Path(path).suffix.lower()
    if not ext:
        raise UsageError(
            f"{path}: give the output an extension: .gpkg, .fgb, .parquet, .shp or .geojson"
        )
    if ext not in DRIVERS:
        raise UsageError(
            f"{path}: unknown vector format {ext!r}; use .gpkg, .fgb, .parquet, .shp or .geojson"
        )
    return DRIVERS[ext]


def as_multi(geoms: np.ndarray) -> np.ndarray:
    """Every geometry as a MultiPolygon, so one layer has one geometry type."""
    return np.array(
        [g if isinstance(g, shapely.MultiPolygon) else shapely.MultiPolygon([g]) for g in geoms],
        dtype=object,
    )


def _geo_metadata(crs) -> bytes:
    """GeoParquet 1.0 file metadata for one WKB MultiPolygon column."""
    from pyproj import CRS

    column = {"encoding": "WKB", "geometry_types": ["MultiPolygon"]}
    column["crs"] = CRS.from_user_input(crs).to_json_dict() if crs else None
    meta = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
    return json.dumps(meta).encode()


class _Parquet:
    def __init__(self, path: Path, crs) -> None:
        self.path, self.crs, self.writer = path, crs, None

    def write(self, frame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame.drop(columns="geometry"), preserve_index=False)
        wkb = shapely.to_wkb(as_multi(frame.geometry.values), flavor="iso")
        table = table.append_column("geometry", pa.array(wkb, type=pa.binary()))
        table = table.replace_schema_metadata({b"geo": _geo_metadata(self.crs)})
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _Ogr:
    def __init__(self, path: Path, driver: str, layer: str) -> None:
        self.path, self.driver, self.layer, self.started = path, driver, layer, False

    def write(self, frame) -> None:
        import pyogrio

        frame = frame.set_geometry(as_multi(frame.geometry.values), crs=frame.crs)
        kw = {"layer": self.layer} if self.driver == "GPKG" else {}
        pyogrio.write_dataframe(frame, self.path, driver=self.driver, append=self.started,
                                geometry_type="MultiPolygon", **kw)  # fmt: skip
        self.started = True

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _shapefile_tmp(path: Path, overwrite: bool):
    """A temporary folder for the shapefile's parts; moved beside ``path`` (.shp last)."""
    check_writable(path, overwrite)
    folder = temp_name(path).with_suffix("")
    folder.mkdir()
    try:
        yield folder / path.name
        parts = [s for s in SHAPEFILE_PARTS if (folder / path.name).with_suffix(s).exists()]
        for s in SHAPEFILE_PARTS:  # no stale part of an older shapefile may survive
            with contextlib.suppress(FileNotFoundError):
                path.with_suffix(s).unlink()
        for s in sorted(parts, key=lambda s: s == ".shp"):
            os.replace((folder / path.name).with_suffix(s), path.with_suffix(s))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class VectorWriter:
    """Context manager writing GeoDataFrame batches to one layer, atomically.

    Parameters
    ----------
    path : path-like
        Output file; its extension picks the format (:data:`DRIVERS`).
    layer : str
        Layer name (GeoPackage; other formats hold one layer named after the file).
    crs
        CRS of the geometries (for GeoParquet metadata).
    empty : GeoDataFrame
        A frame with the layer's columns and no rows, written when no batch came.
    overwrite : bool
        Replace an existing output.
    """

    def __init__(self, path, layer: str, crs, empty, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.driver = driver_for(path)
        self.layer, self.crs, self.empty, self.overwrite = layer, crs, empty, overwrite
        self.count = 0

    def __enter__(self) -> VectorWriter:
        self._stack = contextlib.ExitStack()
        if self.driver == "ESRI Shapefile":
            tmp = self._stack.enter_context(_shapefile_tmp(self.path, self.overwrite))
        else:
            tmp = self._stack.enter_context(atomic_path(self.path, overwrite=self.overwrite))
        if self.driver == "Parquet":
            self._sink = _Parquet(tmp, self.crs)
        else:
            self._sink = _Ogr(tmp, self.driver, self.layer)
        return self

    def write(self, frame) -> None:
        """Append a batch (a GeoDataFrame with a ``geometry`` column)."""
        if len(frame):
            self._sink.write(frame)
            self.count += len(frame)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                if self.count == 0:
                    self._sink.write(self.empty)
                self._sink.close()
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return bool(self._stack.__exit__(exc_type, exc, tb))
