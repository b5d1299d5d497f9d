"""Reading ArcGIS Pro's "Classified_Tiles" folders (see :mod:`geopsp.chips.arcgis`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from geopsp.core.classes import IGNORE, MAX_CLASSES, ClassInfo, default_color, validate
from geopsp.core.errors import InputError

log = logging.getLogger(__name__)

EMD = "esri_model_definition.emd"
ACC_STATS = "esri_accumulated_stats.json"
MAP = "map.txt"
STATS_TXT = "stats.txt"
METADATA_MODE = "Classified_Tiles"
# What unlisted label value 0 (ArcGIS NoData) means when training on an ArcGIS folder.
NODATA_CHOICES = ("background", "ignore")
IGNORE_NAME = "ignore"


def read_json(path: Path) -> dict:
    """A JSON object from ``path`` (UTF-8, BOM allowed), or one clear :class:`InputError`."""
    try:
        obj = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); export the chips again") from exc
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _int_or_none(value) -> int | None:
    """An integer setting, or None for ArcGIS's template strings ("e.g. 256") and junk."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def extract_bands(emd: dict) -> list[int] | None:
    """``ExtractBands`` as 0-based band indexes, or None when absent or a template string."""
    raw = emd.get("ExtractBands")
    if not isinstance(raw, list) or not raw:
        return None
    bands = [_int_or_none(b) for b in raw]
    if any(b is None or b < 0 for b in bands):
        log.warning("ExtractBands %r is not a list of band indexes; using every chip band", raw)
        return None
    return bands  # type: ignore[return-value]


def source_bands(emd_bands: list[int] | None, chip_bands: int, path: Path) -> list[int]:
    """1-based source band numbers of the chips: ``ExtractBands`` is 0-based, always."""
    if emd_bands is None:
        return list(range(1, chip_bands + 1))
    if len(emd_bands) != chip_bands:
        raise InputError(
            f"{path}: ExtractBands lists {len(emd_bands)} band(s) but the chips have "
            f"{chip_bands}; fix ExtractBands or remove it"
        )
    return [b + 1 for b in emd_bands]


def _color(raw, value: int) -> tuple[int, int, int]:
    """The class colour, or a palette colour for ArcGIS's "no colour" ``[-1, -1, -1]``."""
    if isinstance(raw, list | tuple) and len(raw) >= 3:
        rgb = [_int_or_none(c) for c in raw[:3]]
        if all(c is not None and 0 <= c <= 255 for c in rgb):
            return tuple(rgb)  # type: ignore[return-value]
    return default_color(value)


def emd_classes(emd: dict, path: Path, nodata: str = "background") -> list[ClassInfo]:
    """The class table of an ArcGIS ``.emd``.

    Parameters
    ----------
    emd : dict
        The parsed ``.emd``. Entries are ``{Value, Name, Color}`` (or ``ClassValue`` /
        ``ClassName``, as in ``esri_accumulated_stats.json``).
    path : Path
        The file, for error messages.
    nodata : {"background", "ignore"}
        What label value 0 (ArcGIS NoData) means when the ``.emd`` does not list it: a
        ``background`` class that is trained, or pixels left out of training (``ignore``).
        A listed class 255 is geopsp's "ignore" and never a class.
    """
    items = emd.get("Classes")
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: the model definition lists no Classes")
    out = []
    for it in items:
        if not isinstance(it, dict):
            raise InputError(f"{path}: a Classes entry is not an object: {it!r}")
        value = _int_or_none(it.get("Value", it.get("ClassValue")))
        if value == IGNORE:
            continue
        if value is None or not 0 <= value <= MAX_CLASSES:
            raise InputError(
                f"{path}: class value {it.get('Value', it.get('ClassValue'))!r} is not an "
                f"integer 0..{MAX_CLASSES} (255 means ignore)"
            )
        name = str(it.get("Name", it.get("ClassName")) or f"class {value}")
        out.append(ClassInfo(value, name, _color(it.get("Color"), value)))
    if nodata == "background" and all(c.value != 0 for c in out):
        out.append(ClassInfo(0, "background", default_color(0)))
    try:
        return validate(out)
    except InputError as exc:  # e.g. a value listed twice: name the file
        raise InputError(f"{path}: {exc}") from exc


def read_map(path: Path) -> list[tuple[str, str]]:
    """The ``(image, label)`` pairs of a ``map.txt``, as paths relative to its folder.

    Any line ending, runs of spaces or tabs, trailing spaces and ``\\`` separators are
    accepted; a pair listed twice is kept once.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc})") from exc
    pairs: dict[tuple[str, str], None] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.replace("\\", "/").split()
        if not parts:
            continue
        if len(parts) != 2:
            raise InputError(f"{path} line {n}: expected 'image label', got {line.strip()!r}")
        pairs.setdefault((parts[0], parts[1]), None)
    if not pairs:
        raise InputError(f"{path}: lists no chips")
    return list(pairs)


@dataclass
class ArcgisFolder:
    """What the metadata files of a Classified_Tiles folder say (no pixel read)."""

    folder: Path
    emd_path: Path
    pairs: list[tuple[Path, Path]]
    classes: list[ClassInfo]
    extract_bands: list[int] | None  # 0-based, as written
    image_size: tuple[int | None, int | None]  # (height, width) from the .emd, if numbers


def read_folder(folder: Path, nodata: str = "background") -> ArcgisFolder:
    """Read a Classified_Tiles folder's ``map.txt``, ``.emd`` and metadata mode.

    Every listed chip must exist; anything unreadable raises one :class:`InputError` that
    names the file.
    """
    emds = sorted(folder.glob("*.emd"))
    if not emds:
        raise InputError(f"{folder}: map.txt found but no .emd model definition with the classes")
    emd_path = folder / EMD if (folder / EMD).is_file() else emds[0]
    emd = read_json(emd_path)
    if (folder / ACC_STATS).is_file():
        mode = read_json(folder / ACC_STATS).get("MetaDataMode", METADATA_MODE)
        if mode != METADATA_MODE:
            raise InputError(
                f"{folder / ACC_STATS}: metadata format {mode!r}; geopsp trains on "
                f"{METADATA_MODE} exports (pixel classification)"
            )
    classes = emd_classes(emd, emd_path, nodata)
    pairs = []
    for img, lab in read_map(folder / MAP):
        pair = (folder / img, folder / lab)
        for p in pair:
            if not p.is_file():
                raise InputError(f"{p}: listed in {folder / MAP} but missing")
        pairs.append(pair)
    size = (_int_or_none(emd.get("ImageHeight")), _int_or_none(emd.get("ImageWidth")))
    return ArcgisFolder(folder, emd_path, pairs, classes, extract_bands(emd), size)
