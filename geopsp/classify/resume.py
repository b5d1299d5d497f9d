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

import numpy as np

from geopsp.core.atomic import TMP_MARK
from geopsp.core.errors import OutputError

log = logging.getLogger(__name__)
SUFFIX = ".partial"
FORMAT = 1
SEAM_FILES = 3


def partial_dir(output: str | os.PathLike) -> Path:
    """The progress folder of ``output`` (``OUTPUT.partial``)."""
    return Path(str(output) + SUFFIX)


def model_identity(path: str | os.PathLike) -> str:
    """The model file's identity without reading its weights again: the checksum of its
    tensors (verified when the model was loaded) and a hash of its metadata."""
    import hashlib

    from geopsp.models.modelfile import CHECKSUM_KEY, read_header

    _, meta, _ = read_header(path)
    if CHECKSUM_KEY in meta:
        md = hashlib.sha256(meta.get("geopsp", "").encode()).hexdigest()
        return f"{meta[CHECKSUM_KEY]}:{md}"
    h = hashlib.sha256()  # a file without a checksum: hash all of it
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def input_identity(address: str) -> dict:
    """How a resumed run recognizes its input: the path, and size and time for local files."""
    p = Path(address)
    if not p.is_file():
        return {"input": address}
    st = p.stat()
    return {"input": str(p.resolve()), "input_bytes": st.st_size, "input_mtime_ns": st.st_mtime_ns}


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
        keys = sorted(set(old) | set(self.fingerprint))
        diff = [k for k in keys if old.get(k) != self.fingerprint.get(k)] or ["format"]
        k = diff[0]
        same = "run the same command as before"
        if k == "cpu_threads":
            same = f"use --threads {old.get(k)} as before"
        return (
            f"cannot resume {self.output}: {self.dir} holds a run with {k} = "
            f"{old.get(k)!r}, this run has {self.fingerprint.get(k)!r}; {same}, "
            f"or delete {self.dir} to start over"
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

    def _block_path(self, index: int) -> Path:
        return self.blocks_dir / f"{index:06d}.npz"

    def save_block(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Keep the output pixels of block ``index`` (before its row is committed)."""
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

    def finished_blocks(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(index, arrays)`` of every block of the finished rows, in block order."""
        for index in range(self.rows_done * self.block_cols):
            path = self._block_path(index)
            try:
                with np.load(path) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError) as exc:
                self.damaged = True
                raise OutputError(
                    f"{path} is missing or damaged; delete {self.dir} to start over"
                ) from exc
            yield index, arrays

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


def classify_fingerprint(address: str, predictor, grid, bands, options) -> dict:
    """Everything that decides the bytes of a classification (see :class:`Journal`)."""
    import torch

    from geopsp import __version__

    source = getattr(predictor, "source", None)
    model = model_identity(source) if source else json.dumps(predictor.metadata, sort_keys=True)
    return {
        **input_identity(address),
        "width": grid.width,
        "height": grid.height,
        "bands": list(bands) if bands else None,
        "model": model,
        "tile": grid.tile,
        "overlap": grid.overlap,
        "block": grid.block,
        "batch_size": options.batch_size,
        "blend": options.blend,
        "tta": options.tta,
        "probabilities": bool(options.probabilities or options.confidence),
        "cog": bool(options.cog),
        "creation_options": dict(sorted((options.creation_options or {}).items())),
        "device": str(getattr(predictor.device, "type", predictor.device)),
        "amp": bool(predictor.amp),
        # oneDNN's results can depend on the thread count: keep it for a byte-identical result
        "cpu_threads": torch.get_num_threads() if str(predictor.device).startswith("cpu") else None,
        "geopsp": __version__,
        "torch": torch.__version__,
    }


def open_journal(output, fingerprint: dict, grid, dist) -> tuple[Journal | None, int]:
    """Open the progress folder on rank 0 and tell every rank where to start.

    Returns the journal (None on other ranks) and the first block row to compute. An error
    on rank 0 is raised on every rank, so no rank waits for the others forever.
    """
    from geopsp.classify.ranks import broadcast

    journal, answer = None, 0
    if dist.rank == 0:
        journal = Journal(output, fingerprint, grid.block_cols, grid.block)
        try:
            answer = journal.open()
        except OutputError as exc:
            answer = str(exc)
            journal = None
    answer = broadcast(answer, dist)
    if isinstance(answer, str):
        raise OutputError(answer)
    return journal, int(answer)
