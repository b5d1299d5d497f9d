"""Building a PSPNet from a model file's ``architecture`` dict, with the documented defaults."""

from __future__ import annotations

import copy

from torch import nn

from geopsp.core.errors import UsageError
from geopsp.models.pointrend import DEFAULT_POINTREND
from geopsp.models.pspnet import PSPNet

AUX_WEIGHT = 0.4  # weight of the auxiliary stage-3 loss, as in the PSPNet paper

DEFAULT_ARCH: dict = {
    "backbone": "resnet18",
    "output_stride": 8,
    "pyramid_sizes": [1, 3, 5, 6],
    "decoder": "fpn",
    "pointrend": True,
    "pointrend_params": dict(DEFAULT_POINTREND),
}


def resolve_arch(arch: dict) -> dict:
    """Fill defaults into ``arch`` and validate it.

    Parameters
    ----------
    arch : dict
        Needs ``in_channels`` and ``num_classes``; every other key defaults to ``DEFAULT_ARCH``.

    Returns
    -------
    dict
        A complete, JSON-serialisable architecture dict (what the model file stores).
    """
    out = copy.deepcopy(DEFAULT_ARCH)
    for key, value in arch.items():
        if key == "pointrend_params" and value:
            out[key] = {**out[key], **value}
        elif value is not None:
            out[key] = copy.deepcopy(value)
    for key in ("in_channels", "num_classes"):
        if key not in out:
            raise UsageError(f"model architecture needs {key!r}")
        if not isinstance(out[key], int) or out[key] < 1:
            raise UsageError(f"{key} must be a positive integer, got {out[key]!r}")
    if out["output_stride"] not in (8, 16):
        raise UsageError(f"--output-stride must be 8 or 16, got {out['output_stride']!r}")
    sizes = out["pyramid_sizes"]
    if (
        not isinstance(sizes, list | tuple)
        or not 1 <= len(sizes) <= 8
        or not all(isinstance(s, int) and s > 0 for s in sizes)
    ):
        raise UsageError(f"--pyramid-sizes must be 1 to 8 positive integers, got {sizes!r}")
    out["pyramid_sizes"] = [int(s) for s in sizes]
    if out["decoder"] not in ("fpn", "upsample"):
        raise UsageError(f"--decoder must be 'fpn' or 'upsample', got {out['decoder']!r}")
    out["pointrend"] = bool(out["pointrend"])
    p = out["pointrend_params"]
    if not 0.0 <= float(p["beta"]) <= 1.0 or float(p["k"]) < 1:
        raise UsageError("PointRend needs 0 <= beta <= 1 and k >= 1")
    for key in ("points", "train_points", "hidden", "layers"):
        if int(p[key]) < 1:
            raise UsageError(f"PointRend {key} must be >= 1, got {p[key]!r}")
    return out


def build_model(arch: dict, encoder_weights: str | None = None) -> nn.Module:
    """Build the PSPNet described by ``arch``.

    Parameters
    ----------
    arch : dict
        Model-file architecture: ``backbone``, ``in_channels``, ``num_classes``,
        ``output_stride`` (8|16), ``pyramid_sizes``, ``decoder`` (fpn|upsample), ``pointrend``,
        ``pointrend_params``; missing keys take ``DEFAULT_ARCH`` values.
    encoder_weights : str or None
        ``None``/``"none"``, ``"imagenet"`` or a path to an encoder state dict.

    Returns
    -------
    PSPNet
        ``model.arch`` is the resolved architecture, ``model.size_multiple`` the input size rule.

    Raises
    ------
    UsageError
        Invalid architecture, unknown backbone, or one that cannot be dilated.
    ResourceError
        ImageNet weights cannot be downloaded.
    """
    from geopsp.models.encoder import build_encoder

    full = resolve_arch(arch)
    encoder = build_encoder(
        full["backbone"], full["in_channels"], full["output_stride"], encoder_weights
    )
    return PSPNet(encoder, full)
