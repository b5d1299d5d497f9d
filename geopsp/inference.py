"""``geopsp classify``: streaming, seamless tiled inference over rasters of any size.

:func:`classify` loads a model file and classifies one or more rasters;
:func:`classify_raster` runs one raster through any :class:`~geopsp.predict.Predictor`.
The work is done by :func:`geopsp.pipeline.run_pipeline` (threads, batching, torchrun
split), :mod:`geopsp.blending` (bounded-memory overlap blending) and
:mod:`geopsp.outputs` (class, probability and confidence rasters).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from geopsp.errors import InputError, OutputError, UsageError
from geopsp.predict import Predictor
from geopsp.tile_reader import TileReader, select_bands, warn_grid
from geopsp.tiling import BLEND_KINDS, TileGrid, default_block

log = logging.getLogger(__name__)
MAX_DEFAULT_TILE = 1024
GDAL_CACHE_MB = 64  # bounded GDAL block cache: RSS must not grow with raster size


@dataclass
class ClassifyOptions:
    """Options of ``geopsp classify`` (see docs/classify.md for defaults and advice)."""

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    blend: str = "cosine"
    tta: str = "none"
    bands: list[int] | None = None
    probabilities: str | None = None
    confidence: str | None = None
    cog: bool = False
    creation_options: dict = field(default_factory=dict)
    workers: int = 0
    overwrite: bool = False
    progress: bool = True
    block_size: int | None = None  # streaming block (pixels); None: default_block(tile)


@dataclass
class ClassifySummary:
    """What one classification did."""

    input: str
    output: str
    width: int
    height: int
    tiles: int
    computed: int
    skipped: int
    seconds: float
    class_pixels: dict[int, int]
    nodata_pixels: int
    forward_seconds: float = 0.0  # time this process spent in forward passes
    class_names: dict[int, str] = field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def line(self) -> str:
        """One-line summary: pixels, time, throughput, per-class share."""
        valid = max(1, sum(self.class_pixels.values()))
        shares = ", ".join(
            f"{self.class_names.get(v, v)} {100 * n / valid:.1f}%"
            for v, n in sorted(self.class_pixels.items())
            if n
        )
        mps = self.pixels / 1e6 / max(self.seconds, 1e-9)
        return (
            f"{self.output}: {self.pixels:,} pixels ({self.nodata_pixels:,} nodata) classified "
            f"in {self.seconds:.1f} s ({mps:.2f} MP/s, {self.computed} tiles); classes {shares}"
        )


def plan_tiles(predictor: Predictor, tile_size: int | None, overlap: int | None) -> tuple[int, int]:
    """Resolve ``--tile-size`` and ``--overlap`` for a model.

    Default tile: twice the training chip size, at most 1024 (512 when unknown). Any tile
    is rounded to the nearest multiple of ``model.size_multiple``. Default overlap: 1/8 of
    the tile. Raises :class:`UsageError` for a tile smaller than the model accepts or an
    overlap of half the tile or more.
    """
    m = max(1, int(predictor.size_multiple))
    min_tile = max(32, 4 * m)
    if tile_size is None:
        chip = predictor.chip_size or 256
        tile_size = min(MAX_DEFAULT_TILE, max(chip, 2 * chip))
    if tile_size < min_tile:
        raise UsageError(
            f"--tile-size {tile_size} is too small for this model; use at least {min_tile}"
        )
    tile = max(m, int(round(tile_size / m)) * m)
    if tile != tile_size:
        log.info("tile size %d rounded to %d (a multiple of %d)", tile_size, tile, m)
    ov = tile // 8 if overlap is None else int(overlap)
    if ov < 0 or 2 * ov >= tile:
        raise UsageError(
            f"--overlap {ov} must be at least 0 and less than half the tile size ({tile})"
        )
    return tile, ov


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
    dist : geopsp.pipeline.Dist, optional
        Rank/world under torchrun; only rank 0 writes.

    Returns
    -------
    ClassifySummary
    """
    import rasterio

    from geopsp.outputs import OutputSet
    from geopsp.pipeline import Dist, run_pipeline
    from geopsp.progress import bar
    from geopsp.sources import open_raster

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
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20), outputs:  # bytes, not MB
        grid = TileGrid(
            profile["height"], profile["width"], tile, overlap, default_block(tile, outputs.block)
        )
        reader = TileReader(address, bands, predictor, tile)
        pbar = bar(
            len(grid),
            f"classify {Path(address).name}",
            options.progress and dist.rank == 0,
            unit="tile",
        )
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            pbar.update(n)
            el = time.perf_counter() - t0
            rate = done[0] / max(len(grid), 1) * grid.height * grid.width / 1e6 / max(el, 1e-9)
            pbar.set_postfix_str(f"{rate:.2f} MP/s", refresh=False)

        try:
            stats = run_pipeline(
                grid, reader, forward, outputs.write_block, len(predictor.classes),
                batch_size=options.batch_size, blend=options.blend, dist=dist,
                on_batch=on_batch, temp_dir=str(outputs.temp_dir), workers=options.workers,
            )  # fmt: skip
        finally:
            pbar.close()
            reader.close()
    seconds = time.perf_counter() - t0
    counts = outputs.class_counts
    return ClassifySummary(
        input=address, output=str(output), width=grid.width, height=grid.height,
        tiles=stats["tiles"], computed=stats["computed"], skipped=stats["skipped"],
        seconds=seconds, class_pixels={c.value: int(counts[c.value]) for c in predictor.classes},
        nodata_pixels=int(counts[255]), forward_seconds=stats["forward_s"],
        class_names={c.value: c.name for c in predictor.classes},
    )  # fmt: skip


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
    from geopsp.pipeline import init_distributed

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
    from geopsp.atomic import check_writable
    from geopsp.sources import open_raster

    plan_tiles(predictor, options.tile_size, options.overlap)
    for addr, (out, p), (_, c) in zip(inputs, probs, confs, strict=True):
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
    for addr, (out, p), (_, c) in zip(inputs, probs, confs, strict=True):
        opts = ClassifyOptions(**{**options.__dict__, "probabilities": p, "confidence": c})
        summaries.append(classify_raster(addr, out, predictor, opts, dist))
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return summaries


__all__ = [
    "ClassifyOptions", "ClassifySummary", "Predictor", "TileReader", "classify", "classify_raster",
]  # fmt: skip
