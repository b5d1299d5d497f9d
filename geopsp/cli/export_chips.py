"""``geopsp export-chips``: cut rasters and labels into a training chip folder."""

from __future__ import annotations

import click

from geopsp.cli import options


@click.command("export-chips")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE [IMAGE ...]")
@click.option(
    "--labels",
    required=True,
    metavar="LABELS",
    help="Label vector (any OGR format, any CRS) or label raster.",
)
@click.option("-o", "--outdir", required=True, metavar="OUTDIR", help="Chip folder to create.")
@options.label_options(
    class_field_help="Attribute with the class (default: one class).",
    unlabeled_help="Pixels outside every label: class 0 (dense labels) or ignored (sparse samples).",
    buffer_help="Buffer labels by DIST raster-CRS units (required for lines/points).",
)
@click.option(
    "--classes",
    default=None,
    metavar="classes.json",
    help="Fixed class table: JSON list of {value, name, color}.",
)
@click.option(
    "--chip-size", default=256, show_default=True, type=int, help="Chip edge in pixels (>= 16)."
)
@click.option(
    "--stride",
    default=None,
    type=int,
    help="Step between chips in pixels [default: chip size / 2].",
)
@options.bands
@click.option(
    "--keep-empty",
    default=0.0,
    show_default=True,
    type=float,
    help="Fraction of chips without labels to keep (reproducible).",
)
@click.option(
    "--max-nodata",
    default=0.5,
    show_default=True,
    type=float,
    help="Skip chips with a larger imagery nodata fraction.",
)
@click.option(
    "--val-fraction",
    default=0.1,
    show_default=True,
    type=float,
    help="Share of chips in the spatial validation split.",
)
@options.seed
@options.workers
@options.overwrite
@options.config
@click.pass_context
def command(ctx: click.Context, images, labels, outdir, bands, **params) -> None:
    """Cut IMAGE rasters and their LABELS into georeferenced training chips in OUTDIR.

    OUTDIR gets images/, labels/, chips.gpkg (chip footprints, windows, split, class counts),
    classes.json, stats.json and the ArcGIS Classified_Tiles files. Example:

    \b
      geopsp export-chips sample_data/spacenet4_atlanta_buildings/sample_geotiff.tif \\
        --labels sample_data/spacenet4_atlanta_buildings/geotiff_labels.geojson -o chips
    """
    from geopsp.chips.export import ExportOptions, export_chips
    from geopsp.core.sources import parse_bands

    opts = options.build(
        ExportOptions, params, bands=parse_bands(bands), progress=options.progress_enabled(ctx)
    )
    summary = export_chips(list(images), labels, outdir, opts)
    for line in summary.summary_lines():
        click.echo(line)
