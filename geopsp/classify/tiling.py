"""Window grids and blend weights for tiled inference (pure numpy).

A raster of ``height x width`` pixels is covered by square tiles of ``tile`` pixels that
overlap their neighbours by at least ``overlap`` pixels. Tile starts are spread evenly
(:func:`geopsp.core.windows.offsets` with ``edge="spread"``), so the last row/column of tiles
ends exactly on the raster edge; a raster smaller than one tile gets a single tile at (0, 0)
that the reader pads.

For streaming, the raster is also cut into *blocks* (``block`` pixels square, a multiple of
the output's 512-pixel GeoTIFF tiles). Every tile belongs to the block that holds its
top-left pixel, tiles are processed block by block, and a block's pixels are final once the
tiles of that block and of the blocks above and to the left are done (see
:mod:`geopsp.classify.blending`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from geopsp.core.windows import offsets

BLEND_KINDS = ("cosine", "linear", "none")
WEIGHT_FLOOR = 1e-3  # keeps every weight > 0 so the weight sum never divides by ~0


def taper(size: int, overlap: int, start: bool, end: bool, kind: str = "cosine") -> np.ndarray:
    """1-D blend weights of a tile: 1 in the middle, ramping down over ``overlap`` pixels.

    Parameters
    ----------
    size : int
        Tile size in pixels.
    overlap : int
        Ramp length in pixels.
    start, end : bool
        Taper the start / end of the tile. Edges that touch the raster border are not
        tapered: no other tile covers those pixels.
    kind : {"cosine", "linear", "none"}
        Ramp shape: half a Hann window, a straight line, or no taper at all.

    Returns
    -------
    ndarray of float32, shape (size,)
        Weights in ``[WEIGHT_FLOOR, 1]``.
    """
    if kind not in BLEND_KINDS:
        raise ValueError(f"blend must be one of {BLEND_KINDS}, got {kind!r}")
    w = np.ones(size, dtype=np.float64)
    n = min(overlap, size // 2)
    if kind != "none" and n > 0:
        t = (np.arange(n) + 0.5) / n  # pixel centres, strictly inside (0, 1)
        ramp = np.sin(np.pi * t / 2) ** 2 if kind == "cosine" else t
        ramp = WEIGHT_FLOOR + (1 - WEIGHT_FLOOR) * ramp
        if start:
            w[:n] = ramp
        if end:
            w[size - n :] = ramp[::-1]
    return w.astype(np.float32)


@lru_cache(maxsize=64)
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of classify's grid: spread evenly, the last tile ending on
    the raster edge (also laid by the ArcGIS raster function, so its blocks join classify's)."""
    return offsets(length, tile, tile - overlap, "spread")


def _weights_cached(size: int, overlap: int, edges: tuple[bool, bool, bool, bool], kind: str):
    top, bottom, left, right = edges
    w = np.outer(taper(size, overlap, top, bottom, kind), taper(size, overlap, left, right, kind))
    w.setflags(write=False)
    return w


def tile_weights(
    size: int, overlap: int, edges: tuple[bool, bool, bool, bool], kind: str = "cosine"
) -> np.ndarray:
    """2-D weights (size, size) for a tile tapered on ``edges`` = (top, bottom, left, right).

    The array is cached and read-only.
    """
    return _weights_cached(int(size), int(overlap), tuple(bool(e) for e in edges), kind)


def jump_bound(overlap: int, kind: str) -> float:
    """Documented bound on the change between neighbouring pixels of a blended result.

    For tiles whose outputs differ by at most ``d`` (in probability), two adjacent pixels of
    the blended probabilities differ by at most ``d * jump_bound(overlap, kind)``. The cosine
    ramp ``sin^2(pi t / 2)`` has slope at most ``pi / 2`` per ramp length, the linear one 1;
    the weight floor only lowers the slope. ``none`` has no bound (1: a full jump).
    """
    if kind == "none" or overlap < 1:
        return 1.0
    return (math.pi / 2 if kind == "cosine" else 1.0) / overlap


@dataclass(frozen=True)
class Tile:
    """One window of the grid: top-left pixel and which edges are tapered."""

    row: int
    col: int
    block: int
    edges: tuple[bool, bool, bool, bool]  # top, bottom, left, right


class TileGrid:
    """Tiles covering a raster, grouped into blocks for streaming.

    Parameters
    ----------
    height, width : int
        Raster size in pixels.
    tile : int
        Tile size (square).
    overlap : int
        Minimum overlap between neighbouring tiles, ``0 <= overlap < tile / 2``.
    block : int
        Block size in pixels; must be ``>= tile`` so that a tile never reaches past the
        block after its own.
    """

    def __init__(self, height: int, width: int, tile: int, overlap: int, block: int) -> None:
        if not 0 <= 2 * overlap < tile:
            raise ValueError(
                f"overlap {overlap} must be >= 0 and less than half the tile size {tile}"
            )
        if block < tile:
            raise ValueError(f"block {block} must be at least the tile size {tile}")
        self.height, self.width = int(height), int(width)
        self.tile, self.overlap, self.block = int(tile), int(overlap), int(block)
        self.rows = tile_starts(self.height, self.tile, self.overlap)
        self.cols = tile_starts(self.width, self.tile, self.overlap)
        self.block_rows = math.ceil(self.height / self.block)
        self.block_cols = math.ceil(self.width / self.block)
        rows = np.asarray(self.rows)
        cols = np.asarray(self.cols)
        # Tile indices per block row / column, in order (the grid is a product grid).
        self._rows_in = [
            np.nonzero(rows // self.block == b)[0].tolist() for b in range(self.block_rows)
        ]
        self._cols_in = [
            np.nonzero(cols // self.block == b)[0].tolist() for b in range(self.block_cols)
        ]
        self._first = np.concatenate([[0], np.cumsum(self.block_sizes())])  # first tile per block

    @property
    def n_blocks(self) -> int:
        return self.block_rows * self.block_cols

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def block_window(self, index: int) -> tuple[int, int, int, int]:
        """(row, col, height, width) of the pixels that block ``index`` finalizes."""
        bi, bj = divmod(index, self.block_cols)
        r, c = bi * self.block, bj * self.block
        return r, c, min(self.block, self.height - r), min(self.block, self.width - c)

    def block_tiles(self, index: int) -> list[Tile]:
        """The tiles of block ``index`` in row-major order."""
        bi, bj = divmod(index, self.block_cols)
        nr, nc = len(self.rows), len(self.cols)
        out = []
        for i in self._rows_in[bi]:
            for j in self._cols_in[bj]:
                edges = (i > 0, i < nr - 1, j > 0, j < nc - 1)
                out.append(Tile(self.rows[i], self.cols[j], index, edges))
        return out

    def block_sizes(self) -> list[int]:
        """Number of tiles in each block, in block order."""
        return [
            len(self._rows_in[b // self.block_cols]) * len(self._cols_in[b % self.block_cols])
            for b in range(self.n_blocks)
        ]

    def first_tile(self, block: int) -> int:
        """Index (in processing order) of the first tile of ``block``; ``n_blocks`` gives the
        number of tiles."""
        return int(self._first[block])

    def tile_range(self, start: int, stop: int) -> list[Tile]:
        """Tiles ``start``..``stop - 1`` of the processing order, without listing them all.

        Only per-block tile counts are kept (one int per block), so addressing a batch costs
        no memory that grows with the raster.
        """
        out: list[Tile] = []
        k = max(0, start)
        stop = min(stop, len(self))
        while k < stop:
            b = int(np.searchsorted(self._first, k, side="right")) - 1
            tiles = self.block_tiles(b)
            i = k - int(self._first[b])
            take = tiles[i : i + (stop - k)]
            out.extend(take)
            k += len(take)
        return out

    def tiles(self) -> Iterator[Tile]:
        """Every tile, block by block (the order the pipeline processes them in)."""
        for b in range(self.n_blocks):
            yield from self.block_tiles(b)

    def coverage(self) -> np.ndarray:
        """Number of tiles covering each pixel (int32, for tests; allocates the raster)."""
        cov = np.zeros((self.height, self.width), dtype=np.int32)
        for t in self.tiles():
            cov[t.row : t.row + self.tile, t.col : t.col + self.tile] += 1
        return cov


def default_block(tile: int, out_block: int = 512) -> int:
    """Block size: a multiple of the output's GeoTIFF block, at least ``max(tile, 1024)``.

    Aligning blocks with the output's internal tiles means every GeoTIFF tile is written
    once, complete, and never re-compressed.
    """
    need = max(tile, 1024)
    return out_block * math.ceil(need / out_block)
