"""The geopsp PSPNet: dilated encoder, pyramid pooling, FPN/upsample decoder, PointRend.

``build_model(arch)`` builds the network described by a model file's ``architecture`` dict;
``DEFAULT_ARCH`` holds the documented defaults (see docs/model.md for how they were chosen).
The names are defined in :mod:`geopsp.models.build` and loaded on first use, so that
importing :mod:`geopsp.models.modelfile` (``geopsp info``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AUX_WEIGHT",
    "DEFAULT_ARCH",
    "PSPNet",
    "build_model",
    "point_labels",
    "resolve_arch",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("geopsp.models.build"), name)
    raise AttributeError(f"module 'geopsp.models' has no attribute {name!r}")
