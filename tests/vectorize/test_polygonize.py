"""Block-wise polygonization equals polygonizing the whole raster at once."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.features import shapes

from geopsp.vectorize.polygonize import canonical, polygonize_array

from .conftest import blobs


def whole(values, valid, connectivity):
    """The reference: rasterio.features.shapes over the whole array, canonical geometries."""
    out = shapes(values, mask=valid, connectivity=connectivity)
    return sorted((int(v), canonical(shapely.geometry.shape(g)).wkb) for g, v in out)


def blockwise(values, valid, size, connectivity):
    feats = polygonize_array(values, valid, block_size=size, connectivity=connectivity)
    return sorted((f.value, f.geometry.wkb) for f in feats)


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(
        np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.integers(0, 2)
    ),  # fmt: skip
    holes=st.integers(0, 2**32 - 1),
    size=st.integers(1, 9),
    connectivity=st.sampled_from([4, 8]),
)
def test_blocks_equal_whole_raster(values, holes, size, connectivity):
    valid = np.random.default_rng(holes).random(values.shape) > 0.15
    assert blockwise(values, valid, size, connectivity) == whole(values, valid, connectivity)


@pytest.mark.parametrize("size", [5, 16, 64])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_blobs_several_block_sizes(size, connectivity):
    values = blobs(seed=size)
    valid = values != 2  # class 2 left out as if it were nodata: holes at block borders too
    assert blockwise(values, valid, size, connectivity) == whole(values, valid, connectivity)


def test_one_feature_across_many_blocks():
    a = np.zeros((40, 40), dtype=np.uint8)
    a[2:38, 2:6] = 1  # a U crossing 4 x 4 blocks of 10 pixels
    a[34:38, 2:38] = 1
    a[2:38, 34:38] = 1
    feats = [f for f in polygonize_array(a, block_size=10) if f.value == 1]
    assert len(feats) == 1
    g = feats[0].geometry
    assert g.geom_type == "Polygon" and g.is_valid
    assert g.area == (a == 1).sum()
    assert len(g.exterior.coords) == 9  # 8 corners, no vertex left at the block borders


@pytest.mark.parametrize(("connectivity", "count"), [(4, 2), (8, 1)])
def test_corner_contact_across_a_block_corner(connectivity, count):
    a = np.zeros((8, 8), dtype=np.uint8)
    a[2:4, 2:4] = 1  # top-left block
    a[4:6, 4:6] = 1  # bottom-right block: meets the first one at the corner (4, 4)
    feats = [f for f in polygonize_array(a, block_size=4, connectivity=connectivity) if f.value]
    assert len(feats) == count
    assert sum(f.geometry.area for f in feats) == 8
    assert all(f.geometry.is_valid for f in feats)
    if connectivity == 8:
        assert feats[0].geometry.geom_type == "MultiPolygon"


def test_confidence_mean_over_merged_pieces():
    from geopsp.vectorize.polygonize import Block, polygonize_blocks

    a = np.zeros((6, 6), dtype=np.uint8)
    a[1:5, 1:5] = 1
    conf = np.arange(36, dtype=np.float64).reshape(6, 6)

    def read(c, r, w, h):
        win = (slice(r, r + h), slice(c, c + w))
        ones = np.ones((h, w), bool)
        return Block(c, r, a[win], ones, conf[win], ones)

    feats = {f.value: f for f in polygonize_blocks(6, 6, 3, read)}
    assert feats[1].confidence == pytest.approx(conf[1:5, 1:5].mean())
    assert feats[0].confidence == pytest.approx(conf[a == 0].mean())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(3, 12),
    x0=st.floats(-1e6, 1e6),
    y0=st.floats(-1e6, 1e7),
    res=st.sampled_from([0.1, 0.3, 0.5, 10.0, 30.0, 1 / 3]),
)
def test_map_coordinates_equal_gdal_polygonizing_with_the_transform(seed, size, x0, y0, res):
    from rasterio.transform import from_origin

    from geopsp.vectorize.polygonize import pixel_to_map

    values = np.random.default_rng(seed).integers(0, 3, (20, 17)).astype(np.uint8)
    tr = from_origin(x0, y0, res, res)
    expected = sorted(
        (int(v), shapely.normalize(shapely.make_valid(shapely.geometry.shape(g))).wkb)
        for g, v in shapes(values, transform=tr)
    )
    feats = polygonize_array(values, block_size=size)
    geoms = pixel_to_map(np.array([f.geometry for f in feats], dtype=object), tr)
    got = sorted((f.value, shapely.normalize(g).wkb) for f, g in zip(feats, geoms, strict=True))
    assert got == expected
