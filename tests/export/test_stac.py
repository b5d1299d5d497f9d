"""The STAC Item validates against the MLM v1.5.2 schema itself (vendored in data/stac_mlm,
with the schemas it references, so validation runs offline)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from geopsp.export import ExportModelOptions, export_model
from geopsp.export.stac import semver

from .conftest import CLASSES

SCHEMAS = Path(__file__).parent / "data" / "stac_mlm"  # see PROVENANCE.md and LICENSE there
MLM = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"


@pytest.fixture(scope="module")
def validator():
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource

    files = {
        MLM: "mlm-v1.5.2.json",
        "https://stac-extensions.github.io/classification/v1.1.0/schema.json": (
            "classification-v1.1.0.json"
        ),
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster-v1.1.0.json",
        "https://stac-extensions.github.io/processing/v1.1.0/schema.json": (
            "processing-v1.1.0.json"
        ),
    }
    schemas = {url: json.loads((SCHEMAS / f).read_text()) for url, f in files.items()}
    registry = Registry().with_resources(
        (url, Resource.from_contents(s)) for url, s in schemas.items()
    )
    return Draft7Validator(schemas[MLM], registry=registry)


@pytest.fixture(scope="module")
def item(tiny_model, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("stac") / "catalog" / "glaciers.json"
    out.parent.mkdir()
    summary = export_model(tiny_model, out, ExportModelOptions(name="Everest glaciers v1"))
    assert summary.format == "stac"
    return json.loads(out.read_text()) | {"_path": str(out)}


def test_item_validates_against_the_mlm_schema(item, validator):
    item = {k: v for k, v in item.items() if k != "_path"}
    errors = sorted(validator.iter_errors(item), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors]


def _drop_artifact_type(item):
    del item["assets"]["model"]["mlm:artifact_type"]


def _v14_statistics(item):  # what MLM v1.4 wrote: statistics instead of value_scaling values
    item["properties"]["mlm:input"][0]["value_scaling"] = [{"type": "z-score"}]
    item["properties"]["mlm:input"][0]["statistics"] = [{"mean": 80.0, "stddev": 40.0}]


def _loose_version(item):
    item["properties"]["mlm:framework_version"] = "2.1"


def _no_bands(item):
    del item["properties"]["bands"]


def _input_on_asset(item):
    item["assets"]["model"]["mlm:input"] = item["properties"]["mlm:input"]


def _hash_colour(item):
    item["properties"]["mlm:output"][0]["classification:classes"][0]["color_hint"] = "#000000"


@pytest.mark.parametrize(
    "mutate",
    [
        _drop_artifact_type,
        _v14_statistics,
        _loose_version,
        _no_bands,
        _input_on_asset,
        _hash_colour,
    ],  # fmt: skip
)
def test_schema_rejects_a_broken_item(item, validator, mutate):
    """The validator is the strict schema: each of these breaks of the Item fails."""
    broken = json.loads(json.dumps({k: v for k, v in item.items() if k != "_path"}))
    mutate(broken)
    assert list(validator.iter_errors(broken))


def test_item_content(item, tiny_model):
    props = item["properties"]
    assert item["type"] == "Feature" and item["stac_version"] == "1.1.0"
    assert item["id"] == "Everest_glaciers_v1" and props["mlm:name"] == "Everest glaciers v1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", props["datetime"])
    assert props["mlm:architecture"] == "PSPNet"
    assert props["mlm:tasks"] == ["semantic-segmentation"]
    assert props["mlm:framework"] == "PyTorch"
    from geopsp.models.modelfile import parameter_count, read_metadata

    assert props["mlm:total_parameters"] == parameter_count(tiny_model)
    (inp,) = props["mlm:input"]
    assert inp["input"]["shape"] == [-1, 3, 64, 64]
    assert inp["input"]["dim_order"] == ["batch", "bands", "height", "width"]
    assert inp["value_scaling"] == [{"type": "z-score", "mean": 80.0, "stddev": 40.0}] * 3
    assert inp["bands"] == [b["name"] for b in props["bands"]] == ["band_1", "band_2", "band_3"]
    (out,) = props["mlm:output"]
    assert out["result"]["shape"] == [-1, 3, 64, 64]
    assert out["classification:classes"] == [
        {"value": 0, "name": "background", "description": "background", "color_hint": "000000"},
        {"value": 3, "name": "glacier_ice", "description": "glacier ice", "color_hint": "50A0FF"},
        {"value": 7, "name": "debris_rock", "description": "debris/rock", "color_hint": "966E3C"},
    ]
    assert [c["value"] for c in out["classification:classes"]] == [c["value"] for c in CLASSES]
    asset = item["assets"]["model"]
    assert "mlm:model" in asset["roles"]
    assert asset["mlm:artifact_type"] == "safetensors.torch.save_file"
    # The href is relative to the Item and leads to the model file.
    assert (Path(item["_path"]).parent / asset["href"]).resolve() == tiny_model.resolve()
    assert props["geopsp:metadata"] == read_metadata(tiny_model)
    assert props["mlm:hyperparameters"]["arch.backbone"] == "resnet18"


@pytest.mark.parametrize(
    "version, expected",
    [
        ("2.14.1+cu130", "2.14.1+cu130"),
        ("2.1.0a0+git1f2e", "2.1.0-a0+git1f2e"),
        ("2.3", "2.3.0"),
        ("2.5.0.dev20240101", "2.5.0-dev20240101"),
    ],  # fmt: skip
)
def test_semver(version, expected, validator):
    assert semver(version) == expected
    pattern = json.loads((SCHEMAS / "mlm-v1.5.2.json").read_text())["$defs"][
        "mlm:framework_version"
    ]["pattern"]
    assert re.match(pattern, semver(version))


def test_export_targets_need_normalization_and_classes(tiny_model):
    from geopsp.export import export_targets
    from geopsp.models.modelfile import read_metadata

    md = read_metadata(tiny_model)
    assert [f for f, _ in export_targets(md)] == ["dlpk", "onnx", "stac"]
    assert all("not possible" not in what for _, what in export_targets(md))
    md["normalization"] = None
    assert all("not possible" in what for _, what in export_targets(md))
