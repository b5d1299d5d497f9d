"""``geopsp export-model``: a model file for ArcGIS Pro (.dlpk), ONNX runtimes and STAC."""

from __future__ import annotations

import click

from geopsp.cli import options


@click.command("export-model")
@click.argument("model", metavar="MODEL")
@click.option(
    "-o", "--output", required=True, metavar="OUT",
    help="Output: a .dlpk, .onnx or .json (STAC Item) file.",
)  # fmt: skip
@click.option(
    "-f", "--format", "fmt", type=click.Choice(["dlpk", "onnx", "stac"]), default=None,
    help="Target [default: from OUT's extension].",
)  # fmt: skip
@click.option(
    "--tile-size", type=click.IntRange(min=1), default=None, metavar="PIXELS",
    help="Model input size (square) [default: geopsp classify's default tile: twice the "
    "chip size, at most 1024, or the chip size for chips smaller than the pyramid].",
)  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
    help="dlpk: tiles per forward pass in ArcGIS Pro (BatchSize).",
)  # fmt: skip
@click.option(
    "--opset", type=click.IntRange(min=11, max=17), default=17, show_default=True,
    help="onnx: ONNX opset (PointRend needs 16 or 17).",
)  # fmt: skip
@click.option(
    "--name", default=None, metavar="NAME",
    help="Model name in the STAC Item, .emd and ONNX metadata [default: from the file name].",
)  # fmt: skip
@options.overwrite
def command(model: str, output: str, fmt: str | None, tile_size: int | None, batch_size: int,
            opset: int, name: str | None, overwrite: bool) -> None:  # fmt: skip
    """Export the geopsp model file MODEL for other software.

    \b
    dlpk  ArcGIS Pro deep learning package (Classify Pixels Using Deep Learning)
    onnx  ONNX graph with QGIS Deepness metadata (any ONNX runtime)
    stac  STAC Item with the Machine Learning Model extension v1.5.2

    \b
    Examples:
      geopsp export-model model.safetensors -o glaciers.dlpk
      geopsp export-model model.safetensors -o glaciers.onnx
      geopsp export-model model.safetensors -o catalog/glaciers.json --name "Everest glaciers"
    """
    from geopsp.export import ExportModelOptions, export_model

    opts = ExportModelOptions(format=fmt, tile_size=tile_size, batch_size=batch_size, opset=opset,
                         name=name, overwrite=overwrite)  # fmt: skip
    click.echo(export_model(model, output, opts).line())
