"""ArcGIS Pro deep learning package: a zip of the model ``.emd``, the model file and the raster
function (``geopsp/export/raster_function.py``, stored as ``GeopspClassifier.py``).

The ``.emd`` follows Esri's model definition (``ModelType``, ``InferenceFunction``,
``ModelFile``, ``ImageHeight``/``ImageWidth``, 0-based ``ExtractBands``, ``Classes``,
``BatchSize``, ``ModelPadding``) and records the PSPNet settings under ``ModelParameters`` with
arcgis.learn's names (``backbone``, ``pyramid_sizes``, ``use_unet``, ``pointrend``,
``keep_dilation``) beside geopsp's own (``decoder``, ``output_stride``, ...).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from geopsp.export.run import ExportModelOptions, default_name

RASTER_FUNCTION = "GeopspClassifier.py"  # the class inside is named after the file, as Pro needs
SOURCE = Path(__file__).with_name("raster_function.py")
NODATA = 255
MAX_BLOCK = 2048


def arcgis_classes(classes: list[Any]) -> list[dict]:
    """``[{Value, Name, Color}]`` as ArcGIS lists classes; 255 (geopsp's nodata) is never one."""
    return [
        {"Value": int(c.value), "Name": str(c.name), "Color": [int(v) for v in c.color]}
        for c in classes
        if int(c.value) != NODATA
    ]


def model_parameters(arch: dict) -> dict:
    """PSPNet settings: arcgis.learn's ``PSPNetClassifier`` names first, then geopsp's."""
    return {
        "backbone": arch["backbone"],
        "backend": "pytorch",
        "pyramid_sizes": list(arch["pyramid_sizes"]),
        # geopsp's FPN decoder fuses stride-4 and stride-2 encoder features on the way up,
        # which is what arcgis.learn's U-Net decoder option does.
        "use_unet": arch["decoder"] == "fpn",
        "pointrend": bool(arch["pointrend"]),
        "keep_dilation": int(arch["output_stride"]) == 8,
        "decoder": arch["decoder"],
        "output_stride": int(arch["output_stride"]),
        "in_channels": int(arch["in_channels"]),
        "num_classes": int(arch["num_classes"]),
        "pointrend_params": arch.get("pointrend_params"),
    }


def model_emd(
    predictor: Any, model_file: str, tile: int, overlap: int, batch_size: int, name: str
) -> dict:
    """The ``.emd`` (model definition) of a geopsp model in a deep learning package.

    ``ModelPadding`` is 0: the network predicts every pixel of its input. ``Overlap`` and
    ``Blend`` are ``geopsp classify``'s tile overlap and blend, which the raster function
    reproduces; ``BlockSize`` is the side of the blocks it asks ArcGIS for.
    """
    md = predictor.metadata
    bands = md.get("bands") or list(range(1, predictor.n_bands + 1))
    return {
        "Framework": "PyTorch",
        "ModelConfiguration": "geopsp",
        "ModelType": "ImageClassification",
        "ModelName": "PSPNet",
        "Name": name,
        "InferenceFunction": RASTER_FUNCTION,
        "ModelFile": model_file,
        "ImageHeight": int(tile),
        "ImageWidth": int(tile),
        "ExtractBands": [int(b) - 1 for b in bands],
        "IsMultispectral": predictor.n_bands != 3,
        "ImageSpaceUsed": "MAP_SPACE",
        "SupportsVariableTileSize": False,
        "BatchSize": int(batch_size),
        "ModelPadding": 0,
        "Overlap": int(overlap),
        "Blend": "cosine",
        "BlockSize": block_size(tile),
        "Classes": arcgis_classes(predictor.classes),
        "NoData": NODATA,
        "ModelParameters": model_parameters(md["architecture"]),
        "Normalization": {"mean": list(predictor.mean), "std": list(predictor.std)},
        "ChipSize": md.get("chip_size"),
        "Resolution": md.get("resolution"),
        "Metrics": md.get("metrics") or {},
        "GeopspVersion": md.get("geopsp_version"),
    }


def block_size(tile: int) -> int:
    """Side of the blocks the raster function asks for: each block also reads one tile of
    context on every side, so larger blocks waste less (at most 2048 pixels: memory)."""
    return tile * max(1, min(4, MAX_BLOCK // tile))


def write_dlpk(
    model: str | os.PathLike,
    output: str | os.PathLike,
    predictor: Any,
    tile: int,
    overlap: int,
    options: ExportModelOptions,
) -> str:
    """Write the ``.dlpk`` for ``model`` to ``output`` (atomically); returns a summary."""
    from geopsp.core.atomic import atomic_path, disk_error

    name = options.name or default_name(model)
    model_file = Path(model).name
    emd = model_emd(predictor, model_file, tile, overlap, options.batch_size, name)
    emd_name = f"{Path(output).stem}.emd"
    with atomic_path(output, overwrite=options.overwrite) as tmp:
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
                z.writestr(emd_name, json.dumps(emd, indent=2))
                z.write(SOURCE, RASTER_FUNCTION)
                # Weights barely compress; storing them lets Pro extract the package faster.
                z.write(model, model_file, compress_type=zipfile.ZIP_STORED)
        except OSError as exc:
            raise disk_error(exc, Path(output)) from exc
    return (
        f"{emd_name} + {RASTER_FUNCTION} + {model_file}, bands {emd['ExtractBands']} (0-based), "
        f"overlap {overlap}, batch {options.batch_size}"
    )
