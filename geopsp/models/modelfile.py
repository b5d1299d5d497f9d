"""The self-describing model file: safetensors weights + JSON metadata, never pickle.

Layout: a standard safetensors file whose header ``__metadata__`` holds ``geopsp`` (the JSON
metadata: architecture, bands, normalization, classes, ...) and ``geopsp_sha256`` (a checksum of
the tensor bytes, so flipped bits are refused instead of silently giving a different model).
The header is parsed here without torch, so ``geopsp info`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geopsp.core.errors import ModelFileError

FORMAT_VERSION = 1
METADATA_KEY = "geopsp"
CHECKSUM_KEY = "geopsp_sha256"
METADATA_KEYS = (
    "format_version",
    "geopsp_version",
    "architecture",
    "bands",
    "normalization",
    "classes",
    "chip_size",
    "resolution",
    "crs",
    "metrics",
    "train_config",
)
ARCH_KEYS = (
    "backbone",
    "in_channels",
    "num_classes",
    "output_stride",
    "pyramid_sizes",
    "decoder",
    "pointrend",
)
_MAX_HEADER = 100 * 1024 * 1024
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def read_header(path: str | os.PathLike) -> tuple[dict, dict[str, str], int]:
    """Parse the safetensors header of ``path`` without torch.

    Returns
    -------
    (dict, dict, int)
        Tensor entries ``{name: {dtype, shape, data_offsets}}``, the ``__metadata__`` strings,
        and the byte offset where tensor data starts.

    Raises
    ------
    ModelFileError
        Missing file, not safetensors, or truncated.
    """
    p = Path(path)
    if p.is_dir():  # e.g. the training output folder instead of the model file inside it
        hint = (
            " (use the model.safetensors inside it)" if (p / "model.safetensors").is_file() else ""
        )
        raise ModelFileError(f"{p} is a folder, not a model file{hint}")
    if not p.is_file():
        raise ModelFileError(f"model file {p} does not exist")
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n <= min(_MAX_HEADER, size - 8):
                raise ValueError("bad header length")
            header = json.loads(f.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{p} is not a geopsp model file (not a safetensors file: {exc})"
        ) from exc
    meta = header.pop("__metadata__", None) or {}
    try:
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"{p} is corrupt (bad tensor table in the header)") from exc
    if 8 + n + end != size:
        raise ModelFileError(
            f"{p} is corrupt or truncated ({size} bytes, the header describes {8 + n + end})"
        )
    return header, meta, 8 + n


def _parse_metadata(path: Path, meta: dict[str, str]) -> dict:
    if METADATA_KEY not in meta:
        raise ModelFileError(f"{path} is not a geopsp model (safetensors without geopsp metadata)")
    try:
        md = json.loads(meta[METADATA_KEY])
    except ValueError as exc:
        raise ModelFileError(f"{path} is corrupt: its geopsp metadata is not valid JSON") from exc
    if not isinstance(md, dict):
        raise ModelFileError(f"{path} is corrupt: its geopsp metadata is not a JSON object")
    version = md.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} has an unknown model format version {version!r}")
    if version > FORMAT_VERSION:
        from geopsp import __version__

        raise ModelFileError(
            f"{path} was made by a newer geopsp (model format {version}, this geopsp "
            f"{__version__} reads up to {FORMAT_VERSION}); upgrade geopsp"
        )
    missing = [k for k in METADATA_KEYS if k not in md]
    arch = md.get("architecture")
    if not isinstance(arch, dict):
        missing.append("architecture")
    else:
        missing += [f"architecture.{k}" for k in ARCH_KEYS if k not in arch]
    if missing:
        raise ModelFileError(f"{path} is incomplete: metadata lacks {', '.join(missing)}")
    return md


def read_metadata(path: str | os.PathLike) -> dict:
    """Read and validate the metadata of a model file (no torch needed).

    Parameters
    ----------
    path : path-like
        A ``.safetensors`` model file written by :func:`save_model`.

    Returns
    -------
    dict
        The metadata (keys in ``METADATA_KEYS``).

    Raises
    ------
    ModelFileError
        Missing, corrupt, foreign or newer-format file.
    """
    _, meta, _ = read_header(path)
    return _parse_metadata(Path(path), meta)


def parameter_count(path: str | os.PathLike) -> int:
    """Number of learned parameters stored in a model file (BatchNorm statistics excluded)."""
    tensors, _, _ = read_header(path)
    total = 0
    for name, info in tensors.items():
        if name.endswith(_BUFFER_SUFFIXES):
            continue
        count = 1
        for d in info.get("shape", []):
            count *= int(d)
        total += count
    return total


def _sha256(path: Path, start: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def save_model(path: str | os.PathLike, model: Any, metadata: dict, overwrite: bool = True) -> None:
    """Write ``model``'s weights and ``metadata`` to one safetensors file, atomically.

    Parameters
    ----------
    path : path-like
        Output file (``.safetensors``).
    model : torch.nn.Module or mapping of tensors
        A model from :func:`geopsp.models.build_model` (its ``arch`` fills a missing
        ``architecture``), or its state dict (e.g. a kept copy of an earlier epoch's weights).
    metadata : dict
        JSON-serialisable metadata (``METADATA_KEYS``); ``format_version`` and
        ``geopsp_version`` are filled in, absent optional keys become ``None``.
    overwrite : bool
        Replace an existing file.
    """
    from safetensors.torch import save

    from geopsp import __version__
    from geopsp.core.atomic import atomic_path, disk_error

    # Save the bare network of a DDP- or torch.compile-wrapped model, without key prefixes.
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    tensors = model if isinstance(model, Mapping) else model.state_dict()
    md = {k: None for k in METADATA_KEYS}
    md.update(metadata)
    if md.get("architecture") is None and hasattr(model, "arch"):
        md["architecture"] = model.arch
    md["format_version"] = FORMAT_VERSION
    md["geopsp_version"] = __version__
    try:
        text = json.dumps(md, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"model metadata is not JSON-serialisable: {exc}") from exc
    # Contiguous clones: safetensors refuses shared or strided storage (channels_last models).
    state = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    blob = save(state, metadata={METADATA_KEY: text})
    # The checksum covers the tensor bytes, which do not depend on the header; rewrite the
    # header with it (8-byte aligned, space-padded as the format requires).
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"][CHECKSUM_KEY] = hashlib.sha256(blob[8 + n :]).hexdigest()
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(struct.pack("<Q", len(raw)))
                f.write(raw)
                f.write(memoryview(blob)[8 + n :])
        except OSError as exc:
            raise disk_error(exc, Path(path)) from exc


def read_weights(path: str | os.PathLike) -> tuple[dict, dict]:
    """The tensors (on the CPU) and metadata of a model file, after every check.

    Used by :func:`load_model` and by ``train --init``, so a truncated, foreign, corrupt or
    newer-format file gets the same one-line :class:`ModelFileError` everywhere.

    Returns
    -------
    (dict, dict)
        ``{name: torch.Tensor}`` and the metadata.
    """
    from safetensors.torch import load_file

    p = Path(path)
    _, meta, start = read_header(p)
    md = _parse_metadata(p, meta)
    if CHECKSUM_KEY in meta and _sha256(p, start) != meta[CHECKSUM_KEY]:
        raise ModelFileError(f"{p} is corrupt: its weights do not match their checksum")
    try:
        state = load_file(str(p), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        msg = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{p} is corrupt: cannot read its weights ({msg[:200]})") from exc
    return state, md


def load_model(path: str | os.PathLike, device: Any = "cpu") -> tuple[Any, dict]:
    """Rebuild the model stored in ``path``.

    Parameters
    ----------
    path : path-like
        A model file written by :func:`save_model`.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    (torch.nn.Module, dict)
        The model in eval mode and its metadata.

    Raises
    ------
    ModelFileError
        Missing, corrupt, foreign, newer-format, or weights not matching the architecture.
    """
    from geopsp.core.errors import UsageError
    from geopsp.models import build_model

    p = Path(path)
    state, md = read_weights(p)
    try:
        model = build_model(md["architecture"], encoder_weights=None)
    except UsageError as exc:
        raise ModelFileError(
            f"{p} describes an architecture this geopsp cannot build: {exc}"
        ) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = " ".join(s.strip() for s in first[1:3]) if len(first) > 1 else first[0]
        raise ModelFileError(
            f"{p}: weights do not match the architecture in its metadata ({detail[:200]})"
        ) from exc
    model.to(device)
    model.eval()
    return model, md
