"""Shared fixtures: paths of the real sample data shipped in sample_data/."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# metrics.csv columns measured on the wall clock: they differ between any two runs.
CLOCK_COLUMNS = ("seconds", "chips_per_s", "val_seconds", "elapsed")
SAMPLE = ROOT / "sample_data"

# Keep CPU tests predictable on small machines (2 cores in CI).
os.environ.setdefault("OMP_NUM_THREADS", "2")
# A shell that starts the suite in the background without job control (`cmd &` in a script)
# makes it ignore SIGINT, and ignored signals are inherited by every child process: the
# Ctrl-C tests would then test nothing. Restore Python's handler, which children reset to
# the default on exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE


# Sample data by fixture name: its folder under sample_data/ and its files by role.
SAMPLE_FILES = {
    "everest": ("everest_landsat7_glaciers", {
        "image": "LE71400412000304SGS00_RGB.tif", "labels": "15_rgi60_glacier_outlines.gpkg"}),
    "atlanta": ("spacenet4_atlanta_buildings", {
        "image": "sample_geotiff.tif", "labels": "geotiff_labels.geojson"}),
    "nc_landsat": ("nc_landsat7_landcover", {
        "image": "lsat7_2000_6band.tif", "labels": "landsat96_polygons.shp",
        "label_raster": "landclass_strata.tif",
        "labelled_pixels": "landsat96_labelled_pixels.tif"}),
    "rcr": ("rcr_sentinel2_landcover", {
        "image": "rcr_s2b_l1c_20181013_B01-B08_crop1000x600.tif", "labels": "rcr_landcover.shp"}),
    "vegas": ("spacenet3_vegas_roads", {
        "image": "road_mask_input.tif", "labels": "sample_roads_for_masking.geojson",
        "label_raster": "sample_road_raster_mask.tif"}),
}  # fmt: skip


def _sample_fixture(name: str):
    folder, files = SAMPLE_FILES[name]

    @pytest.fixture(scope="session", name=name)
    def paths() -> dict[str, Path]:
        """The sample's file paths by role (image, labels, ...)."""
        return {role: SAMPLE / folder / file for role, file in files.items()}

    return paths


# One session fixture per sample (``everest``, ``atlanta``, ...): its file paths by role.
for _name in SAMPLE_FILES:
    globals()[f"_{_name}_fixture"] = _sample_fixture(_name)


# --- Shared chips and model (session-scoped: built once, reused by train/classify/evaluate) ---

EVEREST_CHIP_SIZE = 64


@pytest.fixture(scope="session")
def everest_chips(everest, tmp_path_factory) -> Path:
    """A geopsp chip folder cut from the Everest sample: 64 px chips, no overlap, 20 % val."""
    from geopsp.chips.export import ExportOptions, export_chips

    out = tmp_path_factory.mktemp("everest") / "chips"
    export_chips(
        [str(everest["image"])],
        str(everest["labels"]),
        str(out),
        ExportOptions(
            chip_size=EVEREST_CHIP_SIZE, stride=EVEREST_CHIP_SIZE, val_fraction=0.2, seed=0
        ),
    )
    return out


# Small and fast on 2 CPU cores: resnet18 from scratch, output stride 16, 2 short epochs.
EVEREST_TRAIN = dict(
    backbone="resnet18",
    encoder_weights="none",
    output_stride=16,
    epochs=2,
    batch_size=8,
    lr=1e-3,
    augment="flips",
    patience=0,
    seed=0,
    device="cpu",
)


@pytest.fixture(scope="session")
def everest_model(everest_chips, tmp_path_factory) -> Path:
    """``model.safetensors`` trained by :func:`geopsp.train.run.train` on ``everest_chips``.

    Its folder also holds metrics.csv, last.ckpt, curves.png, val_preview.png, config.yaml.
    """
    from geopsp.train.run import TrainConfig, train

    out = tmp_path_factory.mktemp("everest_model") / "run"
    result = train(TrainConfig([str(everest_chips)], str(out), **EVEREST_TRAIN))
    return result.model_path


def write_chip_folder(
    folder: Path,
    n: int = 12,
    size: int = 32,
    bands: int = 3,
    classes: tuple = ((0, "background"), (1, "water")),
    val_every: int = 4,
    stats: bool = True,
    seed: int = 0,
) -> Path:
    """Write a small synthetic geopsp chip folder that a model can learn quickly.

    Each chip is a grid of class patches; band values depend on the class (plus noise), so
    the task is easy. Every ``val_every``-th chip is in validation.
    """
    import json

    import geopandas as gpd
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    values = [v for v, _ in classes]
    rows, imgs = [], []
    for i in range(n):
        row, img = _write_synthetic_chip(folder, i, size, bands, values, rng)
        row["split"] = "val" if i % val_every == val_every - 1 else "train"
        rows.append(row)
        imgs.append(img)
    gpd.GeoDataFrame(rows, crs="EPSG:32631").to_crs(4326).to_file(
        folder / "chips.gpkg", layer="chips"
    )
    (folder / "classes.json").write_text(
        json.dumps(
            [{"value": v, "name": nm, "color": [v * 40 % 256, 100, 200]} for v, nm in classes]
        )
    )
    if stats:
        allpx = np.stack(imgs).astype(np.float64)
        st = {
            "bands": list(range(1, bands + 1)),
            "band_count": bands,
            "mean": allpx.mean(axis=(0, 2, 3)).tolist(),
            "std": allpx.std(axis=(0, 2, 3)).tolist(),
            "valid_pixels": n * size * size,
            "chip_size": size,
            "crs": "EPSG:32631",
            "resolution": [10.0, 10.0],
        }
        (folder / "stats.json").write_text(json.dumps(st))
    return folder


def _write_synthetic_chip(folder: Path, i: int, size: int, bands: int, values: list, rng):
    """Chip ``i`` of :func:`write_chip_folder`: its image and label files, index row, image."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box

    cells = rng.choice(values, size=(4, 4))
    lab = np.kron(cells, np.ones((size // 4, size // 4), dtype=np.uint8)).astype(np.uint8)
    img = np.stack([lab * (40 + 10 * b) + 60 for b in range(bands)]).astype(np.float32)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    x0, y0 = 500000 + i * size * 10, 4000000
    prof = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs="EPSG:32631",
        transform=from_origin(x0, y0, 10, 10),
    )
    name = f"{i:09d}.tif"
    with rasterio.open(folder / "images" / name, "w", count=bands, dtype="uint8", **prof) as d:
        d.write(img)
    with rasterio.open(
        folder / "labels" / name, "w", count=1, dtype="uint8", nodata=255, **prof
    ) as d:
        d.write(lab, 1)
    counts = {f"count_{v}": int((lab == v).sum()) for v in values}
    row = dict(chip_id=i, image=f"images/{name}", label=f"labels/{name}", source="synthetic.tif",
               col_off=i * size, row_off=0, width=size, height=size, split="train",
               nodata_fraction=0.0, **counts, count_255=0,
               geometry=box(x0, y0 - size * 10, x0 + size * 10, y0))  # fmt: skip
    return row, img


@pytest.fixture
def chip_folder(tmp_path):
    """Factory: ``chip_folder(name, **kw)`` writes a synthetic chip folder under tmp_path."""

    def make(name: str = "chips", **kw) -> Path:
        return write_chip_folder(tmp_path / name, **kw)

    return make


@pytest.fixture(scope="session")
def arcgis_chips(everest, tmp_path_factory) -> Path:
    """An ArcGIS Pro "Classified_Tiles" folder cut from the Everest sample (no geopsp files):
    images/*.tif, labels/*.tif, map.txt with Windows back-slashes and CRLF, and an .emd whose
    classes omit the 0 background, as ArcGIS writes them."""
    import json

    import geopandas as gpd
    import numpy as np
    import rasterio
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    out = tmp_path_factory.mktemp("arcgis") / "Classified_Tiles"
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    size, lines = 64, []
    with rasterio.open(everest["image"]) as src:
        shapes = gpd.read_file(everest["labels"]).to_crs(src.crs).geometry
        for k, (r, c) in enumerate((r, c) for r in range(4) for c in range(6)):
            win = Window(c * size + 200, r * size + 100, size, size)
            tr = window_transform(win, src.transform)
            img = src.read(window=win)
            lab = rasterize(((g, 1) for g in shapes), out_shape=(size, size), transform=tr)
            prof = dict(driver="GTiff", width=size, height=size, crs=src.crs, transform=tr)
            name = f"{k:09d}.tif"
            with rasterio.open(out / "images" / name, "w", count=3, dtype="uint8", **prof) as d:
                d.write(img)
            with rasterio.open(out / "labels" / name, "w", count=1, dtype="uint8", **prof) as d:
                d.write(lab.astype(np.uint8), 1)
            lines.append(f"images\\{name} labels\\{name}")
    (out / "map.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    emd = {
        "Framework": "Keras",
        "ModelConfiguration": "DeepLab",
        "ModelType": "ImageClassification",
        "ImageHeight": size,
        "ImageWidth": size,
        "ExtractBands": [0, 1, 2],
        "Classes": [{"Value": 1, "Name": "Glacier", "Color": [0, 200, 255]}],
    }
    (out / "esri_model_definition.emd").write_text(json.dumps(emd, indent=2))
    return out


@pytest.fixture(autouse=True)
def _reset_geopsp_logging():
    """Undo the logging set-up of CLI runs made in this process (``-q`` sets the ``geopsp``
    logger to ERROR), so that later tests' ``caplog`` sees library warnings."""
    import logging

    yield
    log = logging.getLogger("geopsp")
    log.handlers[:] = []
    log.setLevel(logging.NOTSET)
    log.propagate = True


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for small-tensor tests: on a busy 2-core machine OpenMP
    threads spin-wait for each other and make tiny forwards many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a ``metrics.csv`` without its wall-clock columns, to compare two runs."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in CLOCK_COLUMNS} for r in csv.DictReader(f)]
