"""``geopsp export-model``: options, checks shared by every target, and the dispatch."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from geopsp.core.errors import GeopspError, UsageError

log = logging.getLogger(__name__)

FORMATS = ("dlpk", "onnx", "stac")
SUFFIXES = {"dlpk": ".dlpk", "onnx": ".onnx", "stac": ".json"}
MIN_OPSET = 11  # bilinear Resize with half-pixel centres, as F.interpolate computes it
MAX_OPSET = 17  # what ONNX Runtime builds bundled with QGIS plugins and ArcGIS Pro accept


class ExportError(GeopspError):
    """The model cannot be expressed in the requested format (exit code 1)."""


@dataclass
class ExportModelOptions:
    """Options of ``geopsp export-model`` (see docs/export-model.md).

    Parameters
    ----------
    format : {"dlpk", "onnx", "stac"} or None
        Target; None: from the output's extension.
    tile_size : int, optional
        Model input size (square); default: ``geopsp classify``'s default tile for the model.
    batch_size : int
        Tiles per forward pass in ArcGIS Pro (the ``.emd``'s ``BatchSize``).
    opset : int
        ONNX opset, at most 17.
    name : str, optional
        Model name in the STAC Item and ONNX metadata; default: from the file name.
    overwrite : bool
        Replace an existing output.
    """

    format: str | None = None
    tile_size: int | None = None
    batch_size: int = 4
    opset: int = MAX_OPSET
    name: str | None = None
    overwrite: bool = False


@dataclass
class ExportSummary:
    """What one export wrote."""

    output: str
    format: str
    tile: int
    detail: str

    def line(self) -> str:
        return (
            f"{self.output}: {self.format} export, {self.tile} x {self.tile} input; {self.detail}"
        )


def resolve_format(output: str | os.PathLike, fmt: str | None) -> str:
    """The target format: ``fmt``, or the one whose extension ``output`` has."""
    suffix = Path(output).suffix.lower()
    if fmt is None:
        found = [f for f, s in SUFFIXES.items() if s == suffix]
        if not found:
            raise UsageError(
                f"cannot tell the format from {output}; give --format dlpk, onnx or stac"
            )
        return found[0]
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if suffix != SUFFIXES[fmt]:
        # ArcGIS Pro only lists .dlpk files, QGIS only .onnx; a catalog expects .json.
        raise UsageError(f"a {fmt} export must end in {SUFFIXES[fmt]}, got {output}")
    return fmt


def export_targets(metadata: dict) -> list[tuple[str, str]]:
    """What a model can be exported to, for ``geopsp info``: ``[(format, description)]``.

    Reads only the metadata (no torch). A target that cannot be made says why.
    """
    norm = metadata.get("normalization") or {}
    if not norm.get("mean") or not norm.get("std") or not metadata.get("classes"):
        return [(f, "not possible: the model lacks band normalization or classes") for f in FORMATS]
    onnx_note = "QGIS Deepness, any ONNX runtime (opset <= 17)"
    if not _importable("onnx"):
        onnx_note += "; needs the onnx package (pip install onnx)"
    return [
        ("dlpk", "ArcGIS Pro, Classify Pixels Using Deep Learning"),
        ("onnx", onnx_note),
        ("stac", "STAC Item, Machine Learning Model extension v1.5.2"),
    ]


def export_model(
    model: str | os.PathLike, output: str | os.PathLike, options: ExportModelOptions | None = None
) -> ExportSummary:
    """Export the geopsp model file ``model`` to ``output``.

    Parameters
    ----------
    model : path-like
        A model file written by ``geopsp train``.
    output : path-like
        ``.dlpk``, ``.onnx`` or ``.json`` (STAC Item); written atomically.
    options : ExportModelOptions, optional

    Returns
    -------
    ExportSummary

    Raises
    ------
    ModelFileError, UsageError, OutputError, ExportError
    """
    from geopsp.classify.plan import plan_tiles
    from geopsp.classify.predictor import Predictor
    from geopsp.core.atomic import check_writable

    options = options or ExportModelOptions()
    fmt = resolve_format(output, options.format)
    if options.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {options.batch_size}")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise UsageError(f"--opset must be {MIN_OPSET} to {MAX_OPSET}, got {options.opset}")
    if Path(output).is_dir():
        raise UsageError(f"{output} is a folder; give the export's file name")
    if _same_file(output, model):
        raise UsageError(f"{output} is the model file; write the export to another file")
    check_writable(output, options.overwrite)
    if fmt == "onnx":
        require_onnx()
    predictor = Predictor.from_file(str(model), device="cpu", amp=False)
    tile, overlap = plan_tiles(predictor, options.tile_size, None)
    if fmt == "dlpk":
        from geopsp.export.dlpk import write_dlpk

        detail = write_dlpk(model, output, predictor, tile, overlap, options)
    elif fmt == "onnx":
        from geopsp.export.onnx import write_onnx

        detail = write_onnx(output, predictor, tile, overlap, options)
    else:
        from geopsp.export.stac import write_stac

        detail = write_stac(model, output, predictor, tile, options)
    return ExportSummary(str(output), fmt, tile, detail)


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist
        return False


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules
        return False


def require_onnx() -> None:
    """Fail early, with the install command, when the onnx package is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            "ONNX export needs the onnx package: pip install 'geopsp[onnx]' (or 'onnx>=1.15')"
        ) from exc


def default_name(model: str | os.PathLike) -> str:
    """A model name from its file: the stem, or the folder for a plain ``model.safetensors``."""
    p = Path(model).resolve()
    return p.parent.name if p.stem == "model" and p.parent.name else p.stem
