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
