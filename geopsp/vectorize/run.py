"""``geopsp vectorize``: polygons per class out of a class raster, in bounded memory.

The raster is polygonized block by block (:mod:`geopsp.vectorize.polygonize`), features go
from pixel to CRS coordinates (and ``dst_crs``), are filtered, shaped
(:mod:`geopsp.vectorize.shape`), measured and written in batches
(:mod:`geopsp.vectorize.write`). Filling holes and simplifying need each polygon's
neighbours, so with ``fill_holes`` or ``simplify`` the polygons (not the pixels) are kept in
memory until the raster has been read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from geopsp.core.atomic import check_writable
from geopsp.core.errors import UsageError
from geopsp.core.progress import bar
from geopsp.vectorize import inputs, shape
from geopsp.vectorize.polygonize import BlockPolygonizer, Feature, block_grid, pixel_to_map
from geopsp.vectorize.write import VectorWriter, driver_for

log = logging.getLogger(__name__)
BATCH = 5000
GDAL_CACHE_MB = 16  # each block is read once: a small cache keeps RSS flat with raster size


@dataclass
class VectorizeOptions:
    """Options of :func:`vectorize` (CLI ``geopsp vectorize``; ``--polygon-*`` of classify).

    Areas (``min_area``, ``fill_holes``) are in square units and ``simplify`` in units of the
    output CRS (``dst_crs``, else the raster's).
    """

    classes: str | list | None = None
    min_area: float | None = None
    fill_holes: float | None = None
    simplify: float | None = None
    regularize: bool = False
    connectivity: int = 4
    nodata: float | None = None
    confidence: str | None = None
    dst_crs: str | None = None
    layer: str | None = None
    block_size: int = 1024
    overwrite: bool = False
    progress: bool = False
    option_prefix: str = ""  # how messages name the options ("polygon-" for classify)


@dataclass
class VectorizeSummary:
    """What :func:`vectorize` wrote."""

    output: str
    features: int
    per_class: dict[int, int] = field(default_factory=dict)
    units: str = ""
    megapixels: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"{self.output}: {self.features} polygons ({self.megapixels:.1f} MP in "
            f"{self.seconds:.1f} s, {rate:.1f} MP/s); area in square {self.units}, "
            f"perimeter in {self.units}"
        )


def _flag(options: VectorizeOptions, name: str) -> str:
    return f"--{options.option_prefix}{name.replace('_', '-')}"


def check_options(options: VectorizeOptions) -> None:
    """Refuse impossible option values before any work (exit code 2)."""
    if options.connectivity not in (4, 8):
        raise UsageError(
            f"{_flag(options, 'connectivity')} must be 4 or 8, got {options.connectivity}"
        )
    for name in ("min_area", "fill_holes", "simplify"):
        v = getattr(options, name)
        if v is not None and not v > 0:
            raise UsageError(f"{_flag(options, name)} must be > 0, got {v}")
    if options.block_size < 16:
        raise UsageError(f"--block-size must be at least 16 pixels, got {options.block_size}")


def _out_crs(src, options: VectorizeOptions):
    """The output CRS; a geographic one with lengths or areas requested is a usage error."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_user_input(options.dst_crs) if options.dst_crs else src.crs
    except CRSError as exc:
        raise UsageError(
            f"{_flag(options, 'dst_crs')} {options.dst_crs!r} is not a CRS ({exc})"
        ) from None
    if crs.is_geographic:
        asked = [_flag(options, n) for n in ("min_area", "fill_holes", "simplify", "regularize")
                 if getattr(options, n) not in (None, False)]  # fmt: skip
        if asked:
            verb = "needs" if len(asked) == 1 else "need"
            raise UsageError(
                f"{' and '.join(asked)} {verb} lengths in metres, but the CRS is geographic "
                f"(degrees); give {_flag(options, 'dst_crs')} with a projected CRS such as "
                "the UTM zone"
            )
        log.warning(
            "the CRS is geographic: area is in square degrees and perimeter in degrees; "
            "use %s with a projected CRS for metres",
            _flag(options, "dst_crs"),
        )
    return crs


def _units(crs) -> str:
    units = crs.linear_units if not crs.is_geographic else "degree"
    plural = {"metre": "metres", "meter": "metres", "degree": "degrees", "foot": "feet"}
    return plural.get(units, "CRS units" if units == "unknown" else units)


class _Frames:
    """Turns pixel-space features into GeoDataFrames in the output CRS with attributes."""

    def __init__(self, src, out_crs, names: dict[int, str], options: VectorizeOptions) -> None:
        from pyproj import Transformer

        self.t, self.src_crs, self.crs, self.names = src.transform, src.crs, out_crs, names
        self.options = options
        self.reproject = None
        if out_crs != src.crs:
            tr = Transformer.from_crs(src.crs, out_crs, always_xy=True)
            self.reproject = lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
        px = abs(self.t.a * self.t.e - self.t.b * self.t.d) ** 0.5
        c = src.width // 2, src.height // 2
        probe = self.to_crs(np.array([shapely.box(c[0], c[1], c[0] + 1, c[1] + 1)]))[0]
        self.pixel = probe.area**0.5 if self.reproject else px

    def to_crs(self, geoms: np.ndarray) -> np.ndarray:
        out = pixel_to_map(geoms, self.t)
        return shapely.transform(out, self.reproject) if self.reproject else out

    def frame(self, feats: list[Feature]):
        import geopandas as gpd

        geoms = np.array([f.geometry for f in feats], dtype=object)
        if self.options.simplify:  # a vertex at every pixel corner: shared edges match
            geoms = shapely.segmentize(geoms, 1.0)
        data = {"class": [f.value for f in feats]}
        data["class_name"] = [self.names.get(f.value, str(f.value)) for f in feats]
        if self.options.confidence:
            data["confidence"] = [f.confidence for f in feats]
        return gpd.GeoDataFrame(data, geometry=self.to_crs(geoms), crs=self.crs)

    def finish(self, frame):
        """Shape (regularize), measure, and drop polygons under ``min_area``."""
        o = self.options
        if o.regularize and len(frame):
            tol = max(o.simplify or 0.0, 1.5 * self.pixel)
            frame = frame.set_geometry(shape.regularize(frame.geometry.values, tol))
        frame["area"] = shapely.area(frame.geometry.values)
        frame["perimeter"] = shapely.length(frame.geometry.values)
        if o.min_area:
            frame = frame[frame["area"] >= o.min_area]
        return frame


def _neighbourhood(frame, options: VectorizeOptions):
    """Fill holes and simplify the whole layer together (both change shared edges)."""
    geoms = frame.geometry.values.to_numpy()
    if options.fill_holes:
        filled = shape.fill_holes(geoms, options.fill_holes)
        keep = ~shape.inside_filled(geoms, filled)
        frame, geoms = frame[keep].copy(), filled[keep]
    if options.simplify:
        geoms = shape.simplify_coverage(geoms, options.simplify)
    return frame.set_geometry(list(geoms), crs=frame.crs)


def vectorize(source: str, output: str, options: VectorizeOptions) -> VectorizeSummary:
    """Polygonize the class raster ``source`` into the vector file ``output``.

    Parameters
    ----------
    source : str
        A class raster (any GDAL address): one band of integer class values; its nodata (or
        ``options.nodata``) is left out; ``GEOPSP_CLASSES`` names the classes.
    output : str
        Vector file; the extension picks the format (.gpkg, .fgb, .parquet, .shp, .geojson).
    options : VectorizeOptions

    Returns
    -------
    VectorizeSummary
    """
    import rasterio

    from geopsp.core.class_raster import read_classes

    check_options(options)
    driver_for(output)
    check_writable(output, options.overwrite)
    start = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), inputs.open_class_raster(source) as src:
        table = read_classes(src)
        classes = inputs.parse_classes(options.classes, table)
        out_crs = _out_crs(src, options)
        conf = inputs.open_confidence(options.confidence, src) if options.confidence else None
        try:
            frames = _Frames(src, out_crs, {c.value: c.name for c in table or []}, options)
            read = inputs.block_reader(src, classes, options.nodata, conf)
            layer = options.layer or Path(output).stem
            count, per_class = _write(src, read, frames, output, layer, options)
        finally:
            if conf is not None:
                conf.close()
        mp = src.width * src.height / 1e6
    summary = VectorizeSummary(str(output), count, per_class, _units(out_crs), mp)
    summary.seconds = time.perf_counter() - start
    return summary


def _write(src, read, frames: _Frames, output, layer, options) -> tuple[int, dict[int, int]]:
    import pandas as pd

    poly = BlockPolygonizer(src.width, src.height, options.block_size, options.connectivity)
    grid = block_grid(src.width, src.height, options.block_size)
    empty = frames.finish(frames.frame([]))
    per_class: dict[int, int] = {}
    held, batch = [], []
    with VectorWriter(output, layer, frames.crs, empty, options.overwrite) as writer:

        def flush(feats: list[Feature]) -> None:
            frame = frames.frame(feats)
            if options.fill_holes or options.simplify:
                held.append(frame)
                return
            frame = frames.finish(frame)
            writer.write(frame)
            for v, n in frame["class"].value_counts().items():
                per_class[int(v)] = per_class.get(int(v), 0) + int(n)

        with bar(len(grid), "vectorize", enabled=options.progress, unit="block") as pbar:
            for idx, (c, r, w, h) in enumerate(grid):
                batch += poly.feed(idx, read(c, r, w, h))
                if len(batch) >= BATCH:
                    flush(batch)
                    batch = []
                pbar.update(1)
        flush(batch)
        if held:
            frame = frames.finish(_neighbourhood(pd.concat(held, ignore_index=True), options))
            writer.write(frame)
            per_class = {int(v): int(n) for v, n in frame["class"].value_counts().items()}
        return writer.count, dict(sorted(per_class.items()))


def check_polygon_output(output: str, options: VectorizeOptions, inputs: int = 1) -> None:
    """Checks of ``classify --polygons`` made before the classification starts."""
    if inputs != 1:
        raise UsageError(
            "--polygons takes one INPUT; with several, run geopsp vectorize on each class raster"
        )
    check_options(options)
    driver_for(output)
    check_writable(output, options.overwrite)
