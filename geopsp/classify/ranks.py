"""Batches of tiles and how they are shared between torchrun ranks in ``geopsp classify``.

Batch ``m`` holds tiles ``m * batch_size`` .. ``(m + 1) * batch_size - 1`` of the grid's
processing order and is computed by rank ``m % world``; ranks other than 0 send their
probabilities to rank 0 (gloo), which blends and writes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from geopsp.classify.tiling import Tile, TileGrid
from geopsp.core.runtime import Runtime, collective


def owner(batch: int, rt: Runtime) -> int:
    """The rank that computes batch ``batch``."""
    return batch % rt.world


class Batches:
    """Consecutive groups of ``batch_size`` tiles in grid order (the same for every rank).

    Batches are computed on demand, so a huge raster does not need a list of all its tiles.
    """

    def __init__(self, grid: TileGrid, batch_size: int) -> None:
        self.grid, self.size = grid, int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.grid) // self.size)

    def __getitem__(self, m: int) -> list[Tile]:
        if not 0 <= m < len(self):
            raise IndexError(m)
        return self.grid.tile_range(m * self.size, (m + 1) * self.size)

    def __iter__(self) -> Iterator[list[Tile]]:
        return (self[m] for m in range(len(self)))


def batches(grid: TileGrid, batch_size: int) -> Batches:
    """The batches of ``grid`` (see :class:`Batches`)."""
    return Batches(grid, batch_size)


def send_batch(keep: np.ndarray, valid: np.ndarray, probs: np.ndarray | None, rt: Runtime) -> None:
    """Send one computed batch to rank 0 (see :func:`recv_batch`)."""
    import torch
    import torch.distributed as tdist

    with collective(rt):
        tdist.send(torch.from_numpy(keep.astype(np.uint8)), dst=0)
        tdist.send(torch.from_numpy(valid.astype(np.uint8)), dst=0)
        if probs is not None and len(probs):
            tdist.send(torch.from_numpy(np.ascontiguousarray(probs)), dst=0)


def recv_batch(
    src: int, n: int, tile: int, k: int, rt: Runtime
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receive ``(keep, valid, probs)`` of a batch of ``n`` tiles computed by rank ``src``.

    A rank that fails leaves the process group (:func:`geopsp.core.runtime.abort`), so a
    receive from it raises :class:`~geopsp.core.errors.RankFailed` with its error at once.
    """
    import torch
    import torch.distributed as tdist

    with collective(rt):
        keep = torch.empty(n, dtype=torch.uint8)
        tdist.recv(keep, src=src)
        valid = torch.empty((n, tile, tile), dtype=torch.uint8)
        tdist.recv(valid, src=src)
        nk = int(keep.sum())
        probs = torch.empty((nk, k, tile, tile), dtype=torch.float32)
        if nk:
            tdist.recv(probs, src=src)
    return keep.numpy().astype(bool), valid.numpy().astype(bool), probs.numpy()
