"""ONNX export: the eval-mode network plus softmax, with the metadata QGIS Deepness reads.

The graph takes a normalized float32 batch ``[N, C, T, T]`` (``T`` fixed, ``N`` free) and
returns class probabilities ``[N, K, T, T]``; channel ``i`` is the model's ``classes[i]``.
It is made by the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): the
``torch.export``-based one needs the onnxscript package and gives nothing this graph needs.

Two things make the network expressible at opset <= 17 for one fixed input size:

- The pyramid pooling's ``AdaptiveAvgPool2d(s)`` has no ONNX operator when ``s`` does not
  divide the feature map. For a known feature size it is a fixed linear map, so it is replaced
  by two matrix products with the exact averaging weights (:class:`FixedAdaptivePool`).
- PointRend's subdivision (top-k of the uncertainty, ``grid_sample``, scatter) is exported as
  it is (TopK, GridSample from opset 16, ScatterElements); its number of steps and points
  depend only on the input size, which is fixed.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from geopsp.export.run import ExportError, ExportModelOptions, default_name

log = logging.getLogger(__name__)
POINTREND_MIN_OPSET = 16  # GridSample
INPUT_NAME, OUTPUT_NAME = "input", "probabilities"


def pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Weights ``(size_out, size_in)`` of 1-D adaptive average pooling (PyTorch's bins).

    Bin ``i`` averages ``[floor(i * n / s), ceil((i + 1) * n / s))``, as ``AdaptiveAvgPool``
    does; 2-D pooling is this along rows, then along columns.
    """
    m = np.zeros((size_out, size_in), dtype=np.float32)
    for i in range(size_out):
        a = (i * size_in) // size_out
        b = -((-(i + 1) * size_in) // size_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def _torch_modules():
    import torch
    from torch import nn

    class FixedAdaptivePool(nn.Module):
        """``AdaptiveAvgPool2d`` for one input size, as ``P_h @ x @ P_w^T`` (ONNX MatMul)."""

        def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]):
            super().__init__()
            self.register_buffer("rows", torch.from_numpy(pool_matrix(size_in[0], size_out[0])))
            self.register_buffer(
                "cols", torch.from_numpy(pool_matrix(size_in[1], size_out[1]).T.copy())
            )

        def forward(self, x):
            return torch.matmul(torch.matmul(self.rows, x), self.cols)

    class Probabilities(nn.Module):
        """The network followed by a softmax over classes."""

        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.softmax(self.net(x), dim=1)

    return FixedAdaptivePool, Probabilities


def onnx_ready(model: Any, tile: int, channels: int) -> Any:
    """A CPU copy of ``model`` whose adaptive poolings are fixed for ``tile`` inputs, with
    a softmax on top."""
    import torch
    from torch import nn

    fixed_pool, probabilities = _torch_modules()
    net = copy.deepcopy(model).cpu().eval()
    sizes: dict[str, tuple[int, int]] = {}

    def record(name):
        return lambda mod, inputs: sizes.__setitem__(name, tuple(inputs[0].shape[-2:]))

    hooks = [
        m.register_forward_pre_hook(record(n))
        for n, m in net.named_modules()
        if isinstance(m, nn.AdaptiveAvgPool2d)
    ]
    with torch.inference_mode():
        net(torch.zeros(1, channels, tile, tile))
    for h in hooks:
        h.remove()
    for name, size_in in sizes.items():
        parent_name, _, attr = name.rpartition(".")
        parent = net.get_submodule(parent_name)
        out = getattr(parent, attr).output_size
        out = (
            (out, out)
            if isinstance(out, int)
            else tuple(o or s for o, s in zip(out, size_in, strict=True))
        )
        setattr(parent, attr, fixed_pool(size_in, out))
    return probabilities(net).eval()


def deepness_metadata(predictor: Any, tile: int, overlap: int, name: str) -> dict[str, str]:
    """The ``metadata_props`` QGIS Deepness reads (values JSON-encoded), plus geopsp's own.

    Deepness always divides the input by 255 and then standardizes with these mean/std, so
    geopsp's per-band statistics are stored divided by 255: ``(x / 255 - m / 255) / (s / 255)``
    equals geopsp's ``(x - m) / s`` for any data type.
    """
    md = predictor.metadata
    classes = {str(i): c.name for i, c in enumerate(predictor.classes)}
    props: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": classes,
        # The plugin's code reads tile_size, its documentation says tiles_size: write both.
        "tile_size": tile,
        "tiles_size": tile,
        "tiles_overlap": round(100 * overlap / tile),
        "standardization_mean": [m / 255.0 for m in predictor.mean],
        "standardization_std": [(s if s > 0 else 1.0) / 255.0 for s in predictor.std],
    }
    cm = resolution_cm(md.get("resolution"), md.get("crs"))
    if cm is not None:
        props["resolution"] = cm
    props["geopsp_name"] = name
    props["geopsp_class_values"] = [c.value for c in predictor.classes]
    props["geopsp"] = md
    return {k: json.dumps(v) for k, v in props.items()}


def resolution_cm(resolution: Any, crs: Any) -> float | None:
    """Training pixel size in centimetres, or None when the CRS is not in linear units."""
    if not resolution or crs is None:
        return None
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        unit, factor = CRS.from_user_input(crs).linear_units_factor
    except (CRSError, ValueError):  # geographic CRS: degrees are no fixed length
        log.warning("the model's CRS is not projected; the ONNX file has no resolution")
        return None
    res = resolution if isinstance(resolution, int | float) else resolution[0]
    return round(float(res) * float(factor) * 100.0, 6)


def _torchscript_exporter() -> dict:
    """``dynamo=False`` where torch has the choice (2.5+; the default since 2.9 is the
    torch.export-based exporter, which needs onnxscript); older torch only has TorchScript."""
    import inspect

    import torch

    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def write_onnx(
    output: str | os.PathLike, predictor: Any, tile: int, overlap: int, options: ExportModelOptions
) -> str:
    """Export ``predictor``'s network to ``output`` for ``tile`` x ``tile`` inputs.

    Returns
    -------
    str
        A short description for the summary line.

    Raises
    ------
    UsageError, ExportError
    """
    import onnx
    import torch

    from geopsp.core.atomic import atomic_path

    arch = predictor.metadata.get("architecture") or {}
    if arch.get("pointrend") and options.opset < POINTREND_MIN_OPSET:
        raise ExportError(
            f"PointRend needs ONNX opset {POINTREND_MIN_OPSET} or newer (GridSample); "
            f"use --opset {POINTREND_MIN_OPSET} or 17"
        )
    net = onnx_ready(predictor.model, tile, predictor.n_bands)
    x = torch.zeros(1, predictor.n_bands, tile, tile)
    name = options.name or default_name(predictor.source or "model")
    with atomic_path(output, overwrite=options.overwrite) as tmp:
        try:
            with warnings.catch_warnings():
                # The tracer's notes on Python-side shape checks, and the exporter's own
                # deprecation notice: both expected, neither actionable for the user.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, (x,), str(tmp), opset_version=options.opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    **_torchscript_exporter(),
                )  # fmt: skip
        except Exception as exc:  # any exporter failure: the graph has no ONNX form
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(
                f"this model cannot be expressed in ONNX opset {options.opset}: {first[:200]}"
            ) from exc
        graph = onnx.load(str(tmp))
        graph.doc_string = f"geopsp PSPNet {name}: normalized bands in, class probabilities out"
        # The tracer leaves the output's dimensions symbolic after PointRend's reshapes;
        # Deepness reads K, H and W from them (and refuses H != W), so state them.
        dims = graph.graph.output[0].type.tensor_type.shape.dim
        for dim, value in zip(dims[1:], (len(predictor.classes), tile, tile), strict=True):
            dim.Clear()
            dim.dim_value = value
        for key, value in deepness_metadata(predictor, tile, overlap, name).items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
    size = Path(output).stat().st_size / 1e6
    return f"opset {options.opset}, {len(predictor.classes)} class probabilities, {size:.1f} MB"
