"""The geopsp PSPNet: dilated encoder, pyramid pooling, FPN/upsample decoder, PointRend.

``build_model(arch)`` builds the network described by a model file's ``architecture`` dict;
``DEFAULT_ARCH`` holds the documented defaults (see docs/model.md for how they were chosen).
The names are loaded from their modules on first use, so that importing
:mod:`geopsp.models.modelfile` (``geopsp info``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "AUX_WEIGHT": "geopsp.models.build",
    "DEFAULT_ARCH": "geopsp.models.build",
    "build_model": "geopsp.models.build",
    "resolve_arch": "geopsp.models.build",
    "PSPNet": "geopsp.models.pspnet",
    "point_labels": "geopsp.models.pointrend",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'geopsp.models' has no attribute {name!r}")
