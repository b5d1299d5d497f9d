"""The classify pipeline: reader thread -> batched forward passes -> blender -> writer thread.

* A **reader** thread reads and normalizes the tiles of upcoming batches (GDAL and numpy
  release the GIL) and drops tiles that are entirely nodata.
* The **main** thread only runs forward passes, so the model never waits for I/O while the
  reader keeps ``prefetch`` batches ready.
* A **blender** thread accumulates weighted probabilities block by block
  (:mod:`geopsp.classify.blending`) and turns finished blocks into output arrays; a **writer**
  thread writes them.

Under ``torchrun`` batch ``m`` is computed by rank ``m % world``; ranks other than 0 send
their probabilities to rank 0, which blends and writes everything. Batches are the same
groups of tiles as in a single-process run and blending order is fixed by the grid, so the
output is byte-identical.

A resumed run starts at a block row boundary (``start_block``) but keeps the batches of an
uninterrupted run: the first batch may hold tiles of finished blocks, which are computed and
dropped, so every forward pass sees exactly the same inputs.
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

from geopsp.classify.blending import Blender, FinishedBlock, blocks_from_stream
from geopsp.classify.ranks import Dist, batches, recv_batch, send_batch
from geopsp.classify.tiling import Tile, TileGrid

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
class _RowDone:
    """Marker after the last block of block row ``row`` (the writer commits progress)."""

    row: int


class _Commits:
    """Block rows whose progress the writer has committed (resumable runs)."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.cond = threading.Condition()

    def done(self, row: int) -> None:
        with self.cond:
            self.last = row
            self.cond.notify_all()

    def wait(self, row: int, stop: threading.Event) -> None:
        with self.cond:
            while self.last < row:
                if stop.is_set():
                    raise _Stopped
                self.cond.wait(_POLL)


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
    start_block: int = 0,
    seam_paths: tuple[str, ...] | None = None,
    on_row: Callable[[int], None] | None = None,
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
        Receives each :class:`~geopsp.classify.blending.FinishedBlock` in block order, in the writer
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
    start_block : int
        First block to compute, at the start of a block row (resuming; the blender must find
        the seams of the row above in ``seam_paths``).
    seam_paths : sequence of str, optional
        Named seam files of a resumable run, at least three (see
        :class:`~geopsp.classify.blending.Blender`).
    on_row : callable, optional
        Called with ``row`` in the writer thread once every block of block row ``row`` has
        been emitted and the blender has written that row's seams (a resumable run makes
        them durable and records its progress here).

    Returns
    -------
    dict
        ``tiles``, ``computed`` (tiles that ran through the model; on rank 0 all ranks'),
        ``skipped`` (all-nodata tiles), ``forward_s`` (seconds in this rank's forward passes).
    """
    dist = dist or Dist()
    groups = batches(grid, batch_size)
    bc = grid.block_cols
    if start_block % bc:
        raise ValueError(f"start_block {start_block} is not at the start of a block row")
    if on_row is not None and len(seam_paths or ()) < 3:
        raise ValueError("on_row needs at least three named seam files")
    first = grid.first_tile(start_block)  # tiles before it are finished
    m0 = first // groups.size
    mine = range(m0 + (dist.rank - m0) % dist.world, len(groups), dist.world)
    commits = _Commits(start_block // bc - 1)
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
        for m in range(m0, len(groups)):
            tiles, keep, valid, probs = _get(q_blend, stop)
            j = 0
            for i, t in enumerate(tiles):
                if keep[i]:
                    j += 1
                    if m * groups.size + i >= first:
                        yield t, probs[j - 1], valid[i]
                elif m * groups.size + i >= first:
                    yield t, None, None

    def blender() -> None:
        b = Blender(grid, n_classes, blend, temp_dir, seam_paths)
        b.resume(start_block // bc)
        try:
            for k, block in enumerate(blocks_from_stream(grid, b, blend_items(), start_block)):
                _put(q_out, block, stop)
                if (index := start_block + k) % bc == bc - 1 and on_row is not None:
                    row = index // bc
                    _put(q_out, _RowDone(row), stop)
                    # Row + 1 overwrites the seams of row + 1 - n, which the recorded progress
                    # needs until the writer records row + 2 - n as done.
                    commits.wait(row + 2 - len(seam_paths or ()), stop)
            _put(q_out, None, stop)
        finally:
            b.close()

    def writer() -> None:
        while (item := _get(q_out, stop)) is not None:
            if isinstance(item, _RowDone):
                on_row(item.row)  # type: ignore[misc]  # markers are sent only with on_row
                commits.done(item.row)
            else:
                emit(item)

    stages = [_Stage("geopsp-reader", reader, stop)]
    if dist.rank == 0:
        stages += [_Stage("geopsp-blender", blender, stop), _Stage("geopsp-writer", writer, stop)]
    for s in stages:
        s.start()
    try:
        for m in range(m0, len(groups)):
            tiles, owner = groups[m], dist.owner(m)
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
                    send_batch(keep, valid, probs)
                    continue
            elif dist.rank == 0:
                keep, valid, probs = recv_batch(owner, len(tiles), grid.tile, n_classes)
                stats["computed"] += int(keep.sum())  # rank 0 reports the whole raster
                stats["skipped"] += int((~keep).sum())
            else:
                continue
            _put(q_blend, (tiles, keep, valid, probs), stop)
            if on_batch is not None:  # only the tiles of unfinished blocks count
                on_batch(len(tiles) - max(0, first - m * groups.size))
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
