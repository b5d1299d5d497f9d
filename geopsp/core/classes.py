"""The class table shared by every command: values, names and colors.

Values are what label chips and class rasters store (0..254; 255 is "ignore"/nodata).
A model predicts channel ``i`` for ``classes[i]``; :func:`value_lut` and
:func:`index_to_value` convert between the two.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from geopsp.core.errors import InputError, UsageError

IGNORE = 255
MAX_CLASSES = 254

# Distinct colors (tab20-like) for classes without a color; background is black.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip


@dataclass(frozen=True)
class ClassInfo:
    """One class: its raster value, a name and an RGB color."""

    value: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["color"] = list(self.color)
        return d


def default_color(value: int) -> tuple[int, int, int]:
    """A stable default color for a class value (black for background 0)."""
    if value == 0:
        return (0, 0, 0)
    return PALETTE[(value - 1) % len(PALETTE)]


def validate(classes: list[ClassInfo]) -> list[ClassInfo]:
    """Check values are unique integers in 0..254 and return the table sorted by value."""
    if not classes:
        raise InputError("the class table is empty")
    if len(classes) > MAX_CLASSES:
        raise UsageError(
            f"{len(classes)} classes found; at most {MAX_CLASSES} are supported (value 255 is reserved)"
        )
    values = [c.value for c in classes]
    if len(set(values)) != len(values):
        raise InputError(f"duplicate class values in the class table: {sorted(values)}")
    bad = [v for v in values if not 0 <= v <= MAX_CLASSES]
    if bad:
        raise InputError(f"class values must be 0..{MAX_CLASSES} (255 means ignore); got {bad}")
    return sorted(classes, key=lambda c: c.value)


def from_dicts(items: list[dict]) -> list[ClassInfo]:
    """Build a class table from ``[{"value", "name", "color"}]`` dicts (name/color optional)."""
    out = []
    for it in items:
        try:
            v = int(it["value"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"class entry without an integer 'value': {it!r}") from exc
        color = tuple(int(c) for c in it.get("color") or default_color(v))[:3]
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            color = default_color(v)  # e.g. ArcGIS's "no colour" [-1, -1, -1]
        out.append(ClassInfo(v, str(it.get("name") or f"class {v}"), color))  # type: ignore[arg-type]
    return validate(out)


def to_dicts(classes: list[ClassInfo]) -> list[dict]:
    return [c.to_dict() for c in classes]


def load_classes(path: str | os.PathLike) -> list[ClassInfo]:
    """Read a ``classes.json`` file (a JSON list of ``{value, name, color}``)."""
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(items, dict) and "classes" in items:
        items = items["classes"]
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a JSON list of {{value, name, color}} objects")
    return from_dicts(items)


def save_classes(path: str | os.PathLike, classes: list[ClassInfo]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_dicts(classes), f, indent=2)


def value_lut(classes: list[ClassInfo]) -> np.ndarray:
    """A 256-entry lookup table from label value to channel index (255 for unknown/ignore)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for i, c in enumerate(classes):
        lut[c.value] = i
    return lut


def index_to_value(classes: list[ClassInfo]) -> np.ndarray:
    """A lookup table from channel index to class value."""
    return np.array([c.value for c in classes], dtype=np.uint8)
