"""ArcGIS Pro Classified_Tiles folders for tests: the real metadata files ArcGIS Pro wrote
(tests/chips/data/arcgis, see its PROVENANCE.md) with chips cut from the Everest sample the way
Pro writes them."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geopsp.chips import arcgis

REAL = Path(__file__).parent / "data" / "arcgis" / "classified_tiles"
REAL_FILES = ("esri_model_definition.emd", "esri_accumulated_stats.json", "map.txt", "stats.txt")
# Pro's chip formats: (GDAL driver, image extension, world-file extension, label extension).
FORMATS = {
    "tif": ("GTiff", "tif", "tfw", "tif"),
    "png": ("PNG", "png", "pgw", "png"),
    "jpg": ("JPEG", "jpg", "jgw", "png"),  # JPEG is lossy: label chips stay lossless
    "mrf": ("MRF", "mrf", None, "mrf"),
}
SIZE = 64


def real_names() -> list[str]:
    return [a.split("/")[-1] for a, _ in arcgis.read_map(REAL / "map.txt")]


def world_file(path: Path, tr) -> None:
    """A world file as ArcGIS writes one: pixel sizes, rotations, then the upper-left pixel's
    centre."""
    c, f = tr.c + tr.a / 2 + tr.b / 2, tr.f + tr.d / 2 + tr.e / 2
    path.write_text("\n".join(repr(v) for v in (tr.a, tr.d, tr.b, tr.e, c, f)) + "\n")


def write_chip(path: Path, arr: np.ndarray, driver: str, tr, world: str | None) -> None:
    """Write a chip the way Pro does: georeferencing in a world file beside it (or none)."""
    prof = dict(driver=driver, count=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                dtype=arr.dtype.name)  # fmt: skip
    if driver == "MRF":  # MRF keeps its georeferencing in its own header
        prof.update(transform=tr, crs="EPSG:32645")
    with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(arr)
    if world:
        world_file(path.with_suffix("." + world), tr)


def pro_folder(out: Path, everest, fmt: str = "tif", world: bool = True, names=None) -> Path:
    """Chips cut from the Everest sample as ArcGIS Pro writes them, with the real metadata
    files of a Pro export (map.txt rewritten for the format when it is not TIFF).

    Labels use the real export's classes: 1 (snow-free ground) and 2 (glacier), and 0
    (NoData) in a strip at the top of every chip.
    """
    import geopandas as gpd
    from rasterio.features import rasterize

    driver, ext, wext, lext = FORMATS[fmt]
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for f in REAL_FILES:
        shutil.copy(REAL / f, out / f)
    names = names or real_names()
    with rasterio.open(everest["image"]) as src:
        shapes = gpd.read_file(everest["labels"]).to_crs(src.crs).geometry
        for k, name in enumerate(names):
            win = chip_window(k)
            tr = window_transform(win, src.transform)
            img = src.read(window=win)
            lab = rasterize(((g, 2) for g in shapes), out_shape=(SIZE, SIZE), transform=tr)
            lab = np.where(lab == 0, 1, lab).astype(np.uint8)
            lab[:4] = 0
            stem = name.rsplit(".", 1)[0]
            write_chip(out / "images" / f"{stem}.{ext}", img, driver, tr, wext if world else None)
            write_chip(out / "labels" / f"{stem}.{lext}", lab[None], "PNG" if lext == "png" else driver,
                   tr, (wext if lext == ext else "pgw") if world else None)  # fmt: skip
    if names != real_names() or fmt != "tif":  # Pro's map.txt bytes for these chips
        lines = [f"images\\{n[:-4]}.{ext}  labels\\{n[:-4]}.{lext} \r\n" for n in names]
        (out / "map.txt").write_bytes("".join(lines).encode())
    return out


def chip_window(k: int) -> Window:
    """The Everest window of the ``k``-th chip of :func:`pro_folder`."""
    return Window(200 + (k % 6) * SIZE, 100 + (k // 6) * SIZE, SIZE, SIZE)
