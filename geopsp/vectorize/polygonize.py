"""Block-wise polygonization of a class raster whose result equals polygonizing it at once.

Each block is polygonized with ``rasterio.features.shapes`` in *pixel* coordinates (integers,
so every operation below is exact). A piece that reaches an inner block border stays open
until every block it can touch has been read; pieces of the same class that share a border
segment (4-connectivity) or at least a point (8-connectivity: pixels meeting at a corner)
belong to the same connected component and are unioned into one feature. Features wholly
inside a block are emitted at once, so memory holds one block and the pieces along the open
borders, whatever the raster size.

Geometries come out in a canonical form: valid (where GDAL writes an 8-connected corner
contact as a self-touching ring, the same area comes out as a MultiPolygon), without
collinear vertices and normalized (``shapely.normalize``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import shapely

# DE-9IM: the boundaries share a segment (dimension 1), i.e. 4-connected pixels on each side.
_SHARE_EDGE = "****1****"


@dataclass
class Feature:
    """One connected region of one class, in pixel coordinates (x: column, y: row)."""

    geometry: shapely.Geometry
    value: int
    conf_sum: float = 0.0
    conf_count: int = 0

    @property
    def confidence(self) -> float | None:
        return self.conf_sum / self.conf_count if self.conf_count else None


@dataclass
class Block:
    """One block of the raster: its class values, validity and optional confidence."""

    col: int
    row: int
    values: np.ndarray
    valid: np.ndarray
    confidence: np.ndarray | None = None
    conf_valid: np.ndarray | None = None


def pixel_to_map(geoms: np.ndarray, transform) -> np.ndarray:
    """Pixel-space geometries (x: column, y: row) in the raster's CRS.

    The same arithmetic as GDAL's polygonizer (``gt0 + col * gt1 + row * gt2``), so the
    coordinates are those of polygonizing with the transform.
    """
    t = transform

    def affine(xy: np.ndarray) -> np.ndarray:
        x = t.c + xy[:, 0] * t.a + xy[:, 1] * t.b
        y = t.f + xy[:, 0] * t.d + xy[:, 1] * t.e
        return np.column_stack([x, y])

    return shapely.transform(geoms, affine)


def block_grid(width: int, height: int, size: int) -> list[tuple[int, int, int, int]]:
    """``(col, row, width, height)`` of the square blocks covering a raster, row by row."""
    return [
        (c, r, min(size, width - c), min(size, height - r))
        for r in range(0, height, size)
        for c in range(0, width, size)
    ]


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """A closed ring without its collinear (and repeated) vertices; exact on integer coords."""
    c = ring[:-1]
    prev, nxt = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
    cross = (c[:, 0] - prev[:, 0]) * (nxt[:, 1] - c[:, 1]) - (c[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - c[:, 0]
    )
    c = c[cross != 0]
    return np.vstack([c, c[:1]])


def _clean_polygon(p: shapely.Polygon) -> shapely.Polygon:
    shell = _drop_collinear(np.asarray(p.exterior.coords))
    holes = [_drop_collinear(np.asarray(r.coords)) for r in p.interiors]
    return shapely.Polygon(shell, holes)


def canonical(geom: shapely.Geometry) -> shapely.Geometry:
    """Valid, collinear-free, normalized form of a polygonal pixel-space geometry."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, shapely.Polygon) and g.area > 0]
    parts = [_clean_polygon(p) for p in parts]
    out = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return shapely.normalize(out)


class _Pieces:
    """Open pieces, their union-find groups, and when each group can no longer grow."""

    def __init__(self) -> None:
        self.geom: dict[int, shapely.Geometry] = {}
        self.value: dict[int, int] = {}
        self.conf: dict[int, tuple[float, int]] = {}
        self.parent: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}  # root -> piece ids
        self.needs: dict[int, int] = {}  # root -> last block index that can still touch it
        self.by_block: dict[int, list[int]] = {}
        self.next_id = 0

    def add(self, block: int, geom, value: int, conf: tuple[float, int], needs: int) -> int:
        i = self.next_id
        self.next_id += 1
        self.geom[i], self.value[i], self.conf[i] = geom, value, conf
        self.parent[i], self.members[i], self.needs[i] = i, [i], needs
        self.by_block.setdefault(block, []).append(i)
        return i

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        self.needs[ra] = max(self.needs[ra], self.needs.pop(rb))

    def pop_group(self, root: int) -> Feature:
        ids = self.members.pop(root)
        del self.needs[root]
        geoms = [self.geom.pop(i) for i in ids]
        conf = [self.conf.pop(i) for i in ids]
        value = self.value[ids[0]]
        for i in ids:
            del self.value[i], self.parent[i]
        geom = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
        return Feature(canonical(geom), value, sum(c[0] for c in conf), sum(c[1] for c in conf))


def _piece_stats(block: Block, geoms: list, transform) -> list[tuple[float, int]]:
    """Sum and count of valid confidence pixels under each piece of a block."""
    if block.confidence is None:
        return [(0.0, 0)] * len(geoms)
    from rasterio.features import rasterize

    h, w = block.values.shape
    ids = rasterize(
        [(g, i + 1) for i, g in enumerate(geoms)], out_shape=(h, w), transform=transform,
        fill=0, dtype="int32",
    )  # fmt: skip
    ok = block.conf_valid & (ids > 0)
    sums = np.bincount(ids[ok], weights=block.confidence[ok], minlength=len(geoms) + 1)
    counts = np.bincount(ids[ok], minlength=len(geoms) + 1)
    return [(float(sums[i + 1]), int(counts[i + 1])) for i in range(len(geoms))]


class BlockPolygonizer:
    """Feed blocks in row-major order (:func:`block_grid`); collect finished features.

    Parameters
    ----------
    width, height, block_size : int
        Raster size and the edge of the blocks that will be fed.
    connectivity : {4, 8}
        Pixel connectivity, as in ``rasterio.features.shapes``.
    """

    def __init__(self, width: int, height: int, block_size: int, connectivity: int = 4) -> None:
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.width, self.height, self.size = width, height, block_size
        self.ncols = -(-width // block_size)
        self.connectivity = connectivity
        self.pieces = _Pieces()

    def _needs(self, idx: int, bounds: np.ndarray, x1: int, y1: int) -> int:
        """The last block (in feeding order) that a piece with these bounds can touch."""
        right = bounds[2] == x1 and x1 < self.width
        down = bounds[3] == y1 and y1 < self.height
        needs = idx
        if right:
            needs = idx + 1
        if down:
            needs = idx + self.ncols
            if right and self.connectivity == 8:
                needs += 1  # the block diagonally below-right meets it at one corner
        return needs

    def _neighbour_ids(self, idx: int) -> list[int]:
        r, c = divmod(idx, self.ncols)
        blocks = []
        if c > 0:
            blocks.append(idx - 1)
        if r > 0:
            blocks.append(idx - self.ncols)
            if self.connectivity == 8:
                blocks += [idx - self.ncols - 1] if c > 0 else []
                blocks += [idx - self.ncols + 1] if c < self.ncols - 1 else []
        return [i for b in blocks for i in self.pieces.by_block.get(b, ()) if i in self.pieces.geom]

    def _connect(self, new_ids: list[int], old_ids: list[int]) -> None:
        """Union new pieces with the open pieces of earlier blocks they are connected to."""
        if not new_ids or not old_ids:
            return
        p = self.pieces
        old = np.array([p.geom[i] for i in old_ids], dtype=object)
        new = np.array([p.geom[i] for i in new_ids], dtype=object)
        ni, oi = shapely.STRtree(old).query(new, predicate="intersects")
        same = np.array(
            [p.value[new_ids[a]] == p.value[old_ids[b]] for a, b in zip(ni, oi, strict=True)]
        )
        if not len(ni) or not same.any():
            return
        ni, oi = ni[same], oi[same]
        if self.connectivity == 4:
            edge = shapely.relate_pattern(new[ni], old[oi], _SHARE_EDGE)
            ni, oi = ni[edge], oi[edge]
        for a, b in zip(ni, oi, strict=True):
            p.union(new_ids[a], old_ids[b])

    def feed(self, idx: int, block: Block) -> list[Feature]:
        """Polygonize block number ``idx`` and return the features that are now complete."""
        from affine import Affine
        from rasterio.features import shapes

        h, w = block.values.shape
        x0, y0, x1, y1 = block.col, block.row, block.col + w, block.row + h
        tr = Affine.translation(x0, y0)
        found = list(
            shapes(block.values, mask=block.valid, connectivity=self.connectivity, transform=tr)
        )
        geoms = [shapely.geometry.shape(g) for g, _ in found]
        stats = _piece_stats(block, geoms, tr)
        out: list[Feature] = []
        new_ids = []
        bounds = shapely.bounds(np.array(geoms, dtype=object)) if geoms else np.empty((0, 4))
        for g, (_, v), st, b in zip(geoms, found, stats, bounds, strict=True):
            needs = self._needs(idx, b, x1, y1)
            early = (b[0] == x0 and x0 > 0) or (b[1] == y0 and y0 > 0)
            if needs == idx and not early:
                out.append(Feature(canonical(g) if self.connectivity == 8 else shapely.normalize(g),
                                   int(v), *st))  # fmt: skip
                continue
            new_ids.append(self.pieces.add(idx, g, int(v), st, needs))
        self._connect(new_ids, self._neighbour_ids(idx))
        done = [r for r, n in self.pieces.needs.items() if n <= idx]
        out += [self.pieces.pop_group(r) for r in sorted(done)]
        for b in [b for b in self.pieces.by_block if b < idx - self.ncols - 1]:
            del self.pieces.by_block[b]
        return out

    @property
    def open_pieces(self) -> int:
        """Pieces held while waiting for their neighbours (the memory that stays)."""
        return len(self.pieces.geom)


def polygonize_blocks(
    width: int,
    height: int,
    block_size: int,
    read: Callable[[int, int, int, int], Block],
    connectivity: int = 4,
) -> Iterator[Feature]:
    """Yield the features of a raster read block by block through ``read(col, row, w, h)``."""
    poly = BlockPolygonizer(width, height, block_size, connectivity)
    for idx, (c, r, w, h) in enumerate(block_grid(width, height, block_size)):
        yield from poly.feed(idx, read(c, r, w, h))
    if poly.open_pieces:  # every group is closed by the last block; a leftover is a bug
        raise RuntimeError(f"{poly.open_pieces} polygon pieces were never completed")


def polygonize_array(
    values: np.ndarray,
    valid: np.ndarray | None = None,
    block_size: int = 1024,
    connectivity: int = 4,
) -> list[Feature]:
    """Polygonize an in-memory class array block by block (used by tests and small inputs)."""
    h, w = values.shape
    valid = np.ones(values.shape, dtype=bool) if valid is None else valid

    def read(c: int, r: int, bw: int, bh: int) -> Block:
        win = (slice(r, r + bh), slice(c, c + bw))
        return Block(c, r, values[win], valid[win])

    return list(polygonize_blocks(w, h, block_size, read, connectivity))
