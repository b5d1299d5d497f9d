"""The one window grid of geopsp (pure Python, no I/O): chips, classify tiles, evaluate blocks.

Windows of ``size`` pixels start at most ``stride`` pixels apart along each axis, from the
top-left corner, so ``ceil((length - size) / stride) + 1`` windows cover an axis. What happens
at the far edge is the ``edge`` rule:

``"pull"`` (export-chips)
    Starts are multiples of ``stride``; the last is pulled inside so it ends on the edge.
``"spread"`` (classify tiles)
    The same number of windows, spread evenly between 0 and ``length - size``, so
    neighbours overlap by at least ``size - stride`` pixels and the last ends on the edge.
``"clip"`` (evaluate blocks)
    Starts are multiples of ``stride``; the last window runs past the edge (callers clip it).

An axis no longer than one window gets one window at 0 that runs past its edge (padding).
"""

from __future__ import annotations

EDGES = ("pull", "spread", "clip")


def offsets(length: int, size: int, stride: int, edge: str = "pull") -> list[int]:
    """Window starts along one axis of ``length`` pixels (see the module docstring).

    >>> offsets(10, 4, 4)
    [0, 4, 6]
    >>> offsets(11, 4, 3, "spread")
    [0, 2, 4, 7]
    >>> offsets(10, 4, 4, "clip")
    [0, 4, 8]
    >>> offsets(3, 4, 2)
    [0]
    """
    if length < 1 or size < 1 or stride < 1:
        raise ValueError(f"length, size and stride must be >= 1, got {length}, {size}, {stride}")
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    if length <= size:
        return [0]
    span = length - size
    n = -(-span // stride) + 1  # ceil(span / stride) + 1 windows
    if edge == "spread":
        return [(i * span) // (n - 1) for i in range(n)]
    last = span if edge == "pull" else (n - 1) * stride
    return [min(i * stride, last) for i in range(n)]


def window_grid(
    width: int, height: int, size: int, stride: int, edge: str = "pull"
) -> list[tuple[int, int]]:
    """All ``(col_off, row_off)`` of windows over a raster, row by row."""
    cols = offsets(width, size, stride, edge)
    return [(c, r) for r in offsets(height, size, stride, edge) for c in cols]
