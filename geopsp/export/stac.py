"""STAC Item describing a model file with the Machine Learning Model extension (MLM v1.5.2).

Written by hand rather than with pystac's MLM helper, which targets MLM v1.4 and writes fields
(``norm_type``, ``statistics``) that v1.5 no longer accepts. Bands are declared as STAC 1.1
core ``bands``; the classes use the classification extension's class objects.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from geopsp.export.run import ExportModelOptions, default_name

MLM = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
STAC_VERSION = "1.1.0"
ARTIFACT_TYPE = "safetensors.torch.save_file"  # the model file is plain safetensors


def semver(version: str) -> str:
    """``version`` as strict semantic versioning (``2.1.0a0+git1`` -> ``2.1.0-a0+git1``)."""
    m = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)$", version.strip())
    if not m:
        return "0.0.0"
    core = ".".join(str(int(g or 0)) for g in m.group(1, 2, 3))
    rest = m.group(4)
    pre, _, build = rest.partition("+")
    pre = re.sub(r"[^0-9A-Za-z.-]", "", pre).strip(".-")
    build = re.sub(r"[^0-9A-Za-z.-]", "", build).strip(".-")
    return core + (f"-{pre}" if pre else "") + (f"+{build}" if build else "")


def mlm_name(name: str) -> str:
    """A name ``mlm:name`` accepts: a letter first, letters/digits/``_.-`` and spaces."""
    text = re.sub(r"[^A-Za-z0-9_.\- ]", "-", name).strip(" -_.")
    if not text or not text[0].isalpha():
        text = "geopsp-" + text
    return text if len(text) >= 3 and text[-1].isalnum() else text + "-model"


def class_name(name: str) -> str:
    """A class name of the pattern ``^[0-9A-Za-z-_]+$`` (spaces and others become ``_``)."""
    return re.sub(r"[^0-9A-Za-z_-]", "_", name) or "class"


def model_input(predictor: Any, band_names: list[str], tile: int) -> dict:
    """The ``mlm:input`` object: bands, shape, z-score value scaling per band."""
    return {
        "name": "normalized bands",
        "bands": band_names,
        "input": {"shape": [-1, predictor.n_bands, tile, tile],
                  "dim_order": ["batch", "bands", "height", "width"], "data_type": "float32"},
        "value_scaling": [{"type": "z-score", "mean": float(m), "stddev": float(s)}
                          for m, s in zip(predictor.mean, predictor.std, strict=True)],
        "resize_type": None,
        "description": f"Source bands {', '.join(band_names)}, z-scored; height and width any "
                       f"multiple of {predictor.size_multiple} ({tile} is geopsp classify's "
                       "default tile); nodata pixels set to 0 after scaling",
    }  # fmt: skip


def model_output(predictor: Any, tile: int) -> dict:
    """The ``mlm:output`` object: logits per class, with the classes as class objects."""
    classes = [
        {"value": int(c.value), "name": class_name(c.name), "description": c.name,
         "color_hint": "{:02X}{:02X}{:02X}".format(*c.color)}
        for c in predictor.classes
    ]  # fmt: skip
    k = len(classes)
    return {
        "name": "class logits",
        "tasks": ["semantic-segmentation"],
        "result": {"shape": [-1, k, tile, tile],
                   "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
        "classification:classes": classes,
        "description": "Logits of the network; softmax gives class probabilities, and "
                       "channel i is class value classification:classes[i].value",
    }  # fmt: skip


def stac_item(model: str | os.PathLike, output: str | os.PathLike, predictor: Any,
              n_params: int, tile: int, name: str) -> dict:  # fmt: skip
    """The STAC Item of ``model``; the asset's ``href`` is relative to ``output``'s folder."""
    import torch

    md = predictor.metadata
    arch = md["architecture"]
    band_names = [f"band_{b}" for b in md.get("bands") or range(1, predictor.n_bands + 1)]
    model_path = Path(model).resolve()
    href = os.path.relpath(model_path, Path(output).resolve().parent).replace(os.sep, "/")
    created = dt.datetime.fromtimestamp(model_path.stat().st_mtime, dt.UTC)
    weights = (md.get("train_config") or {}).get("encoder_weights")
    props = {
        "datetime": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": f"geopsp PSPNet ({arch['backbone']}) for "
                       f"{len(predictor.classes)}-class semantic segmentation",
        "bands": [{"name": n} for n in band_names],
        "mlm:name": name,
        "mlm:architecture": "PSPNet",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "PyTorch",
        "mlm:framework_version": semver(torch.__version__),
        "mlm:total_parameters": int(n_params),
        "mlm:pretrained": weights not in (None, "none"),
        "mlm:batch_size_suggestion": 4,
        "mlm:accelerator": "cuda",
        "mlm:accelerator_constrained": False,
        "mlm:input": [model_input(predictor, band_names, tile)],
        "mlm:output": [model_output(predictor, tile)],
        "mlm:hyperparameters": _hyperparameters(md),
        "geopsp:metrics": md.get("metrics") or {},
        "geopsp:metadata": md,
    }  # fmt: skip
    asset = {
        "href": href,
        "type": "application/octet-stream; application=safetensors",
        "title": f"geopsp model file ({model_path.name})",
        "roles": ["mlm:model", "mlm:weights"],
        "mlm:artifact_type": ARTIFACT_TYPE,
    }
    return {
        "type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": [MLM, CLASSIFICATION],
        "id": name.replace(" ", "_"), "geometry": None, "properties": props, "links": [],
        "assets": {"model": asset},
    }  # fmt: skip


def _hyperparameters(md: dict) -> dict:
    """The training options and architecture, keys as ``mlm:hyperparameters`` allows."""
    items = {**(md.get("train_config") or {}), **{f"arch.{k}": v for k, v in
                                                     md["architecture"].items()}}  # fmt: skip
    return {re.sub(r"[^0-9a-zA-Z_.-]", "_", str(k)): v for k, v in items.items()}


def write_stac(model: str | os.PathLike, output: str | os.PathLike, predictor: Any, tile: int,
               options: ExportModelOptions) -> str:  # fmt: skip
    """Write the STAC Item JSON of ``model`` to ``output`` (atomically); returns a summary."""
    from geopsp.core.atomic import atomic_path, disk_error
    from geopsp.models.modelfile import parameter_count

    name = mlm_name(options.name or default_name(model))
    item = stac_item(model, output, predictor, parameter_count(model), tile, name)
    with atomic_path(output, overwrite=options.overwrite) as tmp:
        try:
            tmp.write_text(json.dumps(item, indent=2), encoding="utf-8")
        except OSError as exc:
            raise disk_error(exc, Path(output)) from exc
    return f"STAC Item {item['id']!r}, MLM v1.5.2, model asset {item['assets']['model']['href']}"
