"""Streaming blend of overlapping tile predictions with bounded memory.

Tiles arrive block by block (see :class:`geopsp.classify.tiling.TileGrid`). Each block has an
accumulator of weighted probability sums plus the weight sum, covering the block and the
``tile`` pixels below and to its right that its tiles reach into. When a block's tiles are
done, the contributions of earlier blocks are added in a fixed order (the *seams*: the
block to the left, then the block above), the block's own pixels are final and are handed
on, and its right and bottom margins become seams for the next blocks.

The right seam is one block tall and stays in memory; the bottom seams of a whole block row
are as wide as the raster, so they live in an unlinked temporary file (no RSS, removed by
the OS even on a crash). Peak memory therefore depends on block, tile and class count only,
never on raster size. Because the summation order is fixed by the grid, the result does not
depend on who computed the tiles (this makes multi-process runs byte-identical).

For a resumable run the bottom seams go to ``n`` named files used in turn by successive block
rows: when block row ``r`` is done, file ``r % n`` holds everything row ``r + 1`` needs, and
it is not written again before row ``r + n`` starts. A run that records "row ``r`` is done"
before starting row ``r + n - 1`` (the pipeline waits for that) can therefore continue from
its last recorded row (:meth:`Blender.resume`); with three files, recording row ``r`` (an
fsync) overlaps with computing row ``r + 1``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from geopsp.classify.tiling import Tile, TileGrid, tile_weights


@dataclass
class FinishedBlock:
    """Final pixels of one block: weighted probability sums and weight sums."""

    row: int
    col: int
    sums: np.ndarray  # (K, h, w) float32, sum of weight * probability
    weights: np.ndarray  # (h, w) float32, sum of weights; 0 where no valid input


class _SeamFile:
    """Fixed-size slots in a file, one per block column.

    Without ``path`` the file is an unlinked temporary file in ``dir``; with ``path`` it is a
    named file that outlives the process (resumable runs).
    """

    def __init__(
        self,
        slots: int,
        slot_shape: tuple[int, ...],
        dir: str | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        self.slot_bytes = int(np.prod(slot_shape)) * 4
        if path is None:
            self._file = tempfile.TemporaryFile(dir=dir)  # noqa: SIM115 (closed by close())
        else:
            self._file = open(path, "r+b" if os.path.exists(path) else "w+b")  # noqa: SIM115
        self._shapes: dict[int, tuple[int, ...]] = {}

    def put(self, slot: int, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(arr, dtype=np.float32)
        os.pwrite(self._file.fileno(), data.tobytes(), slot * self.slot_bytes)
        self._shapes[slot] = data.shape

    def take(self, slot: int) -> np.ndarray | None:
        shape = self._shapes.pop(slot, None)
        if shape is None:
            return None
        n = int(np.prod(shape)) * 4
        buf = os.pread(self._file.fileno(), n, slot * self.slot_bytes)
        if len(buf) != n:  # a resumed run's file is shorter than its saved state says
            raise OSError(f"seam file {self._file.name} is truncated")
        return np.frombuffer(buf, dtype=np.float32).reshape(shape)

    def expect(self, slot: int, shape: tuple[int, ...]) -> None:
        """Declare that ``slot`` holds an array of ``shape`` (written by an earlier run)."""
        self._shapes[slot] = tuple(shape)

    def close(self) -> None:
        self._file.close()


class Blender:
    """Accumulate tile probabilities block by block and emit finished blocks.

    Parameters
    ----------
    grid : TileGrid
        The tiling; blocks must be at least one tile wide.
    n_classes : int
        Number of probability channels ``K``.
    blend : {"cosine", "linear", "none"}
        Window shape over the overlap.
    temp_dir : str, optional
        Where the bottom-seam file goes (default: the system temp folder).
    seam_paths : sequence of paths, optional
        Named bottom-seam files used in turn by successive block rows (resumable runs).
    """

    def __init__(
        self,
        grid: TileGrid,
        n_classes: int,
        blend: str = "cosine",
        temp_dir: str | None = None,
        seam_paths: tuple[str, ...] | None = None,
    ) -> None:
        self.grid, self.k, self.blend = grid, int(n_classes), blend
        shape = (self.k + 1, grid.tile, grid.block)
        if seam_paths is None:
            one = _SeamFile(grid.block_cols, shape, temp_dir)
            self._seams: tuple[_SeamFile, ...] = (one,)
        else:
            self._seams = tuple(_SeamFile(grid.block_cols, shape, path=p) for p in seam_paths)
        self._hseam: np.ndarray | None = None
        self._acc: np.ndarray | None = None
        self._block = -1
        self._origin = (0, 0)

    def start(self, block: int) -> None:
        """Begin block ``block`` (blocks must be started in order)."""
        g = self.grid
        r, c, _, _ = g.block_window(block)
        ah = min(g.height, r + g.block + g.tile) - r
        aw = min(g.width, c + g.block + g.tile) - c
        self._acc = np.zeros((self.k + 1, ah, aw), dtype=np.float32)
        self._block, self._origin = block, (r, c)

    def add(self, tile: Tile, probs: np.ndarray, valid: np.ndarray | None) -> None:
        """Add one tile's probabilities ``(K, T, T)``; ``valid`` (T, T) masks nodata pixels."""
        g, acc = self.grid, self._acc
        if acc is None or tile.block != self._block:
            raise ValueError(f"tile of block {tile.block} added to block {self._block}")
        r0, c0 = tile.row - self._origin[0], tile.col - self._origin[1]
        h = min(g.tile, g.height - tile.row)
        w = min(g.tile, g.width - tile.col)
        wt = tile_weights(g.tile, g.overlap, tile.edges, self.blend)[:h, :w]
        if valid is not None:
            wt = wt * valid[:h, :w]
        acc[: self.k, r0 : r0 + h, c0 : c0 + w] += probs[:, :h, :w] * wt
        acc[self.k, r0 : r0 + h, c0 : c0 + w] += wt

    def finish(self) -> FinishedBlock:
        """Add the seams of earlier blocks, keep this block's margins, return its final pixels."""
        g, acc = self.grid, self._acc
        if acc is None:
            raise ValueError("finish() called without start()")
        bi, bj = divmod(self._block, g.block_cols)
        r, c, bh, bw = g.block_window(self._block)
        if bj > 0 and self._hseam is not None:  # from the block to the left
            hs = self._hseam
            acc[:, : hs.shape[1], : hs.shape[2]] += hs
        self._hseam = None
        if bi > 0:  # from the block above
            vs = self._seams[(bi - 1) % len(self._seams)].take(bj)
            if vs is not None:
                acc[:, : vs.shape[1], : vs.shape[2]] += vs
        if acc.shape[2] > bw:
            self._hseam = acc[:, :, bw:].copy()
        if acc.shape[1] > bh:
            self._seams[bi % len(self._seams)].put(bj, acc[:, bh:, :bw])
        out = FinishedBlock(r, c, acc[: self.k, :bh, :bw], acc[self.k, :bh, :bw])
        self._acc = None
        return out

    def bottom_seam_shape(self, block: int) -> tuple[int, ...] | None:
        """Shape of the bottom seam that ``block`` leaves for the block below (None: none)."""
        g = self.grid
        r, _, bh, bw = g.block_window(block)
        ah = min(g.height, r + g.block + g.tile) - r
        return (self.k + 1, ah - bh, bw) if ah > bh else None

    def resume(self, row: int) -> None:
        """Continue at block row ``row``, reading the seams that row ``row - 1`` left on disk."""
        if row <= 0:
            return
        bc = self.grid.block_cols
        seams = self._seams[(row - 1) % len(self._seams)]
        for bj in range(bc):
            shape = self.bottom_seam_shape((row - 1) * bc + bj)
            if shape is not None:
                seams.expect(bj, shape)

    def close(self) -> None:
        for s in self._seams:
            s.close()


def blocks_from_stream(grid: TileGrid, blender: Blender, items, first_block: int = 0):
    """Drive ``blender`` with ``(tile, probs, valid)`` items in grid order; yield finished blocks.

    ``probs`` is None for tiles that were skipped (all nodata). ``first_block`` starts at a
    later block (a resumed run; items then start at that block's first tile).
    """
    it = iter(items)
    sizes = grid.block_sizes()
    for b in range(first_block, grid.n_blocks):
        n = sizes[b]
        blender.start(b)
        for _ in range(n):
            tile, probs, valid = next(it)
            if probs is not None:
                blender.add(tile, probs, valid)
        yield blender.finish()
