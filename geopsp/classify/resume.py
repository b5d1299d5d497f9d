"""Progress of a resumable ``geopsp classify --resume`` run, kept beside the output.

A resumable run keeps a folder ``OUTPUT.partial/`` next to the class raster:

``state.json``
    What is being computed (the *fingerprint*: input, model, options) and how many block
    rows are final. It is replaced atomically, after everything it counts is on disk.
``blocks/NNNNNN.npz``
    The output pixels of every finished block (classes, and probabilities when asked for),
    compressed.
``seams-0.f32``, ``seams-1.f32``, ``seams-2.f32``
    The blend sums that a finished block row leaves for the next one (rows in turn; with
    three files the blender goes on with the next row while this one is being recorded).
``lock``
    Held while a run works in the folder, so two runs never share it.

A resumed run writes the saved blocks into a new output with the same calls, in the same
order, as an uninterrupted run, then computes the rest from the next block row, so the
result is byte-identical. The folder is deleted when the output is complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geopsp.classify.fingerprint import mismatch
from geopsp.core.atomic import TMP_MARK
from geopsp.core.errors import OutputError

if TYPE_CHECKING:
    from geopsp.core.runtime import Runtime

log = logging.getLogger(__name__)
SUFFIX = ".partial"
FORMAT = 1
SEAM_FILES = 3


def partial_dir(output: str | os.PathLike) -> Path:
    """The progress folder of ``output`` (``OUTPUT.partial``)."""
    return Path(str(output) + SUFFIX)


class Journal:
    """The progress folder of one output (see the module docstring).

    Parameters
    ----------
    output : path-like
        The class raster being written.
    fingerprint : dict
        JSON-serializable description of everything that decides the output's bytes; a run
        can only continue a folder made with an equal fingerprint.
    block_cols : int
        Blocks per block row of the grid.
    block : int
        Block size in pixels.
    """

    def __init__(
        self, output: str | os.PathLike, fingerprint: dict, block_cols: int, block: int
    ) -> None:
        self.output = Path(output)
        self.dir = partial_dir(output)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back
        self.block_cols, self.block = int(block_cols), int(block)
        self.rows_done = 0
        self.damaged = False  # a saved block could not be read: continuing is impossible
        self._lock = None

    @property
    def blocks_dir(self) -> Path:
        return self.dir / "blocks"

    def seam_paths(self) -> tuple[str, ...]:
        return tuple(str(self.dir / f"seams-{i}.f32") for i in range(SEAM_FILES))

    def temp_for(self, path: str | os.PathLike, stage: str = "") -> Path:
        """A fixed temporary name beside ``path``, so a resumed run replaces the old one."""
        p = Path(path)
        return p.with_name(f"{TMP_MARK}resume{stage}-{p.name}")

    def open(self) -> int:
        """Create the folder or take over an earlier run's; return the finished block rows.

        Raises
        ------
        OutputError
            The folder is in use, damaged, or was made for another input, model or options.
        """
        try:
            self.blocks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {self.dir}: {exc.strerror or exc}") from exc
        self._take_lock()
        state_path = self.dir / "state.json"
        if not state_path.exists():  # new, or killed before its first commit
            self._write_state()
            return 0
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            rows, old = int(state["rows_done"]), state["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.close()
            raise OutputError(
                f"{state_path} is damaged ({exc}); delete {self.dir} to start over"
            ) from exc
        if state.get("format") != FORMAT or old != self.fingerprint:
            self.close()
            raise OutputError(self._mismatch(old if isinstance(old, dict) else {}))
        self.rows_done = rows
        if rows:
            log.warning("%s: continuing after %d finished block rows", self.output, rows)
        return rows

    def _mismatch(self, old: dict) -> str:
        diff, hint = mismatch(old, self.fingerprint)
        return (
            f"cannot resume {self.output}: {self.dir} holds a run with {diff}; "
            f"{hint or 'run the same command as before, or '}delete {self.dir} to start over"
        )

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one run at a time is on the user
            return
        f = open(self.dir / "lock", "a+")  # noqa: SIM115 (held until close())
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.close()
            raise OutputError(
                f"another geopsp run is writing {self.output} ({self.dir} is locked); "
                "wait for it to finish or stop it"
            ) from exc
        self._lock = f

    def _write_state(self) -> None:
        state = {"format": FORMAT, "rows_done": self.rows_done, "fingerprint": self.fingerprint}
        tmp = self.dir / "state.json.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "state.json")
        _sync_dir(self.dir)

    @property
    def start_block(self) -> int:
        """The first block that is not final (the start of the first unfinished block row)."""
        return self.rows_done * self.block_cols

    def _block_path(self, index: int) -> Path:
        return self.blocks_dir / f"{index:06d}.npz"

    def save_block(self, row: int, col: int, arrays: dict[str, np.ndarray]) -> None:
        """Keep the output pixels of the block whose top-left pixel is ``row, col`` (before
        its block row is committed)."""
        index = (row // self.block) * self.block_cols + col // self.block
        path = self._block_path(index)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())

    def commit(self, row: int) -> None:
        """Record that block rows ``0 .. row`` are final, once their blocks and the seams that
        row ``row`` left are on disk (they must survive a power cut, not only a crash)."""
        seams = self.seam_paths()[row % SEAM_FILES]
        if os.path.exists(seams):  # a single block row leaves no seams
            fd = os.open(seams, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(self.blocks_dir)
        self.rows_done = row + 1
        self._write_state()

    def finished_blocks(self) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """``(row, col, arrays)`` of every block of the finished rows, in block order (``row``,
        ``col``: the block's top-left pixel)."""
        for index in range(self.start_block):
            path = self._block_path(index)
            try:
                with np.load(path) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError) as exc:
                self.damaged = True
                raise OutputError(
                    f"{path} is missing or damaged; delete {self.dir} to start over"
                ) from exc
            bi, bj = divmod(index, self.block_cols)
            yield bi * self.block, bj * self.block, arrays

    def close(self, remove: bool = False) -> None:
        """Release the folder; ``remove`` deletes it (the output is complete)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


def _sync_dir(path: Path) -> None:
    """fsync a folder, so renames and new files in it survive a power cut (POSIX only)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_journal(output, fingerprint: dict, grid, rt: Runtime) -> tuple[Journal | None, int]:
    """Open the progress folder on rank 0 and tell every rank where to start.

    Returns the journal (None on other ranks) and the first block to compute. An error on
    rank 0 is raised on every rank, so no rank waits for the others forever.
    """
    from geopsp.core.runtime import broadcast

    journal, answer = None, 0
    if rt.rank == 0:
        journal = Journal(output, fingerprint, grid.block_cols, grid.block)
        try:
            journal.open()
            answer = journal.start_block
        except OutputError as exc:
            answer = str(exc)
            journal = None
    answer = broadcast(answer, rt)
    if isinstance(answer, str):
        raise OutputError(answer)
    return journal, int(answer)
