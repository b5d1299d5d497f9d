"""Shared fixtures: paths of the real sample data shipped in sample_data/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"

# Keep CPU tests predictable on small machines (2 cores in CI).
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def everest() -> dict[str, Path]:
    d = SAMPLE / "everest_landsat7_glaciers"
    return {"image": d / "LE71400412000304SGS00_RGB.tif", "labels": d / "15_rgi60_glacier_outlines.gpkg"}


@pytest.fixture(scope="session")
def atlanta() -> dict[str, Path]:
    d = SAMPLE / "spacenet4_atlanta_buildings"
    return {"image": d / "sample_geotiff.tif", "labels": d / "geotiff_labels.geojson"}


@pytest.fixture(scope="session")
def nc_landsat() -> dict[str, Path]:
    d = SAMPLE / "nc_landsat7_landcover"
    return {
        "image": d / "lsat7_2000_6band.tif",
        "labels": d / "landsat96_polygons.shp",
        "label_raster": d / "landclass_strata.tif",
        "labelled_pixels": d / "landsat96_labelled_pixels.tif",
    }


@pytest.fixture(scope="session")
def rcr() -> dict[str, Path]:
    d = SAMPLE / "rcr_sentinel2_landcover"
    return {"image": d / "rcr_s2b_l1c_20181013_B01-B08_crop1000x600.tif", "labels": d / "rcr_landcover.shp"}


@pytest.fixture(scope="session")
def vegas() -> dict[str, Path]:
    d = SAMPLE / "spacenet3_vegas_roads"
    return {
        "image": d / "road_mask_input.tif",
        "labels": d / "sample_roads_for_masking.geojson",
        "label_raster": d / "sample_road_raster_mask.tif",
    }


# --- Shared chips and model (session-scoped: built once, reused by train/classify/evaluate) ---

EVEREST_CHIP_SIZE = 64


@pytest.fixture(scope="session")
def everest_chips(everest, tmp_path_factory) -> Path:
    """A geopsp chip folder cut from the Everest sample: 64 px chips, no overlap, 20 % val."""
    from geopsp.chips import export_chips

    out = tmp_path_factory.mktemp("everest") / "chips"
    export_chips(
        [str(everest["image"])],
        str(everest["labels"]),
        str(out),
        chip_size=EVEREST_CHIP_SIZE,
        stride=EVEREST_CHIP_SIZE,
        val_fraction=0.2,
        seed=0,
    )
    return out


# Small and fast on 2 CPU cores: resnet18 from scratch, output stride 16, 3 short epochs.
EVEREST_TRAIN = dict(
    backbone="resnet18",
    encoder_weights="none",
    output_stride=16,
    epochs=3,
    batch_size=8,
    lr=1e-3,
    augment="flips",
    patience=0,
    seed=0,
    device="cpu",
)


@pytest.fixture(scope="session")
def everest_model(everest_chips, tmp_path_factory) -> Path:
    """``model.safetensors`` trained by :func:`geopsp.training.train` on ``everest_chips``.

    Its folder also holds metrics.csv, last.ckpt, curves.png, val_preview.png, config.yaml.
    """
    from geopsp.training import TrainConfig, train

    out = tmp_path_factory.mktemp("everest_model") / "run"
    result = train(TrainConfig([str(everest_chips)], str(out), **EVEREST_TRAIN))
    return result.model_path
