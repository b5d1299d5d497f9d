"""The connected regions of a class raster as in-memory geometries (for object scores)."""

from __future__ import annotations

import numpy as np
import shapely

from geopsp.core.classes import IGNORE
from geopsp.vectorize.inputs import block_reader, open_class_raster
from geopsp.vectorize.polygonize import pixel_to_map, polygonize_blocks


def raster_regions(address: str, crs=None, block_size: int = 1024) -> dict:
    """Every 4-connected region of a class raster except background (0) and nodata.

    Parameters
    ----------
    address : str
        A class raster (any GDAL address).
    crs : optional
        CRS to return the geometries in (default: the raster's).

    Returns
    -------
    dict
        ``geometries`` (object array), ``values`` (int64), ``crs``, ``classes`` (the class
        table or an empty list) and ``outline`` (the raster's extent as a polygon in ``crs``).
    """
    from pyproj import Transformer

    from geopsp.core.class_raster import read_classes

    with open_class_raster(address) as src:
        read = block_reader(src, None, None)
        feats = list(polygonize_blocks(src.width, src.height, block_size, read))
        pixel = np.array([f.geometry for f in feats] + [shapely.box(0, 0, src.width, src.height)],
                         dtype=object)  # fmt: skip
        geoms = pixel_to_map(pixel, src.transform)
        if crs is not None and crs != src.crs:
            tr = Transformer.from_crs(src.crs, crs, always_xy=True)
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(*xy.T)))
        values = np.array([f.value for f in feats], dtype=np.int64)
        keep = (values != 0) & (values != IGNORE)
        return {
            "geometries": geoms[:-1][keep], "values": values[keep], "crs": crs or src.crs,
            "classes": read_classes(src) or [], "outline": geoms[-1],
        }  # fmt: skip
