"""Reading the input of a classification: band selection, windows, nodata, normalization."""

from __future__ import annotations

import logging
import threading

import numpy as np

from geopsp.classify.predictor import Predictor
from geopsp.core.errors import UsageError

log = logging.getLogger(__name__)


def select_bands(
    src, address: str, predictor: Predictor, bands: list[int] | None, hint: bool = True
) -> list[int]:
    """The source bands to feed the model: ``-b`` if given, else the source bands the model
    was trained on; refuses a band count or band numbers that do not fit ``src`` (``hint``:
    the message ends with how to choose them with ``-b``)."""
    n = predictor.n_bands
    if bands is None:
        want = predictor.bands
        if want and len(want) == n:
            if max(want) <= src.count:
                return list(want)
            if src.count >= n:  # never guess: bands 1..n may be other bands entirely
                listed = ",".join(map(str, want))
                raise UsageError(
                    f"the model was trained on source bands {listed} but {address} has "
                    f"{src.count} band(s)"
                    + (f"; choose the matching {n} band(s) with -b/--bands" if hint else "")
                )
        elif src.count == n:  # a model that does not record its source bands
            return list(range(1, n + 1))
        raise UsageError(
            f"{address} has {src.count} band(s) but the model expects {n}"
            + (f"; choose {n} band(s) with -b/--bands" if hint else "")
        )
    from geopsp.core.sources import check_bands

    bands = check_bands(bands, src.count, address)
    if len(bands) != n:
        raise UsageError(f"-b/--bands selects {len(bands)} band(s) but the model expects {n}")
    return bands


def warn_grid(src, address: str, predictor: Predictor) -> None:
    """Log a warning for an input without CRS or far (> 2x) from the training resolution."""
    if src.crs is None:
        log.warning("%s has no CRS; the output will have none either", address)
    if predictor.resolution:
        ratio = abs(src.res[0]) / max(abs(predictor.resolution[0]), 1e-12)
        if ratio > 2 or ratio < 0.5:
            log.warning(
                "%s has %.3g-unit pixels but the model was trained on %.3g; results may be poor "
                "(resample the input to the training resolution)",
                address, src.res[0], predictor.resolution[0],
            )  # fmt: skip


class TileReader:
    """Read, pad and normalize tiles; one dataset handle per thread (GDAL handles are not
    thread-safe)."""

    def __init__(self, address: str, bands: list[int], predictor: Predictor, tile: int) -> None:
        from geopsp.core.sources import open_raster

        self.address, self.bands, self.tile = address, bands, tile
        self.mean, self.std = predictor.mean, predictor.std
        self._local = threading.local()
        self._open = open_raster
        self._handles: list = []
        with open_raster(address) as src:
            self.height, self.width = src.height, src.width
            flags = [src.mask_flag_enums[b - 1] for b in bands]
            nodata = src.nodata
        names = [{f.name for f in fl} for fl in flags]
        if all(n == {"all_valid"} for n in names):
            self.mode = "all"
        elif nodata is not None and all(n == {"nodata"} for n in names):
            self.mode, self.nodata = "nodata", nodata
        else:
            self.mode = "mask"

    def _src(self):
        src = getattr(self._local, "src", None)
        if src is None:
            src = self._local.src = self._open(self.address)
            self._handles.append(src)
        return src

    def __call__(self, tile) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        from geopsp.core.normalize import has_data, normalize
        from geopsp.core.sources import read_error

        t = self.tile
        h, w = min(t, self.height - tile.row), min(t, self.width - tile.col)
        win = Window(tile.col, tile.row, w, h)
        src = self._src()
        try:  # a truncated or corrupt file fails only here, at its first unreadable block
            data = src.read(self.bands, window=win)
            masks = src.read_masks(self.bands, window=win) if self.mode == "mask" else None
        except RasterioIOError as exc:
            raise read_error(self.address, exc, tile.col, tile.row) from None
        if self.mode == "nodata":  # the nodata masks, without reading them from GDAL
            masks = data != self.nodata
        valid = has_data(data, masks)
        x = np.zeros((len(self.bands), t, t), dtype=np.float32)
        x[:, :h, :w] = normalize(data, self.mean, self.std, valid)
        v = np.zeros((t, t), dtype=bool)
        v[:h, :w] = valid
        return x, v

    def close(self) -> None:
        for h in self._handles:
            h.close()
        self._handles.clear()
