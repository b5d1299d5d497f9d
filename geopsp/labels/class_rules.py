"""Class rules: turn the values of a label field (or a label raster) into a class table.

The rules, in order:

* ``classes`` given (``--classes`` or a model's table): string values map to classes by name
  (case-insensitive), integer values by value; any value not in the table is an error that
  lists the unknown values.
* integer field: the values are the class values. If any value lies outside 1..254 (0 is
  reserved for background, 255 for ignore) all values are renumbered 1..N in sorted order, with
  a warning; the class names keep the original values.
* string field: values 1..N in sorted order, named after the strings.
* no field: one class, value 1, named after the layer.

With ``--unlabeled background`` the table also holds value 0, "background".
"""

from __future__ import annotations

import logging

import numpy as np

from geopsp.core.classes import MAX_CLASSES, ClassInfo, default_color, validate
from geopsp.core.errors import InputError, UsageError

log = logging.getLogger(__name__)

UNLABELED_CHOICES = ("background", "ignore")


def check_unlabeled(unlabeled: str) -> str:
    """Validate ``--unlabeled`` (``background`` or ``ignore``)."""
    if unlabeled not in UNLABELED_CHOICES:
        raise UsageError(f"--unlabeled must be 'background' or 'ignore', got {unlabeled!r}")
    return unlabeled


def with_background(classes: list[ClassInfo], unlabeled: str) -> list[ClassInfo]:
    """Add class 0 "background" to the table when unlabeled pixels are background."""
    if unlabeled == "background" and all(c.value != 0 for c in classes):
        classes = [ClassInfo(0, "background", default_color(0)), *classes]
    return validate(classes)


def _too_many(n: int, what: str) -> None:
    if n > MAX_CLASSES:
        raise UsageError(
            f"{n} distinct {what} found; at most {MAX_CLASSES} classes are supported "
            "(values 0 and 255 are reserved); merge classes or pick another --class-field"
        )


def _as_int_values(values: np.ndarray) -> np.ndarray | None:
    """Integer view of a numeric column, or None when it holds non-integral numbers/strings."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            return values.astype(np.int64)
        return None
    try:  # object columns holding Python ints (e.g. GeoJSON)
        if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
            return np.asarray(values, dtype=np.int64)
    except TypeError:
        pass
    return None


def _map_to_given(
    values: np.ndarray, ints: np.ndarray | None, given: list[ClassInfo], field: str
) -> np.ndarray:
    by_value = {c.value: c.value for c in given}
    by_name = {c.name.strip().lower(): c.value for c in given}
    if ints is not None:
        out = [by_value.get(int(v)) for v in ints]
        labels = [int(v) for v in ints]
    else:
        out = [by_name.get(str(v).strip().lower()) for v in values]
        labels = [str(v) for v in values]
    unknown = sorted({lab for lab, o in zip(labels, out, strict=True) if o is None}, key=str)
    if unknown:
        shown = ", ".join(map(str, unknown[:20])) + (" ..." if len(unknown) > 20 else "")
        table = ", ".join(f"{c.value}={c.name}" for c in given)
        raise InputError(
            f"values of {field!r} not in the class table: {shown}; the table has {table}"
        )
    return np.asarray(out, dtype=np.uint8)


def classes_from_field(
    values: np.ndarray | None,
    *,
    count: int,
    field: str | None,
    given: list[ClassInfo] | None,
    unlabeled: str,
    default_name: str,
) -> tuple[list[ClassInfo], np.ndarray]:
    """Build the class table and the class value of each feature.

    Parameters
    ----------
    values : ndarray or None
        The class field of each feature (None when there is no field).
    count : int
        Number of features.
    field : str or None
        Field name, for messages.
    given : list of ClassInfo or None
        A fixed class table (``--classes``).
    unlabeled : str
        ``background`` adds value 0 to the table.
    default_name : str
        Name of the single class when there is no field.

    Returns
    -------
    (classes, feature_values)
        The table sorted by value and a uint8 array with one class value per feature.
    """
    if values is None:
        table = _single_class(given, default_name)
        value = next(c.value for c in table if c.value != 0)
        return with_background(table, unlabeled), np.full(count, value, dtype=np.uint8)
    ints = _as_int_values(values)
    if given is not None:
        mapped = _map_to_given(values, ints, given, field or "")
        return with_background(list(given), unlabeled), mapped
    table, mapped = _integer_classes(ints, field) if ints is not None else _named(values, field)
    return with_background(table, unlabeled), mapped


def _single_class(given: list[ClassInfo] | None, default_name: str) -> list[ClassInfo]:
    """The class table of features without a class field: one class."""
    if given is None:
        return [ClassInfo(1, default_name, default_color(1))]
    if len([c for c in given if c.value != 0]) == 1:
        return list(given)
    raise UsageError(
        "the class table has several classes but no --class-field says which feature "
        "is which; give --class-field"
    )


def _integer_classes(ints: np.ndarray, field: str | None) -> tuple[list[ClassInfo], np.ndarray]:
    """Integer field values as class values, renumbered 1..n when any is outside 1..255."""
    uniq = np.unique(ints)
    _too_many(len(uniq), f"values of {field!r}")
    if uniq.min() >= 1 and uniq.max() <= MAX_CLASSES:
        table = [ClassInfo(int(v), str(int(v)), default_color(int(v))) for v in uniq]
        return table, ints.astype(np.uint8)
    log.warning(
        "values of %r are outside 1..%d (0 = background, 255 = ignore); "
        "renumbering them 1..%d in sorted order (see classes.json)",
        field, MAX_CLASSES, len(uniq),
    )  # fmt: skip
    new = np.arange(1, len(uniq) + 1)
    table = [
        ClassInfo(int(n), str(int(o)), default_color(int(n)))
        for n, o in zip(new, uniq, strict=True)
    ]
    return table, new[np.searchsorted(uniq, ints)].astype(np.uint8)


def _named(values: np.ndarray, field: str | None) -> tuple[list[ClassInfo], np.ndarray]:
    """Text field values as class names, numbered 1..n in sorted order."""
    strings = np.asarray([str(v) for v in values], dtype=object)
    uniq = sorted(set(strings))
    _too_many(len(uniq), f"values of {field!r}")
    index = {s: i + 1 for i, s in enumerate(uniq)}
    table = [ClassInfo(i, s, default_color(i)) for s, i in index.items()]
    return table, np.array([index[s] for s in strings], dtype=np.uint8)


def classes_from_raster_values(
    present: np.ndarray, given: list[ClassInfo] | None, unlabeled: str, address: str
) -> list[ClassInfo]:
    """Class table of a label raster from the values it holds (nodata already excluded).

    Values 0 (background / unlabeled) and 255 (ignore) are never classes of their own.
    """
    vals = [int(v) for v in np.unique(present) if v not in (0, 255)]
    bad = [v for v in vals if not 1 <= v <= MAX_CLASSES]
    if bad:
        raise InputError(
            f"{address}: label raster values must be class values 0..{MAX_CLASSES} "
            f"(255 = ignore); found {bad[:10]}"
        )
    if given is not None:
        known = {c.value for c in given}
        unknown = [v for v in vals if v not in known]
        if unknown:
            table = ", ".join(f"{c.value}={c.name}" for c in given)
            raise InputError(f"{address}: values {unknown} are not in the class table ({table})")
        return with_background(list(given), unlabeled)
    if not vals:
        raise InputError(f"{address}: the label raster holds no class values (only 0/255/nodata)")
    _too_many(len(vals), f"values in {address}")
    return with_background([ClassInfo(v, str(v), default_color(v)) for v in vals], unlabeled)
