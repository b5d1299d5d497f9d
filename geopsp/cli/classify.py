"""``geopsp classify``: classify rasters of any size with a trained model."""

from __future__ import annotations

import logging

import click

from geopsp.cli import options as opt
from geopsp.cli.vectorize import shaping_options, shaping_values


def _deprecated_workers(ctx: click.Context, param: click.Parameter, value: int | None):
    """``--workers`` of older versions: reader threads here, unlike the processes of
    export-chips and train; still accepted, with a warning."""
    if value is not None:
        logging.getLogger(__name__).warning(
            "classify --workers is deprecated; use --read-threads (threads reading windows); "
            "--workers means processes in export-chips and train"
        )
    return value


@click.command("classify")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT [INPUT ...]")
@click.option(
    "-m",
    "--model",
    "model",
    required=True,
    metavar="MODEL",
    help="Model file written by `geopsp train` (.safetensors).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="OUTPUT",
    help="Class raster (GeoTIFF); a folder when there are several inputs.",
)
@click.option(
    "--tile-size",
    type=int,
    default=None,
    metavar="N",
    help="Window size in pixels [default: 2 x the model's chip size, at most 1024; the chip "
    "size when its deepest feature map is smaller than the largest pyramid bin (64 px chips "
    "at output stride 16); rounded to a multiple the model accepts].",
)
@click.option(
    "--overlap",
    type=int,
    default=None,
    metavar="N",
    help="Minimum overlap of neighbouring windows, < tile/2 [default: tile/8].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Windows per forward pass.",
)
@click.option(
    "--blend",
    type=click.Choice(["cosine", "linear", "none"]),
    default="cosine",
    show_default=True,
    help="Weighting of overlapping windows.",
)
@click.option(
    "--tta",
    type=click.Choice(["none", "flips", "d4"]),
    default="none",
    show_default=True,
    help="Test-time augmentation averaged in probability space (flips: 4 passes, d4: 8).",
)
@click.option(
    "--adapt-priors",
    default=None,
    metavar="TRAINING_RASTER",
    help="Correct the map for the input's class mix: the model's mean class probabilities on "
    "up to 64 windows of the raster it was trained on and of each input give every class a "
    "weight (input / training) for its probabilities.",
)
@click.option(
    "--probabilities",
    type=click.Path(dir_okay=True),
    default=None,
    metavar="PATH",
    help="Also write per-class probabilities (uint8, value/255), one band per class.",
)
@click.option(
    "--confidence",
    type=click.Path(dir_okay=True),
    default=None,
    metavar="PATH",
    help="Also write the winning class's probability (uint8, value/255; 0 = nodata).",
)
@click.option("--cog", is_flag=True, help="Write Cloud-Optimized GeoTIFFs (NEAREST overviews).")
@opt.creation_options
@opt.bands
@opt.device
@opt.threads
@click.option(
    "--amp/--no-amp",
    default=True,
    show_default=True,
    help="Mixed precision: on CUDA, and bfloat16 on CPUs with AMX or AVX512-BF16.",
)
@click.option(
    "--read-threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Threads reading windows in parallel (0: one background reader thread); helps "
    "with slow or remote inputs.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    hidden=True,
    callback=_deprecated_workers,
    help="Deprecated name of --read-threads.",
)
@click.option(
    "--block-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Pixels finished at a time (at least the tile size, best a multiple of the output's "
    "512-pixel blocks); memory grows with it [default: 1024, or the tile size rounded up].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep progress in OUTPUT.partial/ and continue an interrupted run from it (run the "
    "same command again); outputs that already exist are skipped.",
)
@click.option(
    "--polygons",
    default=None,
    metavar="OUT",
    help="Also vectorize the class raster into OUT (.gpkg, .fgb, .parquet, .shp, .geojson) "
    "with the --polygon-* options (those of geopsp vectorize).",
)
@shaping_options("polygon-")
@opt.overwrite
@opt.config
@click.pass_context
def command(ctx: click.Context, inputs, model, output, tile_size, overlap, batch_size, blend, tta,
            adapt_priors, probabilities, confidence, cog, creation_options, bands, device, amp, read_threads,
            workers, block_size, resume, overwrite, polygons, **polygon_options) -> None:  # fmt: skip
    """Classify INPUT rasters (any GDAL address) with MODEL into OUTPUT.

    The output has the input's grid, uint8 class values, nodata 255, a color table, class
    names (tags and an .aux.xml attribute table) and a QGIS .qml style beside it. Memory
    stays bounded whatever the raster size. Under `torchrun --nproc-per-node N -m geopsp
    classify ...` the ranks share the work and rank 0 writes the same bytes as one process.
    """
    from geopsp.classify.run import ClassifyOptions, classify
    from geopsp.core.runtime import launch
    from geopsp.core.sources import parse_bands

    options = ClassifyOptions(
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        blend=blend,
        tta=tta,
        adapt_priors=adapt_priors,
        bands=parse_bands(bands),
        probabilities=probabilities,
        confidence=confidence,
        cog=cog,
        creation_options=opt.parse_creation_options(creation_options),
        read_threads=read_threads if workers is None else workers,
        overwrite=overwrite,
        block_size=block_size,
        resume=resume,
        progress=opt.progress_enabled(ctx),
    )
    vec = None
    if polygons:
        from geopsp.vectorize.run import VectorizeOptions, check_polygon_output

        vec = VectorizeOptions(**shaping_values(polygon_options, "polygon_"), confidence=confidence,
                               overwrite=overwrite, progress=options.progress,
                               option_prefix="polygon-")  # fmt: skip
        check_polygon_output(polygons, vec, len(inputs))  # before minutes of classification
    summaries = classify(list(inputs), model, output, options, device=device, amp=amp)
    if launch().rank == 0:
        for s in summaries:
            click.echo(s.line())
        if vec is not None and summaries:
            from geopsp.vectorize.run import vectorize

            click.echo(vectorize(summaries[0].output, polygons, vec).line())
