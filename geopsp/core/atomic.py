"""Atomic outputs: write under a temporary name beside the target, rename when complete.

A run that fails or is interrupted leaves neither the final path nor the temporary one
behind, so a later run or a GIS never mistakes a partial file for a finished one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from geopsp.core.errors import OutputError, UsageError

TMP_MARK = ".geopsp-tmp-"
log = logging.getLogger(__name__)


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing ``path`` without ``overwrite`` and an unwritable parent folder.

    Returns the path as a :class:`~pathlib.Path`.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(f"{p} already exists; use --overwrite to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"cannot write {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {p}: folder {parent} is not writable")
    return p


def refuse_replacing_inputs(output: str | os.PathLike, inputs, overwrite: bool) -> None:
    """Refuse an ``--overwrite`` that would delete an input: ``output`` is a folder holding it.

    ``inputs`` are paths or GDAL/OGR addresses; only local files are checked.
    """
    out = Path(output)
    if not overwrite or not out.is_dir():
        return
    root = out.resolve()
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        path = Path(item).resolve()
        if path == root or root in path.parents:
            raise UsageError(
                f"{item} is inside {output}, which --overwrite would delete; write the output "
                "to another folder"
            )


def leftovers(path: str | os.PathLike) -> list[Path]:
    """Temporary files or folders of ``path`` left behind by runs that were killed."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return []
    return sorted(folder / n for n in names if n.startswith(TMP_MARK) and n.endswith(f"-{p.name}"))


def _warn_leftovers(path: Path) -> None:
    found = leftovers(path)
    if found:
        log.warning(
            "%s: %d temporary file(s) left by an interrupted run (e.g. %s); they are not used "
            "and can be deleted", path, len(found), found[0].name,
        )  # fmt: skip


def temp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same folder, so the rename is atomic)."""
    return path.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{path.name}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def disk_error(exc: OSError, path: Path) -> OutputError:
    """Translate an OSError raised while writing into a clear :class:`OutputError`."""
    if exc.errno == errno.ENOSPC:
        return OutputError(
            f"no space left on the device while writing {path}; free space or write elsewhere"
        )
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


_FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def is_disk_full(exc: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """Whether ``exc`` (or an error it was raised from) comes from a full disk.

    GDAL and SQLite (GeoPackage) report it in their own exception types, with the operating
    system's words in the message or only as a generic "write error"; for the latter, a
    ``folder`` whose file system has (almost) no space left decides.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    write_failed = False
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if any(t in text for t in _FULL_TEXTS):
            return True
        write_failed |= "write" in text and ("fail" in text or "error" in text)
        e = e.__cause__ or e.__context__
    if write_failed and folder is not None:
        try:
            st = os.statvfs(folder)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < 1024 * 1024
    return False


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    overwrite: bool = False,
    sidecars: Sequence[str] = (),
    is_dir: bool = False,
    tmp: Path | None = None,
) -> Iterator[Path]:
    """Yield a temporary path to write; on success move it (and its sidecars) to ``path``.

    Parameters
    ----------
    path : path-like
        Final output path (file or folder).
    overwrite : bool
        Replace an existing output. Stale sidecars (``path`` + each suffix in ``sidecars``)
        are removed too, so no old ``.aux.xml``/``.qml`` describes the new file.
    sidecars : sequence of str
        Suffixes such as ``".aux.xml"``; files written beside the temporary path with these
        suffixes are renamed with it.
    is_dir : bool
        Create the temporary path as an empty folder.
    tmp : Path, optional
        A fixed temporary path in the same folder instead of a random one (a resumable run
        reuses it); a file left there by an interrupted run is removed first.
    """
    final = check_writable(path, overwrite)
    if tmp is None:
        tmp = temp_name(final)
    else:
        for p in (tmp, *(Path(str(tmp) + s) for s in sidecars)):
            _remove(p)
    _warn_leftovers(final)
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException as exc:
        full = isinstance(exc, Exception) and is_disk_full(exc, tmp.parent)  # before clean-up
        _remove(tmp)
        for s in sidecars:
            _remove(Path(str(tmp) + s))
        if full:
            raise disk_error(OSError(errno.ENOSPC, "no space left"), final) from exc
        raise
    try:
        if final.exists() or final.is_symlink():
            if not overwrite:  # appeared while we were working
                raise OutputError(f"{final} already exists; use --overwrite to replace it")
            _remove(final)
        for s in sidecars:
            _remove(Path(str(final) + s))
        for s in sidecars:
            side = Path(str(tmp) + s)
            if side.exists():
                os.replace(side, str(final) + s)
        os.replace(tmp, final)
    except OSError as exc:
        _remove(tmp)
        raise disk_error(exc, final) from exc
