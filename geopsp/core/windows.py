"""The window grid of chip export (pure Python, no I/O).

Windows step by ``stride`` from the top-left corner; the last row and column are pulled
inside the raster so the grid covers every pixel. A raster narrower (or shorter) than a chip
gets one window at offset 0 that runs past its edge; that part is padding.
"""

from __future__ import annotations


def offsets(size: int, chip: int, stride: int) -> list[int]:
    """Window offsets along one axis of ``size`` pixels.

    >>> offsets(10, 4, 4)
    [0, 4, 6]
    >>> offsets(3, 4, 2)
    [0]
    """
    if size <= chip:
        return [0]
    out = list(range(0, size - chip + 1, stride))
    if out[-1] != size - chip:
        out.append(size - chip)  # pulled inside so the last pixels are covered
    return out


def window_grid(width: int, height: int, chip: int, stride: int) -> list[tuple[int, int]]:
    """All ``(col_off, row_off)`` of chip windows over a raster, row by row."""
    cols = offsets(width, chip, stride)
    return [(c, r) for r in offsets(height, chip, stride) for c in cols]
