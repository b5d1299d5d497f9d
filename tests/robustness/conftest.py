"""Fixtures for the robustness suite: hostile rasters, vectors and model files made in tmp_path.

Everything is small (64 x 64 pixels, a tiny untrained model) so the whole matrix runs in
seconds; the interesting part is the shape of each file, not its size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

SIZE = 64
CRS = "EPSG:32631"
X0, Y0, RES = 500000.0, 4000640.0, 10.0
CLASSES = [
    {"value": 0, "name": "background", "color": [0, 0, 0]},
    {"value": 1, "name": "water", "color": [0, 0, 255]},
    {"value": 2, "name": "forest", "color": [0, 160, 0]},
]


def transform():
    from rasterio.transform import from_origin

    return from_origin(X0, Y0, RES, RES)


def image_array(bands: int = 3, dtype: str = "uint8", size: int = SIZE, seed: int = 0):
    """Band values that follow the label layout of :func:`label_boxes` (plus noise)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((size, size), dtype=np.float64)
    lab[8:24, 8:40] = 1
    lab[36:56, 20:52] = 2
    arr = np.stack([lab * (30 + 10 * b) + 50 + rng.normal(0, 5, lab.shape) for b in range(bands)])
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        arr = np.clip(arr, max(info.min, 0), info.max)
    return arr.astype(dtype)


def write_raster(path, arr=None, *, crs=CRS, tr=None, nodata=None, driver="GTiff", gcps=None,
                 mask=None, **kw) -> Path:  # fmt: skip
    """Write ``arr`` (bands, rows, cols) as a raster; ``mask`` (rows, cols bool) as an internal
    GDAL mask band; ``gcps`` instead of a geotransform."""
    import rasterio

    arr = image_array() if arr is None else arr
    prof = dict(driver=driver, count=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                dtype=arr.dtype.name, **kw)  # fmt: skip
    if gcps is not None:
        prof.update(gcps=gcps, crs=crs)
    else:
        if tr is not None or crs is not None:
            prof["transform"] = tr if tr is not None else transform()
        if crs is not None:
            prof["crs"] = crs
    if nodata is not None:
        prof["nodata"] = nodata
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as dst:
        dst.write(arr)
        if mask is not None:
            dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
    return Path(path)


def label_boxes():
    """(geometry, class value) pairs in CRS map units, matching :func:`image_array`."""
    from shapely.geometry import box

    def px(c0, r0, c1, r1):
        return box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)

    return [(px(8, 8, 40, 24), 1), (px(20, 36, 52, 56), 2)]


def write_vector(path, geoms, values=None, *, field="cls", crs=CRS, layer=None, driver=None):
    import geopandas as gpd

    data = {} if values is None else {field: values}
    gdf = gpd.GeoDataFrame(data, geometry=list(geoms), crs=crs)
    kw = {"layer": layer} if layer else {}
    if driver:
        kw["driver"] = driver
    gdf.to_file(path, **kw)
    return Path(path)


def tiny_model(path, bands: int = 3, classes=CLASSES, format_version: int | None = None):
    """An untrained resnet18 PSPNet model file (fast on CPU); ``format_version`` fakes a
    file from another geopsp by rewriting the metadata header in place."""
    from model_files import write_model_file

    write_model_file(path, classes, bands=bands, chip_size=32, resolution=(RES, RES), crs=CRS)
    if format_version is not None:
        _rewrite_version(Path(path), format_version)
    return Path(path)


def _rewrite_version(path: Path, version: int) -> None:
    """Change ``format_version`` in the safetensors header (same length, so offsets hold)."""
    import struct

    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    md = json.loads(header["__metadata__"]["geopsp"])
    md["format_version"] = version
    header["__metadata__"]["geopsp"] = json.dumps(md)
    new = json.dumps(header).encode()
    new += b" " * (8 - len(new) % 8 if len(new) % 8 else 0)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Model files: ``ok`` (3 bands), ``bands4``, ``truncated``, ``newer``, ``empty``."""
    d = tmp_path_factory.mktemp("models")
    ok = tiny_model(d / "model.safetensors")
    out = {"ok": ok, "bands4": tiny_model(d / "bands4.safetensors", bands=4)}
    raw = ok.read_bytes()
    (d / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    out["truncated"] = d / "truncated.safetensors"
    out["newer"] = tiny_model(d / "newer.safetensors", format_version=99)
    (d / "empty.safetensors").write_bytes(b"")
    out["empty"] = d / "empty.safetensors"
    return out


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> dict[str, Path]:
    """A good 3-band uint8 image, its labels (GeoPackage, field ``cls``) and a prediction."""
    d = tmp_path_factory.mktemp("base")
    img = write_raster(d / "image.tif")
    geoms, values = zip(*label_boxes(), strict=True)
    labels = write_vector(d / "labels.gpkg", geoms, list(values))
    from rasterio.features import rasterize

    lab = rasterize(label_boxes(), out_shape=(SIZE, SIZE), transform=transform(), dtype="uint8")
    pred = write_raster(d / "pred.tif", lab[None], nodata=255)
    return {"dir": d, "image": img, "labels": labels, "pred": pred, "label_array": lab}


def invoke(*args) -> object:
    """Run the CLI in-process (``-q``: no progress bars) and return click's result."""
    from geopsp.cli.main import cli

    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def assert_clean_error(result, code: int, *words: str) -> None:
    """One ``Error: ...`` line, the exit code, the words, no traceback."""
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    # Status lines (e.g. train's "training on cpu ...") may come first; the error is last.
    assert len(errors) == 1 and lines[-1] == errors[0], out
    for w in words:
        assert w.lower() in errors[0].lower(), out


def leftovers(folder: Path) -> list[str]:
    """Temporary files the atomic writers left behind (should always be none)."""
    return sorted(p.name for p in Path(folder).rglob("*") if ".geopsp-tmp-" in p.name)


def write_vrt(path, source) -> Path:
    """A VRT (GDAL's XML virtual raster) over all bands of ``source``, written by hand."""
    import rasterio

    with rasterio.open(source) as src:
        gt = ", ".join(repr(v) for v in src.transform.to_gdal())
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{Path(source).resolve()}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
            for b in range(1, src.count + 1)
        )
        xml = (
            f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">'
            f"<SRS>{src.crs.to_wkt()}</SRS><GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>"
        )
    Path(path).write_text(xml)
    return Path(path)


@pytest.fixture(autouse=True)
def _restore_geopsp_logger():
    """The CLI installs its own handler on the ``geopsp`` logger and stops propagation; put the
    logger back so later tests that use ``caplog`` still see geopsp's warnings."""
    import logging

    log = logging.getLogger("geopsp")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved
