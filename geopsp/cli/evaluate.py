"""``geopsp evaluate``: accuracy assessment of a class raster against reference labels."""

from __future__ import annotations

import click

from geopsp.cli import options


@click.command("evaluate")
@click.argument("prediction")
@click.option(
    "--reference",
    "-r",
    required=True,
    metavar="REF",
    help="Reference labels: a vector (any OGR address, any CRS) or a label raster.",
)
@options.label_options(
    class_field_help="Vector attribute holding each polygon's class name or value (default: "
    "none, every polygon is the prediction's single non-background class).",
    unlabeled_help="Reference pixels outside every polygon: class 0, or not counted.",
    buffer_help="Buffer line/point references by DIST (prediction CRS units) to make areas.",
)
@click.option(
    "--boundary-tolerance",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="PIXELS",
    help="Distance within which a predicted class edge matches a reference edge.",
)
@click.option(
    "--block-size",
    type=click.IntRange(min=64),
    default=1024,
    show_default=True,
    metavar="PIXELS",
    help="Edge of the square blocks streamed through memory.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table."
)
@click.option(
    "--plot",
    default=None,
    metavar="CONFUSION.png",
    help="Also write the confusion matrix as a PNG.",
)
@options.overwrite
@options.config
@click.pass_context
def command(
    ctx: click.Context,
    prediction: str,
    reference: str,
    as_json: bool,
    plot: str | None,
    overwrite: bool,
    **params,
) -> None:
    """Score the class raster PREDICTION against reference labels.

    Reports the confusion matrix, overall accuracy, Cohen's kappa, per-class
    precision/recall/F1/IoU/support, mIoU, frequency-weighted IoU and boundary F1.
    Pixels that are nodata in either map, or 255, never count.

    \b
    Example:
      geopsp evaluate classes.tif --reference labels.gpkg --plot confusion.png
    """
    from geopsp.core.atomic import check_writable
    from geopsp.evaluate.report import format_table, plot_confusion, to_json
    from geopsp.evaluate.run import EvaluateOptions, evaluate

    if plot:
        check_writable(plot, overwrite)  # refuse before minutes of work, not after
    opts = options.build(EvaluateOptions, params, progress=options.progress_enabled(ctx))
    result = evaluate(prediction, reference, opts)
    if plot:
        plot_confusion(result, plot, overwrite=overwrite)
    click.echo(to_json(result) if as_json else format_table(result))
