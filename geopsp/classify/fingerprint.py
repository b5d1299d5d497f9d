"""What decides the bytes of a classification, and how its outputs and progress record it.

The *fingerprint* of a classification names its input, model, grid and options. A resumed
run (``--resume``) continues a progress folder only with an equal fingerprint, and skips an
existing output only when that output (and each requested companion) records an equal one
in its ``GEOPSP_RUN`` metadata tag.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from geopsp.core.errors import OutputError

TAG = "GEOPSP_RUN"


def model_identity(path: str | os.PathLike) -> str:
    """The model file's identity without reading its weights again: the checksum of its
    tensors (verified when the model is loaded) and a hash of its metadata."""
    from geopsp.models.modelfile import CHECKSUM_KEY, read_header

    _, meta, _ = read_header(path)
    if CHECKSUM_KEY in meta:
        md = hashlib.sha256(meta.get("geopsp", "").encode()).hexdigest()
        return f"{meta[CHECKSUM_KEY]}:{md}"
    h = hashlib.sha256()  # a file without a checksum: hash all of it
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def input_identity(address: str) -> dict:
    """How a resumed run recognizes its input: the path, and size and time for local files."""
    p = Path(address)
    if not p.is_file():
        return {"input": address}
    st = p.stat()
    return {"input": str(p.resolve()), "input_bytes": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def classify_fingerprint(address: str, predictor, grid, bands, options) -> dict:
    """Everything that decides the bytes of a classification, as JSON-ready values.

    The model is named by ``predictor.identity``, computed when its weights were loaded, so a
    model file replaced during a long run cannot be mistaken for the one in use.
    """
    import torch

    from geopsp import __version__

    model = predictor.identity or json.dumps(predictor.metadata, sort_keys=True)
    fp = {
        **input_identity(address),
        "width": grid.width,
        "height": grid.height,
        "bands": list(bands) if bands else None,
        "model": model,
        "tile": grid.tile,
        "overlap": grid.overlap,
        "block": grid.block,
        "batch_size": options.batch_size,
        "blend": options.blend,
        "tta": options.tta,
        "probabilities": bool(options.probabilities or options.confidence),
        "cog": bool(options.cog),
        "creation_options": dict(sorted((options.creation_options or {}).items())),
        **({"adapt_priors": input_identity(options.adapt_priors)} if options.adapt_priors else {}),
        "device": str(getattr(predictor.device, "type", predictor.device)),
        "amp": bool(predictor.amp),
        # oneDNN's results can depend on the thread count: keep it for a byte-identical result
        "cpu_threads": torch.get_num_threads() if str(predictor.device).startswith("cpu") else None,
        "geopsp": __version__,
        "torch": torch.__version__,
    }
    return json.loads(json.dumps(fp))  # as it reads back


def mismatch(old: dict, new: dict) -> tuple[str, str]:
    """The first key on which two fingerprints differ (``"key = old, this run has new"``), and
    the start of a hint when an option can restore the old value."""
    keys = sorted(set(old) | set(new))
    k = ([k for k in keys if old.get(k) != new.get(k)] or ["format"])[0]
    same = ""
    if k == "cpu_threads":
        same = f"use --threads {old.get(k)} as before, or "
    elif k == "amp":  # e.g. a CPU run begun in float32 and resumed where bfloat16 is the default
        same = f"use {'--amp' if old.get(k) else '--no-amp'} as before, or "
    return f"{k} = {old.get(k)!r}, this run has {new.get(k)!r}", same


def recorded(path: str | os.PathLike) -> dict | None:
    """The fingerprint an output records (None: none, or not a readable raster)."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            text = src.tags().get(TAG)
        return json.loads(text) if text else None
    except (rasterio.errors.RasterioError, ValueError):
        return None


def finished(outputs: dict[str, str], fingerprint: dict) -> bool:
    """Whether ``--resume`` may skip an output set because an earlier run completed it.

    Parameters
    ----------
    outputs : dict
        ``{option: path}`` of every requested output (``OUTPUT``, ``--probabilities``, ...).
    fingerprint : dict
        This run's fingerprint.

    Returns
    -------
    bool
        False when the class raster does not exist (classify it); True when every output
        exists and records ``fingerprint``.

    Raises
    ------
    OutputError
        The class raster exists but was made by another model or options, or a requested
        companion is missing: skipping would leave outputs that do not belong together.
    """
    main = next(iter(outputs.values()))
    if not Path(main).exists():
        return False
    again = "use --overwrite to classify it again"
    for option, path in outputs.items():
        if not Path(path).exists():
            raise OutputError(f"{main} exists but its {option} output {path} does not; {again}")
    for path in outputs.values():
        old = recorded(path)
        if old is None:
            raise OutputError(f"{path} exists but records no geopsp classification; {again}")
        if old != fingerprint:
            diff, hint = mismatch(old, fingerprint)
            raise OutputError(f"{path} exists but was made with {diff}; {hint}{again}")
    return True
