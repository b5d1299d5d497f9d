"""The rasters ``geopsp classify`` writes: classes, probabilities, confidence.

:class:`OutputSet` opens every requested output under a temporary name
(:func:`geopsp.core.atomic.atomic_path`), writes finished blocks as they come, and on success
adds the sidecars (RAT ``.aux.xml``, QGIS ``.qml``), converts to COG when asked and renames.
On any failure or Ctrl-C nothing is left at the output paths and no temporary file remains.

With a :class:`~geopsp.classify.resume.Journal` (``--resume``) every block's pixels are also kept in
the progress folder, and :meth:`OutputSet.replay` writes them into a new output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

import numpy as np

from geopsp.classify.blending import FinishedBlock
from geopsp.classify.fingerprint import TAG
from geopsp.core import class_raster as rasters
from geopsp.core.atomic import atomic_path, check_writable, disk_error, is_disk_full, temp_name
from geopsp.core.classes import IGNORE, ClassInfo, index_to_value
from geopsp.core.errors import OutputError, UsageError


class OutputSet:
    """Class raster plus optional probability and confidence rasters on one grid.

    Parameters
    ----------
    output : path-like
        Class raster path.
    profile : dict
        The input's rasterio profile (grid, CRS).
    classes : list of ClassInfo
        Model channel order.
    options : ClassifyOptions
        ``probabilities``, ``confidence``, ``cog``, ``creation_options``, ``overwrite``.
    write : bool
        False on torchrun ranks other than 0: only check the paths, write nothing.
    journal : Journal, optional
        Progress folder of a resumable run: blocks are saved there too, and the temporary
        outputs get fixed names that a resumed run replaces.
    fingerprint : dict, optional
        What made the outputs (:mod:`geopsp.classify.fingerprint`), recorded in each one's
        ``GEOPSP_RUN`` tag so that ``--resume`` can tell whether to skip it.

    The paths are checked by :func:`check_outputs` before any work starts.
    """

    def __init__(
        self,
        output,
        profile: dict,
        classes: list[ClassInfo],
        options,
        write: bool = True,
        journal=None,
        fingerprint: dict | None = None,
    ):
        self.output = Path(output)
        self.journal = journal
        self.fingerprint = fingerprint
        self.classes = classes
        self.opts = options
        self.write = write
        self.lut = index_to_value(classes)
        self.class_counts = np.zeros(256, dtype=np.int64)
        co = _creation_options(options)
        self.class_profile = rasters.output_profile(profile, 1, IGNORE, co)
        self.block = rasters.out_block_size(self.class_profile)
        self.temp_dir = self.output.parent if str(self.output.parent) else Path(".")
        k = len(classes)
        self.targets: dict[str, tuple[Path, dict]] = {"classes": (self.output, self.class_profile)}
        if options.probabilities:
            prof = rasters.output_profile(profile, k, None, co)
            if k > 1:
                prof.setdefault("interleave", "band")
            self.targets["probabilities"] = (Path(options.probabilities), prof)
        if options.confidence:
            self.targets["confidence"] = (
                Path(options.confidence),
                rasters.output_profile(profile, 1, 0, co),
            )
        self._stack = contextlib.ExitStack()
        self._dst: dict = {}
        self._stage: dict[str, Path] = {}
        self._final_tmp: dict[str, Path] = {}

    def __enter__(self) -> OutputSet:
        import rasterio

        if not self.write:
            return self
        with self._aborting():
            for name, (path, prof) in self.targets.items():
                side = (".aux.xml",) if name == "classes" else ()
                fixed = stage = None
                if self.journal:  # fixed names: a resumed run replaces the killed run's files
                    fixed, stage = (
                        self.journal.temp_for(path),
                        self.journal.temp_for(path, "-stage"),
                    )
                    stage.unlink(missing_ok=True)
                tmp = self._stack.enter_context(
                    atomic_path(path, self.opts.overwrite, side, tmp=fixed)
                )
                self._final_tmp[name] = tmp
                target = tmp
                if self.opts.cog:
                    target = self._stage[name] = stage or temp_name(path)
                dst = self._dst[name] = rasterio.open(target, "w", **prof)
                self._describe(name, dst)
        return self

    def _describe(self, name: str, dst) -> None:
        if self.fingerprint is not None:
            dst.update_tags(**{TAG: json.dumps(self.fingerprint, sort_keys=True)})
        if name == "classes":
            rasters.describe_class_band(dst, self.classes)
        elif name == "probabilities":
            for i, c in enumerate(self.classes, start=1):
                dst.set_band_description(i, f"probability {c.name}")
            dst.update_tags(GEOPSP_SCALE="probability = value / 255")
        else:
            dst.set_band_description(1, "confidence")
            dst.update_tags(GEOPSP_SCALE="max probability = value / 255 (0 = nodata)")

    def render(self, block: FinishedBlock) -> dict[str, np.ndarray]:
        """The output pixels of a finished block: ``classes`` and ``valid``, plus the quantized
        probabilities ``q`` when probabilities or confidence are written."""
        valid = block.weights > 0
        cls = self.lut[np.argmax(block.sums, axis=0)]
        cls[~valid] = IGNORE
        out = {"classes": cls, "valid": valid}
        if len(self.targets) > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                p = block.sums / np.where(valid, block.weights, 1.0)
            q = np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)
            q[:, ~valid] = 0
            out["q"] = q
        return out

    def write_arrays(self, row: int, col: int, arrays: dict[str, np.ndarray]) -> None:
        """Write rendered pixels (see :meth:`render`) with their top-left pixel at row, col."""
        from rasterio.windows import Window

        cls = arrays["classes"]
        h, w = cls.shape
        win = Window(col, row, w, h)
        self.class_counts += np.bincount(cls.ravel(), minlength=256)
        self._dst["classes"].write(cls, 1, window=win)
        if "probabilities" in self._dst:
            dst = self._dst["probabilities"]
            dst.write(arrays["q"], window=win)
            dst.write_mask(arrays["valid"].astype(np.uint8) * 255, window=win)
        if "confidence" in self._dst:
            self._dst["confidence"].write(arrays["q"].max(axis=0), 1, window=win)

    def write_block(self, block: FinishedBlock) -> None:
        """Turn a finished block into class values (and extras) and write them."""
        arrays = self.render(block)
        self.write_arrays(block.row, block.col, arrays)
        if self.journal is not None:
            self.journal.save_block(block.row, block.col, arrays)

    def replay(self) -> None:
        """Write the blocks a resumed run's journal kept, in block order."""
        for row, col, arrays in self.journal.finished_blocks():
            self.write_arrays(row, col, arrays)

    def _close_all(self) -> None:
        for dst in self._dst.values():
            with contextlib.suppress(Exception):
                dst.close()
        self._dst.clear()

    @contextlib.contextmanager
    def _aborting(self):
        """Remove every partial output when the body fails; a failing disk says so."""
        try:
            yield
        except OSError as exc:
            self._abort(exc)
            raise disk_error(exc, self.output) from exc
        except BaseException as exc:
            self._abort(exc)
            raise

    def _abort(self, exc: BaseException) -> None:
        """Close everything and let atomic_path remove the temporary files."""
        self._close_all()
        for p in self._stage.values():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        # atomic_path re-raises the exception it is given; the caller raises its own.
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.write:
            return
        if exc is not None:
            # GDAL says only "write failed" on a full disk: decide before the clean-up frees it.
            full = isinstance(exc, Exception) and is_disk_full(exc, self.temp_dir)
            self._abort(exc)
            if full:
                raise disk_error(OSError(errno.ENOSPC, "no space left"), self.output) from exc
            return
        with self._aborting():
            for dst in self._dst.values():
                dst.close()
            self._dst.clear()
            for name, stage in self._stage.items():
                rasters.to_cog(stage, self._final_tmp[name], self.opts.creation_options)
                stage.unlink()
            rasters.write_sidecars(self._final_tmp["classes"], self.classes)
        self._stack.close()  # renames every output into place
        with atomic_path(rasters.qml_path(self.output), overwrite=True) as q:
            q.write_text(rasters.qml(self.classes), encoding="utf-8")


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one existing file (symlinks and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet), or b is a GDAL address, not a local file
        return False


def check_outputs(paths: list[str], overwrite: bool, reads: dict[str, str]) -> None:
    """Refuse output paths that cannot be written, before hours of work.

    Parameters
    ----------
    paths : list of str
        The class raster first, then ``--probabilities`` and ``--confidence`` when given.
    overwrite : bool
        ``--overwrite``.
    reads : dict
        ``{description: path}`` of what the run reads (input, model file): never replaced.

    Raises
    ------
    UsageError
        Two outputs share a path, or an output is a file the run reads.
    OutputError
        An output (or the class raster's ``.qml``) exists without ``--overwrite``, or its
        folder is not writable.
    """
    if len({os.path.abspath(p) for p in paths}) < len(paths):
        raise UsageError(
            f"{paths[0]}: OUTPUT, --probabilities and --confidence need different paths"
        )
    for path in paths:
        for what, used in reads.items():  # --overwrite must never replace what is being read
            if used and _same_file(path, used):
                raise UsageError(f"{path} is {what}; write the output to another file")
        check_writable(path, overwrite)
    qml = rasters.qml_path(paths[0])
    if qml.exists() and not overwrite:
        raise OutputError(f"{qml} already exists; use --overwrite to replace it")


def _creation_options(options) -> dict:
    co = dict(options.creation_options or {})
    if options.cog:  # the staging GeoTIFF takes only GTiff options; the COG copy the rest
        co = rasters.stage_options(co)
    return co


def out_block(profile: dict, options) -> int:
    """The internal block size of the class raster written for ``profile`` and ``options``."""
    profile = rasters.output_profile(profile, 1, IGNORE, _creation_options(options))
    return rasters.out_block_size(profile)
