"""Window grids and blend weights (pure numpy, property-based)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geopsp.classify.blending import Blender, blocks_from_stream
from geopsp.classify.tiling import (
    WEIGHT_FLOOR,
    TileGrid,
    default_block,
    jump_bound,
    taper,
    tile_weights,
)
from geopsp.core.windows import offsets

sizes = st.integers(min_value=1, max_value=5000)
tiles = st.sampled_from([32, 64, 100, 128, 256, 512])


@pytest.mark.parametrize(
    ("h", "w"), [(1, 1), (100, 100), (1000, 777), (4097, 3), (3, 4097), (512, 513)]
)
def test_grid_covers_every_pixel_named_sizes(h, w):
    g = TileGrid(h, w, 512, 64, default_block(512))
    cov = g.coverage()
    assert cov.min() >= 1
    # Every tile starts inside the raster and the last one ends on the edge (or is padded).
    assert g.rows[0] == 0 and g.cols[0] == 0
    assert g.rows[-1] == max(0, h - 512) and g.cols[-1] == max(0, w - 512)
    assert sum(g.block_sizes()) == len(g) == len(list(g.tiles()))


@settings(max_examples=200, deadline=None)
@given(length=sizes, tile=tiles, frac=st.floats(0, 0.49))
def test_tile_starts_cover_and_overlap(length, tile, frac):
    overlap = int(tile * frac)
    starts = offsets(length, tile, tile - overlap, "spread")
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == length  # the last tile ends exactly on the edge
    gaps = np.diff(starts)
    assert (gaps <= tile - overlap).all()  # neighbours overlap by at least `overlap`
    # Minimal number of tiles: one fewer could not cover the axis with that overlap.
    n = len(starts)
    assert (n - 1) * (tile - overlap) + overlap < length


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 700), w=st.integers(1, 700), tile=st.sampled_from([32, 64, 96]))
def test_grid_coverage_and_block_order(h, w, tile):
    g = TileGrid(h, w, tile, tile // 4, default_block(tile, 64))
    assert g.coverage().min() >= 1
    seen = [(t.block, t.row, t.col) for t in g.tiles()]
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    for t in g.tiles():  # a tile belongs to the block of its top-left pixel
        r, c, _, _ = g.block_window(t.block)
        assert r <= t.row < r + g.block and c <= t.col < c + g.block


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(2, 600),
    frac=st.floats(0, 0.49),
    edges=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    kind=st.sampled_from(["cosine", "linear", "none"]),
)
def test_weights_never_zero(size, frac, edges, kind):
    w = tile_weights(size, int(size * frac), edges, kind)
    assert w.shape == (size, size)
    assert w.min() >= WEIGHT_FLOOR**2 and w.min() > 0
    assert w.max() <= 1.0
    assert np.isfinite(w).all()


def test_taper_only_on_requested_edges():
    w = taper(100, 20, start=False, end=True, kind="cosine")
    assert (w[:80] == 1).all()
    assert (np.diff(w[80:]) < 0).all() and w[-1] < 0.01
    lin = taper(100, 20, start=True, end=False, kind="linear")
    np.testing.assert_allclose(np.diff(lin[:20]), np.diff(lin[:20])[0], rtol=1e-5)
    assert (taper(100, 20, True, True, "none") == 1).all()
    # Complementary cosine ramps sum to a constant over an exact overlap.
    a, b = taper(64, 16, False, True), taper(64, 16, True, False)
    np.testing.assert_allclose(a[-16:] + b[:16], 1 + WEIGHT_FLOOR, rtol=1e-5)


def _naive_blend(g: TileGrid, outs: dict, k: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Full-raster reference accumulator (what streaming must reproduce)."""
    acc = np.zeros((k, g.height, g.width), np.float64)
    ws = np.zeros((g.height, g.width), np.float64)
    for t in g.tiles():
        h, w = min(g.tile, g.height - t.row), min(g.tile, g.width - t.col)
        wt = tile_weights(g.tile, g.overlap, t.edges, kind)[:h, :w]
        acc[:, t.row : t.row + h, t.col : t.col + w] += outs[t.row, t.col][:, :h, :w] * wt
        ws[t.row : t.row + h, t.col : t.col + w] += wt
    return acc, ws


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), seed=st.integers(0, 10))
def test_streaming_blend_equals_full_raster_blend(h, w, seed):
    rng = np.random.default_rng(seed)
    g = TileGrid(h, w, 48, 12, 64)  # small blocks: many seams in both directions
    k = 3
    outs = {(t.row, t.col): rng.random((k, 48, 48)).astype(np.float32) for t in g.tiles()}
    acc = np.zeros((k, h, w), np.float32)
    ws = np.zeros((h, w), np.float32)
    b = Blender(g, k, "cosine")
    items = ((t, outs[t.row, t.col], None) for t in g.tiles())
    for fb in blocks_from_stream(g, b, items):
        hh, ww = fb.weights.shape
        assert not ws[fb.row : fb.row + hh, fb.col : fb.col + ww].any()  # emitted once
        acc[:, fb.row : fb.row + hh, fb.col : fb.col + ww] = fb.sums
        ws[fb.row : fb.row + hh, fb.col : fb.col + ww] = fb.weights
    b.close()
    ref_acc, ref_ws = _naive_blend(g, outs, k, "cosine")
    np.testing.assert_allclose(ws, ref_ws, rtol=1e-5)
    np.testing.assert_allclose(acc, ref_acc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_blend_of_different_tiles_has_no_jump_beyond_bound(kind):
    """Each tile predicts a different constant; the blended field changes smoothly."""
    rng = np.random.default_rng(1)
    g = TileGrid(700, 650, 128, 32, 128)
    outs = {}
    for t in g.tiles():
        p = rng.random()
        outs[t.row, t.col] = np.stack([np.full((128, 128), p), np.full((128, 128), 1 - p)])
    acc, ws = _naive_blend(g, outs, 2, kind)
    prob = acc[0] / ws
    jumps = max(np.abs(np.diff(prob, axis=0)).max(), np.abs(np.diff(prob, axis=1)).max())
    vals = [o[0, 0, 0] for o in outs.values()]
    bound = (max(vals) - min(vals)) * jump_bound(32, kind)
    assert jumps <= bound * 1.01
    # Without blending the seams are hard: the bound is what blending buys.
    acc_n, ws_n = _naive_blend(g, outs, 2, "none")
    prob_n = acc_n[0] / ws_n
    assert np.abs(np.diff(prob_n, axis=1)).max() > 3 * bound


def test_invalid_grid_arguments():
    with pytest.raises(ValueError, match="half the tile"):
        TileGrid(100, 100, 64, 32, 1024)
    with pytest.raises(ValueError, match="at least the tile"):
        TileGrid(100, 100, 1024, 32, 512)
    with pytest.raises(ValueError):
        offsets(0, 64, 56, "spread")
    with pytest.raises(ValueError, match="half the tile"):
        TileGrid(100, 100, 64, -1, 1024)
    assert default_block(512) == 1024 and default_block(1500) == 1536


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 900), w=st.integers(1, 900), bs=st.integers(1, 7))
def test_batches_follow_the_tile_order(h, w, bs):
    from geopsp.classify.ranks import batches

    g = TileGrid(h, w, 64, 8, 128)
    flat = list(g.tiles())
    got = batches(g, bs)
    assert len(got) == -(-len(flat) // bs)
    assert [t for b in got for t in b] == flat
    assert all(len(b) == bs for b in list(got)[:-1])
