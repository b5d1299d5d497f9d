"""Shaping polygons after polygonization: fill holes, simplify a coverage, regularize outlines.

All three work in the output CRS, so tolerances and areas are in its linear units.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

# A regularized outline must keep this much of the original (intersection over union);
# below it the polygon was not building-like and its minimum rotated rectangle is used.
MIN_REGULAR_IOU = 0.5


def fill_holes(geoms: np.ndarray, max_area: float) -> np.ndarray:
    """Remove interior rings (holes) smaller than ``max_area`` from each polygon."""

    def fill(p: shapely.Polygon) -> shapely.Polygon:
        keep = [r for r in p.interiors if shapely.Polygon(r).area >= max_area]
        return p if len(keep) == len(p.interiors) else shapely.Polygon(p.exterior, keep)

    out = []
    for g in geoms:
        parts = [fill(p) for p in shapely.get_parts(g)]
        out.append(parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts))
    return np.array(out, dtype=object)


def inside_filled(original: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Which polygons lie in a hole that :func:`fill_holes` filled in another polygon.

    Dropping them keeps the layer free of overlaps: the filled polygon now covers them.
    """
    gained = shapely.difference(filled, original)
    gained = gained[~shapely.is_empty(gained)]
    drop = np.zeros(len(original), dtype=bool)
    if len(gained):
        points = shapely.point_on_surface(original)
        hit, _ = shapely.STRtree(gained).query(points, predicate="within")
        drop[hit] = True
    return drop


def simplify_coverage(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplify neighbouring polygons together so each shared edge is simplified once.

    Uses GEOS coverage simplification (Visvalingam-Whyatt; ``tolerance`` is roughly the
    square root of the largest triangle area removed), so neighbours keep common edges and
    no gap or overlap appears. The inputs must share vertices along common edges
    (:func:`geopsp.vectorize.run` densifies pixel outlines first).
    """
    if not len(geoms):
        return geoms
    return np.asarray(shapely.coverage_simplify(geoms, tolerance, simplify_boundary=True))


def dominant_angle(poly: shapely.Polygon) -> float:
    """The outline's main direction in radians, in [0, pi/2): length-weighted edge angles.

    Angles are folded modulo 90 degrees (a wall and the walls perpendicular to it agree) and
    averaged on the circle as ``4 * angle`` so 1 and 89 degrees average to 0, not 45.
    """
    xy = np.asarray(poly.exterior.coords)
    d = np.diff(xy, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    theta = np.arctan2(d[:, 1], d[:, 0])
    s, c = (length * np.sin(4 * theta)).sum(), (length * np.cos(4 * theta)).sum()
    angle = float(math.atan2(s, c) / 4) % (math.pi / 2)
    return 0.0 if math.isclose(angle, math.pi / 2) else angle  # -0.0 folds to pi/2


def _orthogonal_ring(coords: np.ndarray, tolerance: float) -> np.ndarray | None:
    """An axis-parallel ring fitted to ``coords`` (already rotated to the dominant direction).

    Edges of the Douglas-Peucker simplified ring are labelled horizontal or vertical; each
    run of same-label edges becomes one line at its length-weighted mean position; the
    vertices are the intersections of consecutive lines. None when fewer than 4 lines remain.
    """
    ring = shapely.simplify(shapely.LinearRing(coords), tolerance)
    xy = np.asarray(ring.coords)
    d = np.diff(xy, axis=0)
    if len(d) < 3:
        return None
    length = np.hypot(d[:, 0], d[:, 1])
    horiz = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    mid = (xy[:-1] + xy[1:]) / 2
    start = int(np.flatnonzero(horiz != np.roll(horiz, 1))[0]) if (horiz != horiz[0]).any() else 0
    order = np.roll(np.arange(len(d)), -start)
    lines: list[tuple[bool, float]] = []  # (horizontal, position)
    acc_w = acc_p = 0.0
    for k, i in enumerate(order):
        pos = mid[i, 1] if horiz[i] else mid[i, 0]
        acc_w, acc_p = acc_w + length[i], acc_p + length[i] * pos
        last = k == len(order) - 1 or horiz[order[k + 1]] != horiz[i]
        if last:
            lines.append((bool(horiz[i]), acc_p / max(acc_w, 1e-300)))
            acc_w = acc_p = 0.0
    if len(lines) < 4 or len(lines) % 2:
        return None
    pts = []
    for (h1, p1), (_, p2) in zip(lines, lines[1:] + lines[:1], strict=True):
        pts.append((p2, p1) if h1 else (p1, p2))  # (x, y) where the two lines cross
    pts.append(pts[0])
    return np.asarray(pts)


def regularize_polygon(poly: shapely.Polygon, tolerance: float) -> shapely.Polygon:
    """A building-like outline: right angles along the polygon's dominant direction.

    Parameters
    ----------
    poly : shapely.Polygon
    tolerance : float
        Douglas-Peucker tolerance (CRS units) removing pixel steps before the edges are
        snapped to the two directions.

    Returns
    -------
    shapely.Polygon
        The orthogonal outline, or the minimum rotated rectangle when the outline is
        invalid or keeps less than ``MIN_REGULAR_IOU`` of the polygon.
    """
    from shapely import affinity

    # Pixel outlines are all steps at 0 and 90 degrees: the direction comes from the
    # outline without its steps.
    angle = dominant_angle(shapely.simplify(poly, tolerance))
    origin = poly.centroid
    rot = affinity.rotate(poly, -angle, origin=origin, use_radians=True)
    shell = _orthogonal_ring(np.asarray(rot.exterior.coords), tolerance)
    out = None
    if shell is not None:
        holes = [_orthogonal_ring(np.asarray(r.coords), tolerance) for r in rot.interiors]
        cand = shapely.Polygon(shell, [h for h in holes if h is not None])
        if not cand.is_valid:
            cand = shapely.Polygon(shell)
        if cand.is_valid and cand.area > 0:
            iou = cand.intersection(rot).area / cand.union(rot).area
            out = cand if iou >= MIN_REGULAR_IOU else None
    if out is None:
        return poly.minimum_rotated_rectangle
    return affinity.rotate(out, angle, origin=origin, use_radians=True)


def regularize(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """:func:`regularize_polygon` on every part of every geometry."""
    out = []
    for g in geoms:
        parts = [regularize_polygon(p, tolerance) for p in shapely.get_parts(g)]
        out.append(parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts))
    return np.array(out, dtype=object)
