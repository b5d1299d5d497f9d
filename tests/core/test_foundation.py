"""The package skeleton: CLI group, error mapping, atomic outputs, shared helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from geopsp import __version__
from geopsp.cli.main import cli
from geopsp.core.atomic import atomic_path
from geopsp.core.classes import ClassInfo, from_dicts, index_to_value, value_lut
from geopsp.core.errors import OutputError, UsageError
from geopsp.core.normalize import normalize
from geopsp.core.sources import check_bands, parse_bands
from geopsp.evaluate.metrics import confusion_matrix, scores


def test_help_lists_commands_without_importing_torch():
    code = (
        "import sys; from click.testing import CliRunner; from geopsp.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['--help']); print(r.output); "
        "assert 'torch' not in sys.modules, 'torch imported by --help'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in ("export-chips", "train", "classify", "evaluate", "info"):
        assert name in out.stdout


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0
    assert __version__ in r.output


def test_unknown_command_is_usage_error():
    r = CliRunner().invoke(cli, ["nope"])
    assert r.exit_code == 2


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target, sidecars=[".aux.xml"]) as tmp:
        tmp.write_text("data")
        (tmp.parent / (tmp.name + ".aux.xml")).write_text("side")
        assert not target.exists()
    assert target.read_text() == "data"
    assert (tmp_path / "out.txt.aux.xml").read_text() == "side"
    with pytest.raises(OutputError, match="already exists"), atomic_path(target):
        pass
    with pytest.raises(RuntimeError), atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert target.read_text() == "data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "out.txt.aux.xml"]


def test_atomic_overwrite_removes_stale_sidecars(tmp_path):
    target = tmp_path / "c.tif"
    target.write_text("old")
    (tmp_path / "c.tif.aux.xml").write_text("stale")
    with atomic_path(target, overwrite=True, sidecars=[".aux.xml"]) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert not (tmp_path / "c.tif.aux.xml").exists()


def test_bands_parsing():
    assert parse_bands("3,2,1") == [3, 2, 1]
    assert parse_bands(None) is None
    with pytest.raises(UsageError):
        parse_bands("a,b")
    with pytest.raises(UsageError):
        parse_bands("0")
    with pytest.raises(UsageError, match="has 3 band"):
        check_bands([4], 3, "x.tif")
    assert check_bands(None, 2, "x.tif") == [1, 2]


def test_class_lookup_tables():
    classes = from_dicts(
        [{"value": 5, "name": "water"}, {"value": 1, "name": "forest", "color": [0, 255, 0]}]
    )
    assert [c.value for c in classes] == [1, 5]
    assert classes[0] == ClassInfo(1, "forest", (0, 255, 0))
    lut = value_lut(classes)
    assert lut[1] == 0 and lut[5] == 1 and lut[0] == 255 and lut[255] == 255
    assert list(index_to_value(classes)) == [1, 5]


def test_normalize_zeroes_invalid():
    img = np.array([[[10, 20], [30, 40]]], dtype=np.uint16)
    valid = np.array([[True, False], [True, True]])
    x = normalize(img, [20.0], [10.0], valid)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0], [[-1.0, 0.0], [1.0, 2.0]])


def test_metrics_hand_computed():
    ref = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 1, 0])
    cm = confusion_matrix(pred, ref, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    s = scores(cm)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    np.testing.assert_allclose(s["iou"], [1 / 2, 2 / 4, 0.0])
    assert s["miou"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    pe = (2 * 1 + 2 * 4 + 1 * 0) / 25
    assert s["kappa"] == pytest.approx((0.6 - pe) / (1 - pe))


def test_atomic_path_reports_leftovers_of_killed_runs(tmp_path, caplog):
    (tmp_path / ".geopsp-tmp-0badf00d-out.tif").write_bytes(b"half a raster")
    (tmp_path / ".geopsp-tmp-12345678-other.tif").write_bytes(b"another output's")
    with atomic_path(tmp_path / "out.tif") as tmp:
        tmp.write_text("done")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "1 temporary file(s) left by an interrupted run" in warnings[0]
    assert ".geopsp-tmp-0badf00d-out.tif" in warnings[0] and "other" not in warnings[0]
    assert (tmp_path / "out.tif").read_text() == "done"
    assert (tmp_path / ".geopsp-tmp-0badf00d-out.tif").exists()  # reported, never deleted


def test_has_data_follows_gdal_rule():
    from geopsp.core.normalize import has_data

    data = np.array([[[1.0, np.nan, np.nan], [4.0, 5.0, np.nan]],
                     [[1.0, 2.0, np.nan], [np.inf, 5.0, 6.0]]])  # fmt: skip
    masks = np.array([[[1, 0, 1], [0, 0, 1]], [[1, 1, 0], [0, 0, 1]]], dtype=np.uint8) * 255
    # Missing only where every band is masked, or no band is finite.
    np.testing.assert_array_equal(has_data(data, None), [[True, True, False], [True, True, True]])
    np.testing.assert_array_equal(
        has_data(data, masks), [[True, True, False], [False, False, True]]
    )
