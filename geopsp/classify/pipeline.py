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

A resumed run starts at a block row boundary (:attr:`Progress.start_block`) but keeps the
batches of an uninterrupted run: the first batch may hold tiles of finished blocks, which are
computed and dropped, so every forward pass sees exactly the same inputs.

:func:`run_pipeline` sets up a :class:`_Run` (grid, batches, queues, stop flag, counters) and
runs the steps :func:`_read`, :func:`_compute`, :func:`_blend` and :func:`_write` on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from geopsp.classify.blending import Blender, FinishedBlock, blocks_from_stream
from geopsp.classify.ranks import Batches, batches, owner, recv_batch, send_batch
from geopsp.classify.threads import POLL, Commits, RowDone, Stage, Stopped, check, get, put
from geopsp.classify.tiling import Tile, TileGrid
from geopsp.core.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """How the pipeline runs: ``geopsp classify``'s ``--batch-size``, ``--blend`` and
    ``--read-threads``, the batches read ahead, and the folder of the blender's seam file."""

    batch_size: int = 4
    blend: str = "cosine"
    read_threads: int = 0  # threads reading the tiles of a batch (0 or 1: the reader alone)
    prefetch: int = 3
    temp_dir: str | None = None


class Progress:
    """Where a run starts and what it reports. This base class: a run from the first block
    that reports nothing; subclasses override what they need.

    A run is resumable when :attr:`seam_paths` names at least three seam files (see
    :class:`~geopsp.classify.blending.Blender`); :meth:`row_done` is then called, in the
    writer thread, once every block of a block row has been emitted and its seams written.
    """

    start_block: int = 0  # the start of a block row; earlier blocks are finished
    seam_paths: tuple[str, ...] | None = None

    def tiles_done(self, n: int) -> None:
        """``n`` more tiles are computed (rank 0 counts every rank's)."""

    def row_done(self, row: int) -> None:
        """Block rows ``0 .. row`` are emitted (resumable runs only)."""


@dataclass
class Stats:
    """What a run did: tiles of the grid, tiles through the model (rank 0: all ranks'),
    all-nodata tiles skipped, and seconds in this rank's forward passes."""

    tiles: int = 0
    computed: int = 0
    skipped: int = 0
    forward_s: float = 0.0


@dataclass
class _Run:
    """The state the pipeline's steps share."""

    grid: TileGrid
    groups: Batches
    rt: Runtime
    progress: Progress
    first: int  # first tile of an unfinished block
    stop: threading.Event = field(default_factory=threading.Event)
    stats: Stats = field(default_factory=Stats)
    q_in: queue.Queue = field(default_factory=queue.Queue)
    q_blend: queue.Queue = field(default_factory=queue.Queue)
    q_out: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=2))
    commits: Commits | None = None

    @property
    def m0(self) -> int:
        """The first batch that holds a tile of an unfinished block."""
        return self.first // self.groups.size

    def unfinished(self, m: int) -> int:
        """How many tiles of batch ``m`` belong to unfinished blocks."""
        return len(self.groups[m]) - max(0, self.first - m * self.groups.size)


def run_pipeline(
    grid: TileGrid,
    read_tile: Callable[[Tile], tuple[np.ndarray, np.ndarray]],
    forward: Callable[[np.ndarray], np.ndarray],
    emit: Callable[[FinishedBlock], None],
    n_classes: int,
    settings: Settings | None = None,
    rt: Runtime | None = None,
    progress: Progress | None = None,
) -> Stats:
    """Run tiled inference over ``grid``.

    Parameters
    ----------
    grid : TileGrid
        Tiles and blocks.
    read_tile : callable
        ``tile -> (x (C, T, T) float32 normalized, valid (T, T) bool)``; called in the reader
        thread (and its ``read_threads`` helpers: it must then be thread-safe).
    forward : callable
        ``x (n, C, T, T) -> probabilities (n, K, T, T)`` float32; called in the main thread.
    emit : callable
        Receives each :class:`~geopsp.classify.blending.FinishedBlock` in block order, in the
        writer thread (rank 0 only).
    n_classes : int
        ``K``.
    settings : Settings, optional
    rt : Runtime, optional
        Rank and world size; batches are split round-robin between ranks.
    progress : Progress, optional
        Where to start (resuming) and what to tell about progress.

    Returns
    -------
    Stats
    """
    settings, rt, progress = settings or Settings(), rt or Runtime(), progress or Progress()
    bc = grid.block_cols
    if progress.start_block % bc:
        raise ValueError(f"start_block {progress.start_block} is not at the start of a block row")
    if progress.seam_paths is not None and len(progress.seam_paths) < 3:
        raise ValueError("a resumable run needs at least three named seam files")
    prefetch = max(1, settings.prefetch)
    run = _Run(
        grid, batches(grid, settings.batch_size), rt, progress,
        first=grid.first_tile(progress.start_block),  # tiles before it are finished
        stats=Stats(tiles=len(grid)), q_in=queue.Queue(maxsize=prefetch),
        q_blend=queue.Queue(maxsize=max(2, prefetch)),
        commits=Commits(progress.start_block // bc - 1),
    )  # fmt: skip
    stages = [
        Stage("geopsp-reader", lambda: _read(run, read_tile, settings.read_threads), run.stop)
    ]
    if rt.rank == 0:
        stages += [
            Stage("geopsp-blender", lambda: _blend(run, n_classes, settings), run.stop),
            Stage("geopsp-writer", lambda: _write(run, emit), run.stop),
        ]
    _run_stages(run, stages, lambda: _compute(run, forward, n_classes))
    return run.stats


def _run_stages(run: _Run, stages: list[Stage], main: Callable[[], None]) -> None:
    """Start ``stages``, run ``main`` in this thread, wait for them; raise the first error."""
    for s in stages:
        s.start()
    try:
        main()
        for s in stages:
            while s.is_alive():
                s.join(POLL)
                if run.stop.is_set():
                    break
    except Stopped:
        pass
    finally:
        if any(s.is_alive() for s in stages):
            run.stop.set()
        for s in stages:
            s.join()
    for s in stages:
        if s.error is not None:
            raise s.error


def _read(run: _Run, read_tile: Callable, threads: int) -> None:
    """Reader step: read this rank's batches, drop all-nodata tiles, queue them for forward."""
    rt, n = run.rt, len(run.groups)
    mine = range(run.m0 + (rt.rank - run.m0) % rt.world, n, rt.world)
    pool = ThreadPoolExecutor(threads, "geopsp-read") if threads > 1 else None
    try:
        for m in mine:
            tiles = run.groups[m]
            read = pool.map(read_tile, tiles) if pool else map(read_tile, tiles)
            xs, valids = zip(*read, strict=True)
            valid = np.stack(valids)
            keep = valid.reshape(len(valid), -1).any(axis=1)
            x = np.stack([xi for xi, k in zip(xs, keep, strict=True) if k]) if keep.any() else None
            put(run.q_in, (m, keep, valid, x), run.stop)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _forward(run: _Run, m: int, forward: Callable) -> tuple:
    """Run the model on this rank's batch ``m`` (read ahead by :func:`_read`)."""
    got, keep, valid, x = get(run.q_in, run.stop)
    if got != m:
        raise RuntimeError(f"the reader sent batch {got} where batch {m} was due")
    probs = None
    if x is not None:
        t0 = time.perf_counter()
        probs = forward(x)
        run.stats.forward_s += time.perf_counter() - t0
    return keep, valid, probs


def _compute(run: _Run, forward: Callable, n_classes: int) -> None:
    """Main step: forward this rank's batches; other ranks send theirs to rank 0, which
    receives them and queues every batch, in order, for the blender."""
    rt, tile = run.rt, run.grid.tile
    for m in range(run.m0, len(run.groups)):
        src = owner(m, rt)
        if src == rt.rank:
            keep, valid, probs = _forward(run, m, forward)
        elif rt.rank == 0:
            check(run.stop)  # never start a receive when this rank is stopping
            keep, valid, probs = recv_batch(src, len(run.groups[m]), tile, n_classes, rt)
        else:
            continue
        run.stats.computed += int(keep.sum())  # rank 0 reports the whole raster
        run.stats.skipped += int((~keep).sum())
        if rt.rank != 0:
            check(run.stop)
            send_batch(keep, valid, probs, rt)
            continue
        put(run.q_blend, (run.groups[m], keep, valid, probs), run.stop)
        run.progress.tiles_done(run.unfinished(m))  # only the tiles of unfinished blocks


def _blend_items(run: _Run) -> Iterator:
    """``(tile, probs or None, valid or None)`` of every tile of an unfinished block, in order."""
    size = run.groups.size
    for m in range(run.m0, len(run.groups)):
        tiles, keep, valid, probs = get(run.q_blend, run.stop)
        j = 0
        for i, t in enumerate(tiles):
            if keep[i]:
                j += 1
            if m * size + i < run.first:
                continue
            yield (t, probs[j - 1], valid[i]) if keep[i] else (t, None, None)


def _blend(run: _Run, n_classes: int, settings: Settings) -> None:
    """Blender step (rank 0): blend tiles into finished blocks, queue them for the writer,
    and after each block row a marker for the writer to record it (resumable runs)."""
    grid, progress, bc = run.grid, run.progress, run.grid.block_cols
    start, seams = progress.start_block, progress.seam_paths
    b = Blender(grid, n_classes, settings.blend, settings.temp_dir, seams)
    b.resume(start // bc)
    try:
        for k, block in enumerate(blocks_from_stream(grid, b, _blend_items(run), start)):
            put(run.q_out, block, run.stop)
            if (index := start + k) % bc == bc - 1 and seams is not None:
                row = index // bc
                put(run.q_out, RowDone(row), run.stop)
                # Row + 1 overwrites the seams of row + 1 - n, which the recorded progress
                # needs until the writer records row + 2 - n as done.
                run.commits.wait(row + 2 - len(seams), run.stop)  # type: ignore[union-attr]
        put(run.q_out, None, run.stop)
    finally:
        b.close()


def _write(run: _Run, emit: Callable[[FinishedBlock], None]) -> None:
    """Writer step (rank 0): emit finished blocks; record finished block rows."""
    while (item := get(run.q_out, run.stop)) is not None:
        if isinstance(item, RowDone):
            run.progress.row_done(item.row)
            run.commits.done(item.row)  # type: ignore[union-attr]
        else:
            emit(item)
