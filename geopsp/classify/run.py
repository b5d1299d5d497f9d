"""``geopsp classify``: streaming, seamless tiled inference over rasters of any size.

:func:`classify` loads a model file and classifies one or more rasters;
:func:`classify_raster` runs one raster through any :class:`~geopsp.classify.predictor.Predictor`.
The work is done by :func:`geopsp.classify.pipeline.run_pipeline` (threads, batching, torchrun
split), :mod:`geopsp.classify.blending` (bounded-memory overlap blending) and
:mod:`geopsp.classify.outputs` (class, probability and confidence rasters).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from geopsp.classify.plan import ClassifyOptions, ClassifySummary, plan_block, plan_tiles
from geopsp.classify.predictor import Predictor
from geopsp.classify.reader import TileReader, select_bands, warn_grid
from geopsp.classify.tiling import BLEND_KINDS, TileGrid
from geopsp.core.errors import InputError, OutputError, UsageError

log = logging.getLogger(__name__)
GDAL_CACHE_MB = 64  # bounded GDAL block cache: RSS must not grow with raster size


def classify_raster(
    address: str, output: str | os.PathLike, predictor: Predictor, options: ClassifyOptions,
    dist=None,
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
    dist : geopsp.classify.ranks.Dist, optional
        Rank/world under torchrun; only rank 0 writes.

    Returns
    -------
    ClassifySummary
    """
    import rasterio

    from geopsp.classify.outputs import OutputSet
    from geopsp.classify.ranks import Dist
    from geopsp.classify.resume import classify_fingerprint, open_journal
    from geopsp.core.sources import open_raster

    dist = dist or Dist()
    if options.blend not in BLEND_KINDS:
        raise UsageError(f"--blend must be one of {', '.join(BLEND_KINDS)}, got {options.blend!r}")
    if options.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {options.batch_size}")
    tile, overlap = plan_tiles(predictor, options.tile_size, options.overlap)
    with open_raster(address) as src:
        bands = select_bands(src, address, predictor, options.bands)
        profile = dict(src.profile)
        if dist.rank == 0:
            warn_grid(src, address, predictor)
    forward = predictor.forward_fn(options.tta)
    outputs = OutputSet(output, profile, predictor.classes, options, write=dist.rank == 0)
    block = plan_block(options.block_size, tile, outputs.block)
    grid = TileGrid(profile["height"], profile["width"], tile, overlap, block)
    journal, start_row = None, 0
    if options.resume:
        fp = classify_fingerprint(address, predictor, grid, bands, options)
        journal, start_row = open_journal(output, fp, grid, dist)
        outputs.journal = journal
    t0 = time.perf_counter()
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), outputs:  # bytes, not MB
            start_block = start_row * grid.block_cols
            if journal is not None:
                outputs.replay()
            stats = _run(address, grid, bands, predictor, forward, outputs, options, dist,
                         t0, start_block, journal)  # fmt: skip
    except BaseException:
        if journal is not None:
            journal.close(remove=journal.rows_done == 0)  # nothing recorded: leave no folder
            if journal.rows_done and not journal.damaged:  # damaged: the error says what to do
                log.warning(
                    "%s: finished blocks are kept in %s; run the same command with --resume "
                    "to continue", output, journal.dir,
                )  # fmt: skip
        raise
    if journal is not None:
        journal.close(remove=True)
    seconds = time.perf_counter() - t0
    counts = outputs.class_counts
    return ClassifySummary(
        input=address, output=str(output), width=grid.width, height=grid.height,
        tiles=stats["tiles"], computed=stats["computed"], skipped=stats["skipped"],
        seconds=seconds, class_pixels={c.value: int(counts[c.value]) for c in predictor.classes},
        nodata_pixels=int(counts[255]), forward_seconds=stats["forward_s"],
        class_names={c.value: c.name for c in predictor.classes},
        resumed_at_row=min(start_row * grid.block, grid.height),
    )  # fmt: skip


def _run(address, grid, bands, predictor, forward, outputs, options, dist, t0, start_block,
         journal) -> dict:  # fmt: skip
    """Run the pipeline over ``grid`` from ``start_block`` with a progress bar."""
    from geopsp.classify.pipeline import run_pipeline
    from geopsp.core.progress import bar

    reader = TileReader(address, bands, predictor, grid.tile)
    pbar = bar(
        len(grid), f"classify {Path(address).name}", options.progress and dist.rank == 0,
        unit="tile", initial=grid.first_tile(start_block),
    )  # fmt: skip
    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        pbar.update(n)
        mp = done[0] / max(len(grid), 1) * grid.height * grid.width / 1e6
        rate = mp / max(time.perf_counter() - t0, 1e-9)
        pbar.set_postfix_str(f"{rate:.2f} MP/s", refresh=False)

    try:
        return run_pipeline(
            grid, reader, forward, outputs.write_block, len(predictor.classes),
            batch_size=options.batch_size, blend=options.blend, dist=dist,
            on_batch=on_batch, temp_dir=str(outputs.temp_dir), workers=options.workers,
            start_block=start_block, on_row=journal.commit if journal else None,
            seam_paths=journal.seam_paths() if journal else None,
        )  # fmt: skip
    finally:
        pbar.close()
        reader.close()


def _finished(output: str, options: ClassifyOptions, rank: int) -> bool:
    """Whether ``--resume`` skips ``output`` because an earlier run completed it."""
    from geopsp.classify.resume import partial_dir

    partial = partial_dir(output)
    if not options.resume:
        if partial.exists() and rank == 0:
            log.warning(
                "%s holds an interrupted classification of %s; this run starts over (use "
                "--resume to continue it, or delete the folder)", partial, output,
            )  # fmt: skip
        return False
    if options.overwrite or not Path(output).exists():
        return False
    if rank == 0:
        log.warning("%s exists; skipped (use --overwrite to classify it again)", output)
        if partial.exists():  # the run was stopped after the output was complete
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    return True


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one existing file (symlinks and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet), or b is a GDAL address, not a local file
        return False


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


def classify(
    inputs: list[str], model: str | os.PathLike, output: str | os.PathLike,
    options: ClassifyOptions | None = None, device: str = "auto", amp: bool = True,
) -> list[ClassifySummary]:  # fmt: skip
    """Classify ``inputs`` with the model file ``model``; see ``geopsp classify --help``.

    Under ``torchrun`` every rank calls this with the same arguments; batches of tiles are
    split between ranks and rank 0 writes the outputs (byte-identical to one process).

    Raises
    ------
    ModelFileError, InputError, UsageError, OutputError, ResourceError
    """
    from geopsp.classify.ranks import init_distributed

    options = options or ClassifyOptions()
    if not inputs:
        raise UsageError("give at least one INPUT raster")
    dist = init_distributed()
    if dist.world > 1 and device == "auto":
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    predictor = Predictor.from_file(str(model), device, amp)
    many = len(inputs) > 1
    probs = output_paths(inputs, str(output), options.probabilities)
    confs = output_paths(inputs, str(output), options.confidence)
    if many:  # every rank: the checks below must not race rank 0 creating the folders
        for d in (output, options.probabilities, options.confidence):
            if d:
                try:
                    Path(d).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise OutputError(f"cannot create folder {d}: {exc.strerror or exc}") from exc
    from geopsp.core.atomic import check_writable
    from geopsp.core.sources import open_raster

    plan_tiles(predictor, options.tile_size, options.overlap)
    jobs = [
        (addr, out, p, c)
        for addr, (out, p), (_, c) in zip(inputs, probs, confs, strict=True)
        if not _finished(out, options, dist.rank)
    ]
    for addr, out, p, c in jobs:
        if not addr:  # fail early, before hours of work on the first input
            raise InputError(f"invalid input {addr!r}")
        with open_raster(addr) as src:
            select_bands(src, addr, predictor, options.bands)
        paths = [x for x in (out, p, c) if x]
        for path in paths:
            check_writable(path, options.overwrite)
            # --overwrite must never replace what is being read: the input or the model.
            for what, used in (("the input raster", addr), ("the model file", str(model))):
                if _same_file(path, used):
                    raise UsageError(f"{path} is {what}; write the output to another file")
        if len({os.path.abspath(x) for x in paths}) < len(paths):
            raise UsageError(f"{out}: the outputs need different paths")
    summaries = []
    for addr, out, p, c in jobs:
        opts = ClassifyOptions(**{**options.__dict__, "probabilities": p, "confidence": c})
        summaries.append(classify_raster(addr, out, predictor, opts, dist))
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return summaries


__all__ = [
    "ClassifyOptions", "ClassifySummary", "Predictor", "TileReader", "classify", "classify_raster",
    "plan_block", "plan_tiles",
]  # fmt: skip
