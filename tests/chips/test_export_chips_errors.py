"""export-chips on bad input: one clear line, the right exit code, no traceback, no OUTDIR."""

from __future__ import annotations

import json
import warnings

import geopandas as gpd
import pytest
import shapely
from click.testing import CliRunner

from geopsp.cli.main import cli


def _run(args):
    return CliRunner().invoke(cli, ["-q", "export-chips", *map(str, args)])


def _assert_clean_failure(r, code, text, out):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, r.output  # one line that says what is wrong
    assert text in errors[0], errors[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".geopsp-tmp-" in p.name]  # nothing half-written


@pytest.fixture
def atl(atlanta, tmp_path):
    return {"image": atlanta["image"], "labels": atlanta["labels"], "out": tmp_path / "chips"}


def _vector(path, geoms, crs="EPSG:32616", **fields):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "crs was not provided" is the point here
        gpd.GeoDataFrame(fields, geometry=list(geoms), crs=crs).to_file(path, engine="pyogrio")
    return path


BOX = shapely.box(733700, 3724800, 733750, 3724850)  # inside the Atlanta image


def test_missing_image(atl):
    r = _run([atl["out"].parent / "nope.tif", "--labels", atl["labels"], "-o", atl["out"]])
    _assert_clean_failure(r, 1, "no such file", atl["out"])


def test_text_file_as_image(atl, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("this is not a raster\n")
    r = _run([txt, "--labels", atl["labels"], "-o", atl["out"]])
    _assert_clean_failure(r, 1, "not a raster GDAL can read", atl["out"])


def test_vector_without_crs(atl, tmp_path):
    # A shapefile without .prj (GeoJSON without "crs" is WGS 84 by definition, so not this case).
    path = _vector(tmp_path / "nocrs.shp", [BOX], crs=None)
    assert not (tmp_path / "nocrs.prj").exists()
    r = _run([atl["image"], "--labels", path, "-o", atl["out"]])
    _assert_clean_failure(r, 1, "no CRS", atl["out"])


def test_labels_touching_no_raster(atl, everest):
    r = _run([atl["image"], "--labels", everest["labels"], "-o", atl["out"]])
    _assert_clean_failure(r, 1, "touch none of the rasters", atl["out"])


def test_unknown_class_field_lists_fields(atl, tmp_path):
    path = _vector(tmp_path / "l.gpkg", [BOX], kind=["roof"], height=[5])
    r = _run([atl["image"], "--labels", path, "-o", atl["out"], "--class-field", "type"])
    _assert_clean_failure(r, 2, "'type' not found", atl["out"])
    assert "fields: kind, height" in r.output


def test_empty_vector(atl, tmp_path):
    path = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"kind": []}, geometry=[], crs="EPSG:32616").to_file(path, engine="pyogrio")
    r = _run([atl["image"], "--labels", path, "-o", atl["out"]])
    _assert_clean_failure(r, 1, "no features", atl["out"])


def test_invalid_geometries_repaired_and_counted(atl, tmp_path):
    x, y = 733700, 3724800
    bowtie = shapely.Polygon([(x, y), (x + 40, y + 40), (x + 40, y), (x, y + 40)])
    spike = shapely.Polygon([(x + 60, y), (x + 60, y + 30), (x + 60, y)])  # zero area
    path = _vector(tmp_path / "bad.geojson", [bowtie, spike, BOX])
    r = _run([atl["image"], "--labels", path, "-o", atl["out"], "--chip-size", "128"])
    assert r.exit_code == 0, r.output
    assert "invalid geometries: 1 repaired, 1 skipped" in r.output
    assert atl["out"].is_dir()


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        (["-b", "2"], "--bands 2 out of range"),
        (["--chip-size", "8"], "--chip-size must be at least 16"),
        (["--stride", "0"], "--stride must be a positive"),
        (["--stride", "-4"], "--stride must be a positive"),
        (["--unlabeled", "nothing"], "'nothing' is not one of 'background', 'ignore'"),
        (["--max-nodata", "1.5"], "--max-nodata must be a fraction"),
        (["--buffer", "-1"], "Invalid value for '--buffer'"),
    ],
)
def test_usage_errors(atl, extra, text):
    r = _run([atl["image"], "--labels", atl["labels"], "-o", atl["out"], *extra])
    _assert_clean_failure(r, 2, text, atl["out"])


def test_existing_outdir_needs_overwrite(atl):
    atl["out"].mkdir()
    (atl["out"] / "keep.txt").write_text("x")
    r = _run([atl["image"], "--labels", atl["labels"], "-o", atl["out"]])
    assert (
        r.exit_code == 1
        and "already exists; use --overwrite" in r.output
        and "Traceback" not in r.output
    )
    assert (atl["out"] / "keep.txt").exists()
    r = _run(
        [
            atl["image"],
            "--labels",
            atl["labels"],
            "-o",
            atl["out"],
            "--overwrite",
            "--chip-size",
            "256",
        ]
    )
    assert r.exit_code == 0, r.output
    assert not (atl["out"] / "keep.txt").exists() and (atl["out"] / "chips.gpkg").exists()


def test_more_than_254_classes(atl, tmp_path):
    boxes = [shapely.box(733601 + i, 3724700, 733601.5 + i, 3724701) for i in range(300)]
    path = _vector(tmp_path / "many.gpkg", boxes, name=[f"class {i}" for i in range(300)])
    r = _run([atl["image"], "--labels", path, "-o", atl["out"], "--class-field", "name"])
    _assert_clean_failure(r, 2, "300 distinct", atl["out"])


def test_classes_json_fixes_values_and_rejects_unknown(nc_landsat, tmp_path):
    table = [{"value": 10 * i, "name": n, "color": [i, i, i]} for i, n in enumerate(
        ["developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"], 1)]  # fmt: skip
    cj = tmp_path / "classes.json"
    cj.write_text(json.dumps(table))
    out = tmp_path / "chips"
    args = [
        nc_landsat["image"],
        "--labels",
        nc_landsat["labels"],
        "-o",
        out,
        "--class-field",
        "label",
    ]
    r = _run([*args, "--classes", cj, "--unlabeled", "ignore", "--chip-size", "128"])
    assert r.exit_code == 0, r.output
    assert [c["value"] for c in json.loads((out / "classes.json").read_text())] == [
        10,
        20,
        30,
        40,
        50,
        60,
        70,
    ]
    cj.write_text(json.dumps(table[:5]))
    r = _run([*args, "--overwrite", "--classes", cj])
    assert r.exit_code == 1 and "not in the class table: sediment, water" in r.output
    assert out.exists()  # the earlier folder is untouched


def test_config_file_gives_defaults_and_options_win(atl, tmp_path):
    cfg = tmp_path / "chips.yaml"
    cfg.write_text("chip-size: 300\nstride: 300\nunlabeled: ignore\n")
    r = _run(
        [atl["image"], "--labels", atl["labels"], "-o", atl["out"], "-c", cfg, "--chip-size", "450"]
    )
    assert r.exit_code == 0, r.output
    stats = json.loads((atl["out"] / "stats.json").read_text())
    assert (stats["chip_size"], stats["stride"], stats["unlabeled"]) == (450, 300, "ignore")


def test_overwrite_never_deletes_an_input(atl):
    """``-o`` naming the folder that holds the labels (or the image): refused, nothing deleted."""
    import shutil

    folder = atl["out"]
    folder.mkdir()
    labels = folder / "labels.geojson"
    shutil.copy(atl["labels"], labels)
    r = _run([atl["image"], "--labels", labels, "-o", folder, "--overwrite"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "labels.geojson is inside" in r.output and "--overwrite would delete" in r.output
    assert labels.read_bytes() == atl["labels"].read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["labels.geojson"]


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [("chip-size: 300\nstrides: 300\n", "'strides'", "did you mean 'stride'?"),
     ("chip_size: 300\ncolour: red\n", "'colour'", "option names")],
)  # fmt: skip
def test_config_file_refuses_unknown_keys(atl, tmp_path, text, key, hint):
    cfg = tmp_path / "chips.yaml"
    cfg.write_text(text)
    r = _run([atl["image"], "--labels", atl["labels"], "-o", atl["out"], "-c", cfg])
    _assert_clean_failure(r, 2, f"unknown option {key}", atl["out"])
    assert hint in r.output and "chips.yaml" in r.output
