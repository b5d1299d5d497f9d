"""``geopsp classify`` end to end on the real sample data, and every error case."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from model_files import write_model_file

from geopsp.cli.main import cli
from geopsp.core.class_raster import read_classes, read_rat

CLASSES = [
    {"value": 0, "name": "background", "color": [0, 0, 0]},
    {"value": 1, "name": "glacier", "color": [120, 200, 255]},
]


def make_model(path, in_channels=3, chip_size=64, resolution=(30.0, 30.0)):
    """An untrained but real geopsp model file (small and fast for CPU tests)."""
    return write_model_file(
        path, CLASSES, bands=in_channels, chip_size=chip_size, resolution=resolution
    )


@pytest.fixture(scope="module")
def model(request, tmp_path_factory):
    """The model trained on Everest chips when the suite provides one, else an untrained one."""
    try:
        return request.getfixturevalue("everest_model")
    except pytest.FixtureLookupError:
        return make_model(tmp_path_factory.mktemp("model") / "model.safetensors")


def model_classes(path):
    from geopsp.core.classes import from_dicts
    from geopsp.models.modelfile import read_metadata

    return from_dicts(read_metadata(path)["classes"])


@pytest.fixture(scope="module")
def everest_nodata(everest, tmp_path_factory):
    """The Everest scene with nodata 0 and a rectangle of nodata."""
    with rasterio.open(everest["image"]) as src:
        arr, prof = src.read(), src.profile
    arr[:, 100:180, 200:330] = 0
    prof.update(nodata=0)
    path = tmp_path_factory.mktemp("nodata") / "everest_nodata.tif"
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr)
    return path


def crop(src_path, dst_path, size, nodata=None):
    """A ``size`` x ``size`` crop of a sample raster (keeps its georeferencing)."""
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        win = Window(150, 100, size, size)
        prof = src.profile
        prof.update(width=size, height=size, transform=src.window_transform(win), nodata=nodata)
        arr = src.read(window=win)
    with rasterio.open(dst_path, "w", **prof) as dst:
        dst.write(arr)
    return dst_path


def run(*args):
    return CliRunner().invoke(cli, ["-q", "classify", *map(str, args)])


def assert_one_line_error(r, code, *words):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error"), r.output
    for w in words:
        assert w in lines[0], r.output


@pytest.mark.slow
def test_end_to_end_grid_nodata_and_metadata(model, everest_nodata, tmp_path):
    out = tmp_path / "classes.tif"
    r = run(everest_nodata, "-m", model, "-o", out, "--tile-size", "256",
            "--confidence", tmp_path / "conf.tif")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "pixels" in r.output and "MP/s" in r.output
    classes = model_classes(model)
    values = [c.value for c in classes]
    with rasterio.open(everest_nodata) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.dtypes == ("uint8",) and dst.nodata == 255
        cls = dst.read(1)
        invalid = ~src.dataset_mask().astype(bool)
        assert invalid.sum() >= 80 * 130
        assert (cls[invalid] == 255).all() and (cls[~invalid] != 255).all()
        assert set(np.unique(cls[~invalid])) <= set(values)
        cmap = dst.colormap(1)
        assert [cmap[c.value] for c in classes] == [(*c.color, 255) for c in classes]
        assert dst.descriptions == ("class",)
        assert dst.block_shapes == [(512, 512)]
        assert dst.compression is not None
        assert read_classes(dst) == classes
    rat = read_rat(str(out) + ".aux.xml")
    assert [(row["Value"], row["Class_Name"]) for row in rat] == [
        (str(c.value), c.name) for c in classes
    ]
    qml = ET.parse(tmp_path / "classes.qml").getroot()
    entries = qml.findall(".//paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        (str(c.value), c.name, "#{:02x}{:02x}{:02x}".format(*c.color)) for c in classes]  # fmt: skip
    with rasterio.open(tmp_path / "conf.tif") as c:
        conf = c.read(1)
        assert (conf[invalid] == 0).all() and (conf[~invalid] >= 255 // len(classes)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classes.qml", "classes.tif", "classes.tif.aux.xml", "conf.tif"]  # fmt: skip


@pytest.mark.slow
def test_cog_output_is_valid(model, everest, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "classes_cog.tif"
    src = crop(everest["image"], tmp_path / "crop.tif", 400)
    r = run(src, "-m", model, "-o", out, "--tile-size", "256", "--cog",
            "--co", "BLOCKSIZE=256", "--probabilities", tmp_path / "p.tif")  # fmt: skip
    assert r.exit_code == 0, r.output
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    assert cog_validate(str(tmp_path / "p.tif"))[0]
    with rasterio.open(out) as d:
        assert d.overviews(1) == [2]  # 400 x 400 at 256-pixel tiles
        classes = model_classes(model)
        assert d.colormap(1)[classes[-1].value] == (*classes[-1].color, 255)
        assert read_classes(d) == classes
        assert d.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(tmp_path / "p.tif") as p:
        assert p.descriptions == tuple(f"probability {c.name}" for c in classes)
    assert os.path.exists(str(out) + ".aux.xml") and (tmp_path / "classes_cog.qml").exists()
    assert not [p for p in tmp_path.iterdir() if ".geopsp-tmp" in p.name]


@pytest.mark.slow
def test_several_inputs_write_a_folder_and_overwrite_removes_stale_sidecars(model, everest, tmp_path):  # fmt: skip
    out = tmp_path / "maps"
    a = crop(everest["image"], tmp_path / "a.tif", 200)
    b = crop(everest["image"], tmp_path / "everest_nodata.tif", 150, nodata=0)
    everest_nodata = b
    r = run(a, b, "-m", model, "-o", out, "--tile-size", "128", "--overlap", "0", "--batch-size", "8",
            "--co", "COMPRESS=LZW", "--co", "BLOCKXSIZE=128", "--co", "BLOCKYSIZE=128")  # fmt: skip
    assert r.exit_code == 0, r.output
    with rasterio.open(out / "a.tif") as d:
        assert d.compression.name == "lzw" and d.block_shapes == [(128, 128)]
    assert r.output.count("pixels") == 2
    names = sorted(p.name for p in out.iterdir())
    assert "a.tif" in names and "everest_nodata.tif" in names
    assert "everest_nodata.qml" in names
    stale = out / "everest_nodata.tif.aux.xml"
    stale.write_text("<PAMDataset/>")
    r = run(everest_nodata, "-m", model, "-o", out / "everest_nodata.tif", "--tile-size", "128")
    assert_one_line_error(r, 1, "already exists", "--overwrite")
    r = run(everest_nodata, "-m", model, "-o", out / "everest_nodata.tif", "--tile-size", "128",
            "--overwrite")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert read_rat(stale)  # replaced by a real attribute table


def test_error_model_missing_corrupt_or_foreign(everest, tmp_path):
    out = tmp_path / "o.tif"
    assert_one_line_error(
        run(everest["image"], "-m", tmp_path / "nope.safetensors", "-o", out), 1, "nope"
    )
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert_one_line_error(run(everest["image"], "-m", bad, "-o", out), 1, "corrupt")
    assert_one_line_error(run(everest["image"], "-m", everest["image"], "-o", out), 1)
    assert not out.exists()


def test_error_band_count_mismatch(model, atlanta, tmp_path):
    out = tmp_path / "o.tif"
    r = run(atlanta["image"], "-m", model, "-o", out)
    assert_one_line_error(r, 2, "1 band", "expects 3", "-b/--bands")
    r = run(atlanta["image"], "-m", model, "-o", out, "-b", "1,1")
    assert_one_line_error(r, 2, "2 band", "expects 3")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--tile-size", "128", "--overlap", "64"], ["--overlap 64", "half"]),
        (["--tile-size", "128", "--overlap", "100"], ["--overlap"]),
        (["--tile-size", "8"], ["--tile-size 8", "too small"]),
    ],
)
def test_error_tile_options(model, everest, tmp_path, args, words):
    out = tmp_path / "o.tif"
    assert_one_line_error(run(everest["image"], "-m", model, "-o", out, *args), 2, *words)
    assert not out.exists()


def test_error_output_exists_or_unwritable(model, everest, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    assert_one_line_error(run(everest["image"], "-m", model, "-o", out), 1, "already exists")
    assert out.read_bytes() == b"keep me"
    assert_one_line_error(
        run(everest["image"], "-m", model, "-o", tmp_path / "no" / "o.tif"), 1, "does not exist"
    )
    if os.geteuid() == 0:  # root ignores permissions; /proc refuses new files even to root
        target = "/proc/geopsp-classify-test.tif"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = str(locked / "o.tif")
    r = run(everest["image"], "-m", model, "-o", target, "--tile-size", "128")
    assert_one_line_error(r, 1, "cannot write")
    assert not os.path.exists(target)


def test_error_input_unreadable(model, tmp_path):
    fake = tmp_path / "fake.tif"
    fake.write_text("not a raster")
    out = tmp_path / "o.tif"
    assert_one_line_error(run(fake, "-m", model, "-o", out), 1, "fake.tif")
    assert_one_line_error(run(tmp_path / "missing.tif", "-m", model, "-o", out), 1, "no such file")
    assert not out.exists()


def test_help_is_fast_and_lists_options():
    r = CliRunner().invoke(cli, ["classify", "--help"])
    assert r.exit_code == 0
    for opt in ("--tile-size", "--overlap", "--blend", "--tta", "--probabilities", "--cog", "--co",
                "--bands", "--device", "--amp", "--read-threads", "--overwrite"):  # fmt: skip
        assert opt in r.output


def test_ctrl_c_mid_run_leaves_no_output(model, everest, tmp_path, monkeypatch):
    from geopsp.classify.predictor import Predictor

    real = Predictor.forward_fn

    def interrupted(self, tta="none"):
        fwd, calls = real(self, tta), []

        def forward(x):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return fwd(x)

        return forward

    monkeypatch.setattr(Predictor, "forward_fn", interrupted)
    src = crop(everest["image"], tmp_path / "in.tif", 200)
    before = set(tmp_path.iterdir())
    r = run(src, "-m", model, "-o", tmp_path / "o.tif", "--tile-size", "64", "--overlap", "0",
            "--batch-size", "1", "--cog", "--probabilities", tmp_path / "p.tif")  # fmt: skip
    assert r.exit_code == 130, r.output
    assert "Traceback" not in r.output
    assert set(tmp_path.iterdir()) == before  # no output, no sidecar, no temporary file


def test_second_input_unreadable_fails_before_any_work(model, everest, tmp_path):
    fake = tmp_path / "fake.tif"
    fake.write_text("not a raster")
    out = tmp_path / "maps"
    r = run(everest["image"], fake, "-m", model, "-o", out)
    assert_one_line_error(r, 1, "fake.tif")
    assert list(out.iterdir()) == []
