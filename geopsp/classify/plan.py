"""What ``geopsp classify`` computes: its options, the checked plan of each raster (bands,
tile, overlap, block, fingerprint), and its summary.

Every check of a raster happens once, in :func:`plan_raster`, before any work starts.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

from geopsp.classify.predictor import TTA_MODES, Predictor
from geopsp.classify.tiling import BLEND_KINDS, TileGrid, default_block
from geopsp.core.errors import InputError, UsageError

log = logging.getLogger(__name__)
MAX_DEFAULT_TILE = 1024


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
    read_threads: int = 0  # threads reading windows in parallel (0: one reader thread)
    overwrite: bool = False
    progress: bool = True
    block_size: int | None = None  # streaming block (pixels); None: default_block(tile)
    resume: bool = False  # keep progress in OUTPUT.partial and continue from it
    # The model's training raster: reweight for the input's class mix (geopsp.classify.priors)
    adapt_priors: str | None = None


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
    resumed_at_row: int = 0  # first pixel row computed by this run (--resume)

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
        done = (self.height - self.resumed_at_row) * self.width  # computed by this run
        mps = done / 1e6 / max(self.seconds, 1e-9)
        resumed = f", continued at row {self.resumed_at_row}" if self.resumed_at_row else ""
        return (
            f"{self.output}: {self.pixels:,} pixels ({self.nodata_pixels:,} nodata) classified "
            f"in {self.seconds:.1f} s ({mps:.2f} MP/s, {self.computed} tiles{resumed}); "
            f"classes {shares}"
        )


def default_tile(predictor: Predictor) -> int:
    """The default ``--tile-size``: twice the training chip size, at most 1024 (512 when the
    chip size is unknown), or the chip size itself for chips too small for the pyramid.

    A larger window gives the pyramid pooling more context than a chip had, which made better
    held-out maps with 128 px chips (glaciers and buildings, docs/performance.md). But where a
    chip's deepest feature map (chip / output stride) was smaller than the largest pyramid
    bin, e.g. 64 px chips at stride 16 (4 x 4 against bins up to 6), the bins only ever pooled
    copies of the same few cells in training; a larger window makes them pool distinct regions
    the model never learned from, and chip-sized windows mapped better (land cover: 8 of 9
    models, +0.9 mIoU points on average).
    """
    chip = predictor.chip_size or 256
    arch = predictor.metadata.get("architecture") or {}
    stride, bins = arch.get("output_stride"), arch.get("pyramid_sizes")
    if predictor.chip_size and stride and bins and chip // int(stride) < max(bins):
        return chip
    return min(MAX_DEFAULT_TILE, 2 * chip)


def plan_tiles(predictor: Predictor, tile_size: int | None, overlap: int | None) -> tuple[int, int]:
    """Resolve ``--tile-size`` and ``--overlap`` for a model.

    Default tile: :func:`default_tile`. Any tile is rounded to the nearest multiple of
    ``model.size_multiple``. Default overlap: 1/8 of the tile. Raises :class:`UsageError` for
    a tile smaller than the model accepts or an overlap of half the tile or more.
    """
    m = max(1, int(predictor.size_multiple))
    min_tile = max(32, 4 * m)
    if tile_size is None:
        tile_size = max(default_tile(predictor), min_tile)
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


def plan_block(block_size: int | None, tile: int, out_block: int) -> int:
    """Resolve the streaming block size (``--block-size``) for a tile and output block size.

    A block must hold at least one tile. One that is not a multiple of the output's GeoTIFF
    blocks works, but GDAL then compresses some output blocks more than once (slower, larger
    file), so it gets a warning.
    """
    if block_size is None:
        return default_block(tile, out_block)
    if block_size < tile:
        raise UsageError(f"--block-size {block_size} must be at least the tile size ({tile})")
    if block_size % out_block:
        log.warning(
            "--block-size %d is not a multiple of the output's %d-pixel blocks; writing is "
            "slower and the file larger", block_size, out_block,
        )  # fmt: skip
    return int(block_size)


@dataclass
class RasterJob:
    """One raster to classify, checked (see :func:`plan_raster`)."""

    address: str
    output: str
    options: ClassifyOptions  # with this raster's --probabilities and --confidence paths
    bands: list[int]
    profile: dict  # the input's rasterio profile
    grid: TileGrid
    fingerprint: dict  # what decides the output's bytes (geopsp.classify.fingerprint)
    training: RasterJob | None = None  # --adapt-priors: the training raster, planned alike
    # On a training raster's job: the model's class mix there, measured once per run (rank 0)
    # by geopsp.classify.priors.class_mixes and shared by every input that planned with it.
    mix: np.ndarray | None = field(default=None, compare=False, repr=False)

    def paths(self) -> dict[str, str]:
        """``{option: path}`` of every output, the class raster first."""
        o = self.options
        named = {"OUTPUT": self.output, "--probabilities": o.probabilities}
        named["--confidence"] = o.confidence
        return {k: str(v) for k, v in named.items() if v}


def check_options(options: ClassifyOptions) -> None:
    """Refuse option values that no raster can use (``UsageError``)."""
    if options.blend not in BLEND_KINDS:
        raise UsageError(f"--blend must be one of {', '.join(BLEND_KINDS)}, got {options.blend!r}")
    if options.tta not in TTA_MODES:
        raise UsageError(f"--tta must be one of {', '.join(TTA_MODES)}, got {options.tta!r}")
    if options.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.read_threads < 0:
        raise UsageError(f"--read-threads must be at least 0, got {options.read_threads}")


def plan_raster(
    address: str,
    output: str,
    predictor: Predictor,
    options: ClassifyOptions,
    warn: bool = True,
    band_hint: bool = True,
    training: RasterJob | None = None,
) -> RasterJob:
    """Check one input against the model and options and plan its grid.

    ``warn`` logs the input's CRS and resolution warnings (rank 0 only under torchrun);
    ``band_hint`` ends a band-count error with the ``-b`` to choose (not for a raster that
    ``-b`` does not apply to); ``training`` is the ``--adapt-priors`` raster already planned
    for another input of the same run (planned here when None).
    Output paths are checked separately (:func:`geopsp.classify.outputs.check_outputs`).

    Raises
    ------
    InputError, UsageError
    """
    from geopsp.classify.fingerprint import classify_fingerprint
    from geopsp.classify.outputs import out_block
    from geopsp.classify.reader import select_bands, warn_grid
    from geopsp.core.sources import open_raster

    if not address:
        raise InputError(f"invalid input {address!r}")
    check_options(options)
    tile, overlap = plan_tiles(predictor, options.tile_size, options.overlap)
    with open_raster(address) as src:
        bands = select_bands(src, address, predictor, options.bands, band_hint)
        profile = dict(src.profile)
        if warn:
            warn_grid(src, address, predictor)
    block = plan_block(options.block_size, tile, out_block(profile, options))
    grid = TileGrid(profile["height"], profile["width"], tile, overlap, block)
    if options.adapt_priors and training is None:  # it must suit the model too: check it now
        try:
            training = plan_raster(
                options.adapt_priors, "", predictor, _training(options), False, band_hint=False
            )
        except (InputError, UsageError) as exc:  # -b is the input's: no hint to use it here
            raise type(exc)(
                f"--adapt-priors: {exc}; give the raster the model was trained on"
            ) from exc
    fp = classify_fingerprint(address, predictor, grid, bands, options)
    return RasterJob(address, str(output), options, bands, profile, grid, fp, training)


def _training(options: ClassifyOptions) -> ClassifyOptions:
    """How ``--adapt-priors``'s training raster is read: the model's own source bands (``-b``
    is for the input), the same windows."""
    return dataclasses.replace(
        options, adapt_priors=None, bands=None, probabilities=None, confidence=None
    )
