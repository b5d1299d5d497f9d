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
@click.option(
    "--objects",
    is_flag=True,
    help="Also score objects: polygons matched one-to-one by IoU (SpaceNet); PREDICTION may "
    "then be a polygon vector.",
)
@click.option(
    "--iou",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.5,
    show_default=True,
    help="IoU from which a predicted and a reference object match (with --objects).",
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
    objects: bool,
    iou: float,
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
    from geopsp.evaluate.objects import is_raster
    from geopsp.evaluate.report import format_table, plot_confusion, to_json
    from geopsp.evaluate.run import EvaluateOptions, evaluate

    if plot:
        check_writable(plot, overwrite)  # refuse before minutes of work, not after
    opts = options.build(EvaluateOptions, params, progress=options.progress_enabled(ctx))
    if objects and not is_raster(prediction):  # polygons: object scores only
        if plot:
            raise click.UsageError("--plot needs a class raster PREDICTION, not polygons")
        _echo_objects(None, prediction, reference, opts, iou, as_json)
        return
    result = evaluate(prediction, reference, opts)
    if plot:
        plot_confusion(result, plot, overwrite=overwrite)
    if objects:
        _echo_objects(result, prediction, reference, opts, iou, as_json)
        return
    click.echo(to_json(result) if as_json else format_table(result))


def _echo_objects(pixels, prediction, reference, opts, iou: float, as_json: bool) -> None:
    """Print the object scores (``--objects``) after the pixel scores when there are any."""
    import json

    from geopsp.evaluate.objects import evaluate_objects, format_objects
    from geopsp.evaluate.report import format_table

    obj = evaluate_objects(
        prediction,
        reference,
        class_field=opts.class_field,
        layer=opts.layer,
        buffer=opts.buffer,
        iou=iou,
    )
    if as_json:
        data = pixels.to_dict() if pixels is not None else {}
        click.echo(json.dumps({**data, "objects": obj.to_dict()}, indent=2))
    else:
        table = format_objects(obj)
        click.echo(f"{format_table(pixels)}\n\n{table}" if pixels is not None else table)
