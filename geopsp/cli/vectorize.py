"""``geopsp vectorize``: polygons per class out of a class raster.

The shaping options are defined once here; ``geopsp classify --polygons`` reuses them with a
``--polygon-`` prefix (:func:`shaping_options`, :func:`shaping_values`).
"""

from __future__ import annotations

import click

from geopsp.cli import options as opt

# (name, click keyword arguments) of the options shared with classify --polygons.
_SHAPING = [
    ("classes", dict(default=None, metavar="1,3|NAMES",
                     help="Keep only these classes (values or names from the class table).")),
    ("min-area", dict(type=float, default=None, metavar="AREA",
                      help="Drop polygons smaller than AREA (square CRS units).")),
    ("fill-holes", dict(type=float, default=None, metavar="AREA",
                        help="Fill holes smaller than AREA (square CRS units); polygons "
                        "inside a filled hole are dropped.")),
    ("simplify", dict(type=float, default=None, metavar="TOL",
                      help="Topology-preserving simplification (CRS units): neighbouring "
                      "polygons keep their shared edges.")),
    ("regularize", dict(is_flag=True, default=False,
                        help="Building outlines: right angles along each polygon's dominant "
                        "direction (see docs/vectorize.md).")),
    ("connectivity", dict(type=click.Choice(["4", "8"]), default="4", show_default=True,
                          help="Pixels connect through edges (4) or also corners (8).")),
    ("dst-crs", dict(default=None, metavar="CRS",
                     help="Output CRS (e.g. EPSG:32616) [default: the raster's].")),
    ("layer", dict(default=None, metavar="NAME",
                   help="Layer name [default: the output file's name].")),
]  # fmt: skip


def shaping_options(prefix: str = ""):
    """Decorator adding the shaping options, spelled ``--{prefix}{name}``."""

    def decorate(f):
        for name, kw in reversed(_SHAPING):
            f = click.option(f"--{prefix}{name}", **kw)(f)
        return f

    return decorate


def shaping_values(params: dict, prefix: str = "") -> dict:
    """The shaping options among click's ``params`` as :class:`VectorizeOptions` fields."""
    out = {}
    for name, _ in _SHAPING:
        key = f"{prefix}{name}".replace("-", "_")
        out[name.replace("-", "_")] = params[key]
    out["connectivity"] = int(out["connectivity"])
    return out


@click.command("vectorize")
@click.argument("classes_raster", metavar="CLASSES")
@click.option(
    "-o", "--output", required=True, metavar="OUT",
    help="Vector file: .gpkg (GeoPackage), .fgb, .parquet (GeoParquet), .shp or .geojson.",
)  # fmt: skip
@shaping_options()
@click.option(
    "--confidence", default=None, metavar="RASTER",
    help="Confidence raster on the same grid (e.g. from classify --confidence): adds each "
    "polygon's mean confidence.",
)  # fmt: skip
@click.option(
    "--nodata", type=float, default=None, metavar="VALUE",
    help="Class value to leave out [default: the raster's nodata/mask].",
)  # fmt: skip
@click.option(
    "--block-size", type=click.IntRange(min=16), default=1024, show_default=True,
    metavar="PIXELS", help="Edge of the square blocks read at a time (results do not depend on it).",
)  # fmt: skip
@opt.overwrite
@opt.config
@click.pass_context
def command(ctx: click.Context, classes_raster: str, output: str, confidence, nodata,
            block_size: int, overwrite: bool, **shaping) -> None:  # fmt: skip
    """Write polygons per class from the class raster CLASSES (any single-band integer raster).

    Each connected region of one class becomes one polygon with the attributes class,
    class_name, area and perimeter (in the CRS's linear units) and, with --confidence, its
    mean confidence. The raster is read block by block: memory does not grow with its size,
    and the result equals polygonizing it at once.

    \b
    Example:
      geopsp vectorize buildings.tif -o buildings.gpkg --classes building --min-area 10 \\
          --simplify 0.5 --regularize
    """
    from geopsp.vectorize.run import VectorizeOptions, vectorize

    options = VectorizeOptions(
        **shaping_values(shaping),
        confidence=confidence,
        nodata=nodata,
        block_size=block_size,
        overwrite=overwrite,
        progress=opt.progress_enabled(ctx),
    )
    click.echo(vectorize(classes_raster, output, options).line())
