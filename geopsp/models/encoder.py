"""Dilated encoders from segmentation-models-pytorch, with any band count and weight source.

PSPNet keeps the spatial detail of the deepest features by *dilating* the last stages of the
backbone instead of striding them: at output stride 8 the last two stages run at stride 1 with
dilation 2 and 4, at output stride 16 only the last one (dilation 2). smp's encoders do this
through ``output_stride`` (``make_dilated`` for its own ResNets, timm's ``output_stride`` for
``tu-`` models); encoders that cannot dilate are refused with a usage error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from geopsp.core.errors import InputError, ResourceError, UsageError

log = logging.getLogger(__name__)

EXAMPLE_BACKBONES = (
    "resnet18, resnet34, resnet50, resnet101, resnext50_32x4d, se_resnet50, tu-resnet50d, "
    "tu-regnety_016"
)


def _examples() -> str:
    return f"dilatable backbones include {EXAMPLE_BACKBONES}"


def build_encoder(
    backbone: str, in_channels: int, output_stride: int, weights: str | None = None
) -> nn.Module:
    """Build a dilated smp encoder returning 6 feature maps (strides 1, 2, 4, 8, OS, OS).

    Parameters
    ----------
    backbone : str
        smp encoder name (``resnet34``) or a timm model as ``tu-<name>``.
    in_channels : int
        Number of input bands (any count; pretrained first convolutions are adapted).
    output_stride : int
        8 or 16.
    weights : str or None
        ``None``/``"none"`` (random init), ``"imagenet"`` or the path of a ``.pth`` /
        ``.safetensors`` encoder state dict.

    Returns
    -------
    torch.nn.Module
        The encoder; ``encoder.out_channels`` lists the channels of the 6 features.
    """
    if weights is not None and str(weights).lower() in ("none", ""):
        weights = None
    pretrained = weights is not None and str(weights).lower() == "imagenet"
    encoder = _smp_encoder(backbone, in_channels, output_stride, pretrained)
    _check_features(encoder, backbone, output_stride)
    if weights is not None and not pretrained:
        load_encoder_weights(encoder, weights, backbone)
    return encoder


def _smp_encoder(
    backbone: str, in_channels: int, output_stride: int, pretrained: bool
) -> nn.Module:
    """smp's encoder, its failures turned into one-line usage or resource errors."""
    import segmentation_models_pytorch as smp

    if backbone.startswith("tu-"):
        smp_weights: object = True if pretrained else None
    else:
        smp_weights = "imagenet" if pretrained else None
        if backbone not in smp.encoders.encoders:
            raise UsageError(f"unknown backbone {backbone!r}; {_examples()}")
    try:
        return smp.encoders.get_encoder(
            backbone, in_channels=in_channels, depth=5, weights=smp_weights,
            output_stride=output_stride,
        )  # fmt: skip
    except KeyError as exc:
        if pretrained:
            raise UsageError(
                f"backbone {backbone} has no imagenet weights; use --encoder-weights none or PATH"
            ) from exc
        raise UsageError(f"unknown backbone {backbone!r}; {_examples()}") from exc
    except (ValueError, NotImplementedError, AttributeError, TypeError) as exc:
        raise UsageError(
            f"backbone {backbone} cannot be dilated to output stride {output_stride}; {_examples()}"
        ) from exc
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise UsageError(f"unknown backbone {backbone!r}; {_examples()}") from exc
        raise
    except Exception as exc:
        if pretrained:  # network, hub or file errors while fetching weights
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ResourceError(
                f"cannot download imagenet weights for {backbone} ({first[:120]}); "
                "run with --encoder-weights none, or pass --encoder-weights PATH to a local file"
            ) from exc
        raise


def _check_features(encoder: nn.Module, backbone: str, output_stride: int) -> None:
    channels = list(encoder.out_channels)
    if len(channels) != 6 or channels[1] == 0:
        raise UsageError(
            f"backbone {backbone} does not give the stride-2..32 feature pyramid PSPNet needs; "
            f"{_examples()}"
        )
    if getattr(encoder, "output_stride", output_stride) != output_stride:
        raise UsageError(
            f"backbone {backbone} cannot be dilated to output stride {output_stride}; {_examples()}"
        )


WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # checkpoints that wrap the weights


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"encoder weights {path}: no such file; use --encoder-weights none")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            # weights_only: a weights file must never run code when loaded.
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Unsupported global" in str(exc):  # a pickle of objects torch.load refuses to run
            raise InputError(
                f"encoder weights {path} hold Python objects besides tensors, which are not "
                "loaded for safety; save the state dict alone: "
                "torch.save(model.state_dict(), 'weights.pth')"
            ) from exc
        raise InputError(f"cannot read encoder weights {path}: {exc}".splitlines()[0]) from exc
    for key in WRAPPER_KEYS:  # timm/Lightning ("state_dict"), torchvision references ("model")
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"encoder weights {path}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP-wrapped model
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def _adapt_in_channels(weight: torch.Tensor, new_in: int) -> torch.Tensor:
    """Adapt a pretrained first conv to ``new_in`` bands the way smp does for imagenet."""
    old_in = weight.shape[1]
    if new_in == 1:
        return weight.sum(1, keepdim=True)
    idx = torch.arange(new_in) % old_in
    # Scale so the summed response to a constant image stays the same as with old_in bands.
    return weight[:, idx] * (old_in / new_in)


def _match_keys(sd: dict, own: dict) -> dict:
    """Rename ``sd``'s keys to the encoder's: strip a whole model's ``encoder.`` prefix (smp or
    a geopsp model file), add timm's ``model.`` prefix for a ``tu-`` encoder."""
    if not any(k in own for k in sd) and any(k.startswith("encoder.") for k in sd):
        sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    if not any(k in own for k in sd) and any(f"model.{k}" in own for k in sd):
        sd = {f"model.{k}": v for k, v in sd.items()}  # a plain timm/torchvision checkpoint
    return sd


# Classifier heads that smp's encoders drop (torchvision/timm "fc", "classifier", "head",
# Cadene's "last_linear", efficientnet-pytorch's "_fc").
HEADS = ("fc.", "classifier.", "head.", "last_linear.", "_fc.")


def _classifier_keys(backbone: str) -> set[str]:
    """Keys of a ``tu-`` backbone's whole timm classifier that its feature encoder lacks (the
    head after the last stage: ``conv_head``, ``bn2``, ``fc``...), as the encoder names them."""
    if not backbone.startswith("tu-"):
        return set()
    import timm

    try:
        with torch.device("meta"):  # names only: no memory, no initialisation cost
            full = timm.create_model(backbone[3:], pretrained=False)
    except Exception:  # noqa: BLE001 - an unusual timm model: fall back to the name prefixes
        return set()
    return {f"model.{k}" for k in full.state_dict()}


def _examples_of(keys: list[str], n: int = 2) -> str:
    # Weights say more about the network than BatchNorm step counters.
    shown = sorted(keys, key=lambda k: k.endswith("num_batches_tracked"))[:n]
    return ", ".join(shown) + (", ..." if len(keys) > n else "")


def load_encoder_weights(encoder: nn.Module, path: str | Path, backbone: str = "") -> None:
    """Load an encoder state dict from ``path`` (``.pth`` or ``.safetensors``) into ``encoder``.

    Accepts a bare encoder state dict; a torchvision or timm classifier's (its head, ``fc.*``,
    ``classifier.*`` or ``head.*``, is ignored; torchvision and timm ResNets share key names,
    so either fits both ``resnet18`` and ``tu-resnet18``); a whole smp model's or a geopsp
    model file's (``encoder.`` prefix); a checkpoint wrapping one of these under
    ``state_dict``, ``model`` or ``model_state_dict``, with or without DDP's ``module.``
    prefix. A first convolution made for another band count is adapted (summed for 1 band,
    repeated and rescaled otherwise).

    Raises
    ------
    InputError
        Unreadable file, or one whose tensors do not fit the encoder: one line with the counts
        and examples of missing and unexpected tensor names (or the first shape mismatch).
    """
    path = Path(path)
    own = encoder.state_dict()
    sd = _match_keys(_read_state_dict(path), own)
    # A classifier's head is expected; anything else means another network.
    head = _classifier_keys(backbone)
    extra = [
        k
        for k in sd
        if k not in own and k not in head and not k.removeprefix("model.").startswith(HEADS)
    ]
    # BatchNorm step counters are not weights: some exports leave them out.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    name = backbone or type(encoder).__name__
    if extra or missing:
        parts = (
            [f"{len(missing)} tensors missing (e.g. {_examples_of(missing)})"] if missing else []
        )
        if extra:
            parts.append(f"{len(extra)} unexpected tensors (e.g. {_examples_of(extra)})")
        raise InputError(
            f"encoder weights {path} do not fit the {name} encoder: {'; '.join(parts)}; "
            "are they for another --backbone?"
        )
    fixed = {}
    for k, target in own.items():
        v = sd.get(k, target)
        same_but_bands = v.ndim == 4 and v.shape[0] == target.shape[0]
        if v.shape != target.shape and same_but_bands and v.shape[2:] == target.shape[2:]:
            v = _adapt_in_channels(v, target.shape[1])
        if v.shape != target.shape:
            raise InputError(
                f"encoder weights {path}: {k} has shape {tuple(v.shape)}, the {name} encoder "
                f"expects {tuple(target.shape)}; are they for another --backbone?"
            )
        fixed[k] = v
    encoder.load_state_dict(fixed, strict=True)
    log.info("loaded encoder weights from %s", path)
