"""The classify pipeline: reader thread -> batched forward passes -> blender -> writer thread.

* A **reader** thread reads and normalizes the tiles of upcoming batches (GDAL and numpy
  release the GIL) and drops tiles that are entirely nodata.
* The **main** thread only runs forward passes, so the model never waits for I/O while the
  reader keeps ``prefetch`` batches ready.
* A **blender** thread accumulates weighted probabilities block by block
  (:mod:`geopsp.blending`) and turns finished blocks into output arrays; a **writer**
  thread writes them.

Under ``torchrun`` batch ``m`` is computed by rank ``m % world``; ranks other than 0 send
their probabilities to rank 0, which blends and writes everything. Batches are the same
groups of tiles as in a single-process run and blending order is fixed by the grid, so the
output is byte-identical.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from geopsp.blending import Blender, FinishedBlock, blocks_from_stream
from geopsp.tiling import Tile, TileGrid

log = logging.getLogger(__name__)
_POLL = 0.1


class _Stopped(Exception):
    """Another stage failed; this one stops quietly."""


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_POLL)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=_POLL)
        except queue.Empty:
            continue


class _Stage(threading.Thread):
    """A daemon thread that records its exception and stops the whole pipeline on failure."""

    def __init__(self, name: str, fn: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.fn, self.stop = fn, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except _Stopped:
            pass
        except BaseException as exc:  # re-raised in the main thread
            self.error = exc
            self.stop.set()


@dataclass
class Dist:
    """Rank and world size of a torch.distributed run (``world == 1``: single process)."""

    rank: int = 0
    world: int = 1

    def owner(self, batch: int) -> int:
        return batch % self.world


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


def _send_batch(keep, valid, probs) -> None:
    import torch
    import torch.distributed as tdist

    tdist.send(torch.from_numpy(keep.astype(np.uint8)), dst=0)
    tdist.send(torch.from_numpy(valid.astype(np.uint8)), dst=0)
    if probs is not None and len(probs):
        tdist.send(torch.from_numpy(np.ascontiguousarray(probs)), dst=0)


def _recv_batch(src: int, n: int, tile: int, k: int):
    import torch
    import torch.distributed as tdist

    keep = torch.empty(n, dtype=torch.uint8)
    tdist.recv(keep, src=src)
    valid = torch.empty((n, tile, tile), dtype=torch.uint8)
    tdist.recv(valid, src=src)
    nk = int(keep.sum())
    probs = torch.empty((nk, k, tile, tile), dtype=torch.float32)
    if nk:
        tdist.recv(probs, src=src)
    return keep.numpy().astype(bool), valid.numpy().astype(bool), probs.numpy()


def run_pipeline(
    grid: TileGrid,
    read_tile: Callable[[Tile], tuple[np.ndarray, np.ndarray]],
    forward: Callable[[np.ndarray], np.ndarray],
    emit: Callable[[FinishedBlock], None],
    n_classes: int,
    batch_size: int = 4,
    blend: str = "cosine",
    prefetch: int = 3,
    dist: Dist | None = None,
    on_batch: Callable[[int], None] | None = None,
    temp_dir: str | None = None,
    workers: int = 0,
) -> dict:
    """Run tiled inference over ``grid``.

    Parameters
    ----------
    grid : TileGrid
        Tiles and blocks.
    read_tile : callable
        ``tile -> (x (C, T, T) float32 normalized, valid (T, T) bool)``; called in the reader
        thread.
    forward : callable
        ``x (n, C, T, T) -> probabilities (n, K, T, T)`` float32; called in the main thread.
    emit : callable
        Receives each :class:`~geopsp.blending.FinishedBlock` in block order, in the writer
        thread (rank 0 only).
    n_classes : int
        ``K``.
    batch_size, blend, prefetch : see ``geopsp classify``.
    dist : Dist, optional
        Rank and world size; batches are split round-robin between ranks.
    on_batch : callable, optional
        Called on rank 0 with the number of tiles after each batch (progress).
    temp_dir : str, optional
        Folder of the blender's seam file.
    workers : int
        Threads reading the tiles of a batch in parallel (0 or 1: the reader thread alone);
        ``read_tile`` must then be thread-safe.

    Returns
    -------
    dict
        ``tiles``, ``computed`` (tiles that ran through the model; on rank 0 all ranks'),
        ``skipped`` (all-nodata tiles), ``forward_s`` (seconds in this rank's forward passes).
    """
    dist = dist or Dist()
    groups = batches(grid, batch_size)
    mine = range(dist.rank, len(groups), dist.world)
    stop = threading.Event()
    q_in: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    q_blend: queue.Queue = queue.Queue(maxsize=max(2, prefetch))
    q_out: queue.Queue = queue.Queue(maxsize=2)
    stats = {"tiles": len(grid), "computed": 0, "skipped": 0, "forward_s": 0.0}

    def reader() -> None:
        pool = ThreadPoolExecutor(workers, "geopsp-read") if workers > 1 else None
        try:
            for m in mine:
                _read_batch(m, pool)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _read_batch(m: int, pool: ThreadPoolExecutor | None) -> None:
        read = pool.map(read_tile, groups[m]) if pool else map(read_tile, groups[m])
        xs, valids = zip(*read, strict=True)
        valid = np.stack(valids)
        keep = valid.reshape(len(valid), -1).any(axis=1)
        x = np.stack([xi for xi, k in zip(xs, keep, strict=True) if k]) if keep.any() else None
        _put(q_in, (m, keep, valid, x), stop)

    def blend_items() -> Iterator:
        for m in range(len(groups)):
            tiles, keep, valid, probs = _get(q_blend, stop)
            j = 0
            for i, t in enumerate(tiles):
                if keep[i]:
                    yield t, probs[j], valid[i]
                    j += 1
                else:
                    yield t, None, None
            del m

    def blender() -> None:
        b = Blender(grid, n_classes, blend, temp_dir)
        try:
            for block in blocks_from_stream(grid, b, blend_items()):
                _put(q_out, block, stop)
            _put(q_out, None, stop)
        finally:
            b.close()

    def writer() -> None:
        while (block := _get(q_out, stop)) is not None:
            emit(block)

    stages = [_Stage("geopsp-reader", reader, stop)]
    if dist.rank == 0:
        stages += [_Stage("geopsp-blender", blender, stop), _Stage("geopsp-writer", writer, stop)]
    for s in stages:
        s.start()
    try:
        for m, tiles in enumerate(groups):
            owner = dist.owner(m)
            if owner == dist.rank:
                got, keep, valid, x = _get(q_in, stop)
                assert got == m
                probs = None
                if x is not None:
                    t0 = time.perf_counter()
                    probs = forward(x)
                    stats["forward_s"] += time.perf_counter() - t0
                    stats["computed"] += len(x)
                stats["skipped"] += int((~keep).sum())
                if dist.rank != 0:
                    _send_batch(keep, valid, probs)
                    continue
            elif dist.rank == 0:
                keep, valid, probs = _recv_batch(owner, len(tiles), grid.tile, n_classes)
                stats["computed"] += int(keep.sum())  # rank 0 reports the whole raster
                stats["skipped"] += int((~keep).sum())
            else:
                continue
            _put(q_blend, (tiles, keep, valid, probs), stop)
            if on_batch is not None:
                on_batch(len(tiles))
        for s in stages:
            while s.is_alive():
                s.join(_POLL)
                if stop.is_set():
                    break
    except _Stopped:
        pass
    finally:
        stop_needed = any(s.is_alive() for s in stages)
        if stop_needed:
            stop.set()
        for s in stages:
            s.join()
    for s in stages:
        if s.error is not None:
            raise s.error
    return stats


def init_distributed() -> Dist:
    """Join the torchrun process group (gloo) when ``WORLD_SIZE > 1``; else a single process.

    gloo works for CPU tensors on every platform; only probabilities (on the CPU anyway)
    travel between ranks, so it is used even when the model runs on CUDA.
    """
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    if not tdist.is_initialized():
        tdist.init_process_group("gloo")
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size())
