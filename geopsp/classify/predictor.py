"""What a classification needs from a model: the network, its bands, normalization, classes.

:class:`Predictor` wraps a model file (or any callable returning logits, for tests and
custom models) and turns batches of normalized tiles into class probabilities, with
optional test-time augmentation averaged in probability space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geopsp.core.classes import ClassInfo, from_dicts
from geopsp.core.errors import ModelFileError, ResourceError, UsageError

log = logging.getLogger(__name__)
TTA_MODES = ("none", "flips", "d4")
CPU_FP32_CHANNELS_LAST_PIXELS = 128 * 128  # float32 CPU tiles this large go channels_last


@dataclass
class Predictor:
    """A model plus the metadata that says how to feed it.

    Parameters
    ----------
    model : callable
        ``model(x: Tensor (B, C, H, W)) -> logits (B, K, H, W)`` (or probabilities when
        ``activation="none"``).
    classes : list of ClassInfo
        Channel ``i`` is ``classes[i]``.
    mean, std : list of float
        Per-band normalization (source units).
    bands : list of int, optional
        Source band numbers the model expects (1-based); None: all bands.
    size_multiple : int
        Input H and W must be multiples of it.
    chip_size : int, optional
        Chip size used in training (the default tile size derives from it).
    resolution : (float, float), optional
        Training pixel size, for the resolution warning.
    activation : {"softmax", "none"}
        How model outputs become probabilities.
    device, amp : where the model runs, and whether with mixed precision.
    metadata : dict
        The model file's metadata.
    source : str, optional
        The model file.
    identity : str, optional
        The model file's identity (checksum of its weights and metadata), computed when the
        weights were loaded; a resumed classification compares it, never the file as it is
        hours later.
    """

    model: Callable[[Any], Any]
    classes: list[ClassInfo]
    mean: list[float]
    std: list[float]
    bands: list[int] | None = None
    size_multiple: int = 1
    chip_size: int | None = None
    resolution: tuple[float, float] | None = None
    crs: str | None = None
    activation: str = "softmax"
    device: Any = "cpu"
    amp: bool = False
    metadata: dict = field(default_factory=dict)
    source: str | None = None  # the model file, when loaded from one
    identity: str | None = None

    @property
    def n_bands(self) -> int:
        return len(self.mean)

    @classmethod
    def from_file(cls, path: str, device: Any = "auto", amp: bool = True) -> Predictor:
        """Load a model file written by ``geopsp train`` onto ``device``.

        ``device`` is a torch device, or ``--device`` text resolved by
        :func:`geopsp.core.runtime.resolve_device` (under torchrun ``cuda`` is GPU
        ``LOCAL_RANK``).
        """
        import torch

        from geopsp.classify.fingerprint import model_identity
        from geopsp.core.precision import cpu_has_bf16
        from geopsp.core.runtime import launch, resolve_device
        from geopsp.models.modelfile import load_model

        if isinstance(device, torch.device):
            dev = device
        else:
            env = launch()
            dev = resolve_device(device, env.local_rank, env.world)
        identity = model_identity(path)  # now, with the weights: not hours later per input
        model, md = load_model(path, dev)
        if model_identity(path) != identity:
            raise ModelFileError(f"{path} was replaced while it was being loaded; try again")
        norm = md.get("normalization") or {}
        if not norm.get("mean") or not norm.get("std") or not md.get("classes"):
            raise ModelFileError(
                f"{path} lacks band normalization or classes; retrain or re-export it"
            )
        res = md.get("resolution")
        return cls(
            model=model,
            classes=from_dicts(md["classes"]),
            mean=[float(v) for v in norm["mean"]],
            std=[float(v) for v in norm["std"]],
            bands=[int(b) for b in md["bands"]] if md.get("bands") else None,
            size_multiple=int(getattr(model, "size_multiple", 1) or 1),
            chip_size=int(md["chip_size"]) if md.get("chip_size") else None,
            resolution=(float(res[0]), float(res[1])) if res else None,
            crs=md.get("crs"),
            device=dev,
            amp=bool(amp) and (dev.type == "cuda" or (dev.type == "cpu" and cpu_has_bf16())),
            metadata=md,
            source=str(path),
            identity=identity,
        )

    def forward_fn(self, tta: str = "none") -> Callable[[np.ndarray], np.ndarray]:
        """A function ``x (n, C, T, T) float32 -> probabilities (n, K, T, T) float32``."""
        import torch

        if tta not in TTA_MODES:
            raise UsageError(f"--tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
        dev = (
            torch.device(self.device) if not isinstance(self.device, torch.device) else self.device
        )
        cuda = dev.type == "cuda"
        # On a CPU, mixed precision is bfloat16 (float16 has no fast CPU kernels).
        amp_dtype = None if cuda else torch.bfloat16
        amp = self.amp and dev.type in ("cuda", "cpu")
        layout: dict[str, bool] = {}  # decided on the first batch, when the tile size is known
        transforms = _transforms(tta)

        def to_layout(x: torch.Tensor) -> torch.Tensor:
            if "channels_last" not in layout:
                module = isinstance(self.model, torch.nn.Module)  # else any callable: as given
                cl = module and channels_last_tiles(dev, amp, x.shape[-2] * x.shape[-1])
                if module:  # the model follows the tiles, whatever an earlier run chose
                    fmt = torch.channels_last if cl else torch.contiguous_format
                    self.model = self.model.to(memory_format=fmt)
                layout["channels_last"] = cl
            if layout["channels_last"]:
                return x.contiguous(memory_format=torch.channels_last)
            return x

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
                out = self.model(x)
            out = out.float()
            return torch.softmax(out, dim=1) if self.activation == "softmax" else out

        def forward(batch: np.ndarray) -> np.ndarray:
            try:
                return _forward(batch)
            except torch.cuda.OutOfMemoryError as exc:
                raise ResourceError(
                    f"out of GPU memory on {dev}; use a smaller --tile-size or --batch-size"
                ) from exc

        def _forward(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(batch)
            if cuda:
                x = x.pin_memory().to(dev, non_blocking=True)
            x = to_layout(x)
            with torch.inference_mode():
                total = None
                for fwd, inv in transforms:
                    p = inv(run(fwd(x)))
                    total = p if total is None else total + p
                if len(transforms) > 1:
                    total = total / len(transforms)
                return total.contiguous().cpu().numpy().astype(np.float32, copy=False)

        return forward


def channels_last_tiles(device: Any, amp: bool, pixels: int) -> bool:
    """Whether tiles of ``pixels`` pixels (and the model) should be ``channels_last``.

    CUDA and bfloat16 on a CPU: always (a CPU forward pass in bfloat16 took 34-40 % less
    time with it at 64-512 px tiles). Float32 on a CPU: from
    :data:`CPU_FP32_CHANNELS_LAST_PIXELS` on (13-17 % less time at 128-512 px tiles for the
    CPU's default network; even at 64 px, and 10 % slower there for the upsample decoder).
    """
    if device.type == "cuda" or amp:
        return True
    return pixels >= CPU_FP32_CHANNELS_LAST_PIXELS


def _transforms(tta: str) -> list[tuple[Callable, Callable]]:
    """(forward, inverse) pairs on (B, C, H, W) tensors: identity, flips, or the 8 of D4."""
    import torch

    def flip(dims):
        return (lambda t: torch.flip(t, dims)), (lambda t: torch.flip(t, dims))

    def rot(k, hflip):
        def fwd(t):
            t = torch.rot90(t, k, (2, 3))
            return torch.flip(t, (3,)) if hflip else t

        def inv(t):
            t = torch.flip(t, (3,)) if hflip else t
            return torch.rot90(t, -k, (2, 3))

        return fwd, inv

    ident = (lambda t: t), (lambda t: t)
    if tta == "none":
        return [ident]
    if tta == "flips":
        return [ident, flip((3,)), flip((2,)), flip((2, 3))]
    return [rot(k, h) for h in (False, True) for k in range(4)]
