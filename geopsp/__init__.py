"""geopsp: PSPNet segmentation of geospatial imagery, from training chips to seamless maps.

The package imports nothing heavy at import time so that ``geopsp --help`` stays fast;
``load_model`` pulls in torch only when called.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path: str, device: str = "cpu") -> tuple[Any, dict]:
    """Load a geopsp model file.

    Parameters
    ----------
    path : str
        Path of a ``.safetensors`` model file written by ``geopsp train``.
    device : str
        Torch device to put the model on.

    Returns
    -------
    (torch.nn.Module, dict)
        The model in eval mode and its metadata.
    """
    from geopsp.models.modelfile import load_model as _load

    return _load(path, device=device)
