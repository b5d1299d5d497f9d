"""``geopsp classify``: streaming, seamless tiled inference over rasters of any size.

:func:`classify` loads a model file, checks every input and output once
(:func:`~geopsp.classify.plan.plan_raster`, :func:`~geopsp.classify.outputs.check_outputs`)
and classifies the rasters; :func:`classify_raster` does the same for one raster and any
:class:`~geopsp.classify.predictor.Predictor`. The work is done by
:func:`geopsp.classify.pipeline.run_pipeline` (threads, batching, torchrun split),
:mod:`geopsp.classify.blending` (bounded-memory overlap blending) and
:mod:`geopsp.classify.outputs` (class, probability and confidence rasters).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from geopsp.classify.pipeline import Progress, Settings
from geopsp.classify.plan import (
    ClassifyOptions,
    ClassifySummary,
    RasterJob,
    plan_block,
    plan_raster,
    plan_tiles,
)
from geopsp.classify.predictor import Predictor
from geopsp.classify.reader import TileReader
from geopsp.core.errors import Interrupted, OutputError, UsageError
from geopsp.core.runtime import Runtime, barrier, setup, stop_all_on_error

log = logging.getLogger(__name__)
GDAL_CACHE_MB = 64  # bounded GDAL block cache: RSS must not grow with raster size


class _RunProgress(Progress):
    """The progress of one raster: the progress bar (with MP/s) and, on rank 0 of a
    ``--resume`` run, the journal that records finished block rows."""

    def __init__(self, grid, start_block: int, journal, bar, t0: float) -> None:
        self.grid, self.start_block, self.journal, self.bar, self.t0 = (
            grid, start_block, journal, bar, t0,
        )  # fmt: skip
        self.seam_paths = journal.seam_paths() if journal is not None else None
        self.done = 0

    def tiles_done(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        g = self.grid
        mp = self.done / max(len(g), 1) * g.height * g.width / 1e6
        rate = mp / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{rate:.2f} MP/s", refresh=False)

    def row_done(self, row: int) -> None:
        self.journal.commit(row)


def classify_raster(
    address: str, output: str | os.PathLike, predictor: Predictor, options: ClassifyOptions,
    rt: Runtime | None = None,
) -> ClassifySummary:  # fmt: skip
    """Classify one raster with ``predictor`` and write the class raster (and extras).

    Parameters
    ----------
    address : str
        Any GDAL raster address.
    output : path-like
        Class raster (GeoTIFF or COG); ``options.probabilities``/``confidence`` add rasters.
    predictor : Predictor
        Model and its metadata (a model file, or any callable for custom models).
    options : ClassifyOptions
    rt : geopsp.core.runtime.Runtime, optional
        Rank/world under torchrun; only rank 0 writes. A rank that fails stops the others.

    Returns
    -------
    ClassifySummary
    """
    from geopsp.classify.outputs import check_outputs

    rt = rt or Runtime()
    with stop_all_on_error(rt):
        job = plan_raster(address, str(output), predictor, options, warn=rt.is_main)
        check_outputs(list(job.paths().values()), options.overwrite, _reads(job, predictor))
        return run_raster(job, predictor, rt)


def _reads(job: RasterJob, predictor: Predictor) -> dict[str, str]:
    return {"the input raster": job.address, "the model file": predictor.source or ""}


def run_raster(job: RasterJob, predictor: Predictor, rt: Runtime) -> ClassifySummary:
    """Classify a planned raster (no more checks: see :func:`plan_raster`)."""
    import rasterio

    from geopsp.classify.outputs import OutputSet
    from geopsp.classify.resume import open_journal

    options, grid = job.options, job.grid
    outputs = OutputSet(job.output, job.profile, predictor.classes, options, write=rt.is_main,
                        fingerprint=job.fingerprint)  # fmt: skip
    journal, start_block = None, 0
    if options.resume:
        journal, start_block = open_journal(job.output, job.fingerprint, grid, rt)
        outputs.journal = journal
    t0 = time.perf_counter()
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), outputs:  # bytes, not MB
            if journal is not None:
                outputs.replay()
            stats = _run(job, predictor, outputs, rt, journal, start_block, t0)
    except BaseException as exc:
        if journal is not None:
            _keep_progress(journal, job.output, exc)
        raise
    if journal is not None:
        journal.close(remove=True)
    counts = outputs.class_counts
    return ClassifySummary(
        input=job.address, output=job.output, width=grid.width, height=grid.height,
        tiles=stats.tiles, computed=stats.computed, skipped=stats.skipped,
        seconds=time.perf_counter() - t0, forward_seconds=stats.forward_s,
        class_pixels={c.value: int(counts[c.value]) for c in predictor.classes},
        nodata_pixels=int(counts[255]), class_names={c.value: c.name for c in predictor.classes},
        resumed_at_row=min(start_block // grid.block_cols * grid.block, grid.height),
    )  # fmt: skip


def _keep_progress(journal, output: str, exc: BaseException) -> None:
    """After a failure: keep the progress folder when it holds finished block rows, and say
    so (Ctrl-C: in the :class:`~geopsp.core.errors.Interrupted` raised instead)."""
    journal.close(remove=journal.rows_done == 0)  # nothing recorded: leave no folder
    if not journal.rows_done or journal.damaged:  # damaged: the error says what to do
        return
    hint = "run the same command with --resume to continue"
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted([str(journal.dir)], hint) from exc
    log.warning("%s: finished blocks are kept in %s; %s", output, journal.dir, hint)


def _run(job: RasterJob, predictor, outputs, rt: Runtime, journal, start_block, t0):
    """Run the pipeline over the job's grid from ``start_block`` with a progress bar."""
    from geopsp.classify.pipeline import run_pipeline
    from geopsp.core.progress import bar

    grid, options = job.grid, job.options
    reader = TileReader(job.address, job.bands, predictor, grid.tile)
    pbar = bar(
        len(grid), f"classify {Path(job.address).name}", options.progress and rt.is_main,
        unit="tile", initial=grid.first_tile(start_block),
    )  # fmt: skip
    settings = Settings(batch_size=options.batch_size, blend=options.blend,
                        read_threads=options.read_threads, temp_dir=str(outputs.temp_dir))  # fmt: skip
    progress = _RunProgress(grid, start_block, journal, pbar, t0)
    try:
        forward = predictor.forward_fn(options.tta)
        if options.adapt_priors:
            forward = _adapted(job, predictor, reader, forward, rt)
        return run_pipeline(grid, reader, forward, outputs.write_block, len(predictor.classes),
                            settings, rt, progress)  # fmt: skip
    finally:
        pbar.close()
        reader.close()


def _adapted(job: RasterJob, predictor: Predictor, reader, forward, rt: Runtime):
    """``forward`` reweighted from the class mix the model sees in its training raster to the
    one it sees in the input (``--adapt-priors``): both estimated by rank 0 from a sample of
    windows, and shared with every rank."""
    from geopsp.classify.priors import class_mixes, prior_weights, reweighted
    from geopsp.core.runtime import broadcast

    mixes = broadcast(class_mixes(job, predictor, reader, forward) if rt.is_main else None, rt)
    if mixes is None:
        log.warning(
            "%s: the sampled windows of it or of %s are all nodata; the map is not adapted",
            job.address, job.options.adapt_priors,
        )  # fmt: skip
        return forward
    train, area = mixes
    if rt.is_main:
        shares = ", ".join(
            f"{c.name} {a:.3f} ({t:.3f})"
            for c, a, t in zip(predictor.classes, area, train, strict=True)
        )
        log.info("class mix of %s (training raster): %s", Path(job.address).name, shares)
    return reweighted(forward, prior_weights(train, area))


def _skip(job: RasterJob, rt: Runtime) -> bool:
    """Whether ``--resume`` skips ``job`` because an earlier run completed its outputs with
    the same input, model and options (see :func:`geopsp.classify.fingerprint.finished`)."""
    import shutil

    from geopsp.classify.fingerprint import finished
    from geopsp.classify.resume import partial_dir

    partial = partial_dir(job.output)
    if not job.options.resume:
        if partial.exists() and rt.is_main:
            log.warning(
                "%s holds an interrupted classification of %s; this run starts over (use "
                "--resume to continue it, or delete the folder)", partial, job.output,
            )  # fmt: skip
        return False
    if job.options.overwrite or not finished(job.paths(), job.fingerprint):
        return False
    if rt.is_main:
        log.warning("%s exists; skipped (use --overwrite to classify it again)", job.output)
        if partial.exists():  # the run was stopped after the output was complete
            shutil.rmtree(partial, ignore_errors=True)
    return True


def output_paths(inputs: list[str], output: str, extra: str | None) -> list[tuple[str, str | None]]:
    """Map each input to its output path (OUTPUT is a folder when there are several inputs)."""
    if len(inputs) == 1:
        return [(output, extra)]
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{output} is a file; with several inputs OUTPUT must be a folder")
    names = [Path(i.rstrip("/")).stem or f"raster{n}" for n, i in enumerate(inputs)]
    if len(set(names)) != len(names):
        names = [f"{n:03d}_{s}" for n, s in enumerate(names)]
    res = []
    for name in names:
        e = str(Path(extra) / f"{name}.tif") if extra else None
        res.append((str(out_dir / f"{name}.tif"), e))
    return res


def plan_jobs(
    inputs: list[str], output: str, predictor: Predictor, options: ClassifyOptions, rt: Runtime
) -> list[RasterJob]:
    """Check every input and output before any work; leave out outputs ``--resume`` skips."""
    from geopsp.classify.outputs import check_outputs

    probs = output_paths(inputs, output, options.probabilities)
    confs = output_paths(inputs, output, options.confidence)
    if len(inputs) > 1:  # every rank: the checks below must not race rank 0 creating folders
        for d in (output, options.probabilities, options.confidence):
            if d:
                try:
                    Path(d).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise OutputError(f"cannot create folder {d}: {exc.strerror or exc}") from exc
    jobs, training = [], None
    for addr, (out, p), (_, c) in zip(inputs, probs, confs, strict=True):
        opts = dataclasses.replace(options, probabilities=p, confidence=c)
        job = plan_raster(addr, out, predictor, opts, warn=rt.is_main, training=training)
        training = job.training  # --adapt-priors: one training raster (and mix) for all
        if not _skip(job, rt):
            check_outputs(list(job.paths().values()), options.overwrite, _reads(job, predictor))
            jobs.append(job)
    return jobs


def classify(
    inputs: list[str], model: str | os.PathLike, output: str | os.PathLike,
    options: ClassifyOptions | None = None, device: str = "auto", amp: bool = True,
) -> list[ClassifySummary]:  # fmt: skip
    """Classify ``inputs`` with the model file ``model``; see ``geopsp classify --help``.

    Under ``torchrun`` every rank calls this with the same arguments; batches of tiles are
    split between ranks (gloo) and rank 0 writes the outputs (byte-identical to one process).
    ``--device cuda`` then means GPU ``LOCAL_RANK``. A rank that fails makes every rank stop
    with its error.

    Raises
    ------
    ModelFileError, InputError, UsageError, OutputError, ResourceError, RankFailed
    """
    options = options or ClassifyOptions()
    if not inputs:
        raise UsageError("give at least one INPUT raster")
    rt = setup(device, backend="gloo")
    with stop_all_on_error(rt):
        predictor = Predictor.from_file(str(model), rt.device, amp)
        jobs = plan_jobs(list(inputs), str(output), predictor, options, rt)
        summaries = [run_raster(job, predictor, rt) for job in jobs]
        barrier(rt)
    return summaries


__all__ = [
    "ClassifyOptions", "ClassifySummary", "Predictor", "TileReader", "classify", "classify_raster",
    "plan_block", "plan_raster", "plan_tiles",
]  # fmt: skip
