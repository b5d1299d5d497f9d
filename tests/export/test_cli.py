"""``geopsp export-model`` end to end: each target from the command line, ``geopsp info``
listing them, and one clear line with the exact exit code for each bad input."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
from robustness.conftest import assert_clean_error, invoke, leftovers


def test_each_target_from_the_command_line(tiny_model, tmp_path):
    for name, fmt in (("m.dlpk", "dlpk"), ("m.onnx", "onnx"), ("m.json", "stac")):
        out = tmp_path / name
        result = invoke("export-model", tiny_model, "-o", out)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{out}: {fmt} export, 64 x 64 input")
        assert out.is_file()
    with zipfile.ZipFile(tmp_path / "m.dlpk") as z:
        assert json.loads(z.read("m.emd"))["ImageHeight"] == 64
    assert json.loads((tmp_path / "m.json").read_text())["assets"]["model"]["href"] == (
        "../" + tiny_model.parent.name + "/model.safetensors"
    )
    assert leftovers(tmp_path) == []


def test_tile_size_and_format_options(tiny_model, tmp_path):
    out = tmp_path / "big.dlpk"
    result = invoke("export-model", tiny_model, "-o", out, "--format", "dlpk",
                    "--tile-size", "100", "--batch-size", "2", "--name", "glaciers")  # fmt: skip
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as z:
        emd = json.loads(z.read("big.emd"))
    assert emd["ImageHeight"] == 96  # rounded to a multiple of the output stride, 16
    assert emd["BatchSize"] == 2 and emd["Name"] == "glaciers"


def test_info_lists_the_export_targets(tiny_model):
    result = invoke("info", tiny_model)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("exports to"))
    targets = [ln.split()[0] for ln in lines[start + 1 : start + 4]]
    assert targets == ["dlpk", "onnx", "stac"]


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--format", "onnx", "-o", "{tmp}/m.dlpk"], 2, ["must end in .onnx"]),
        (["-o", "{tmp}/m.zip"], 2, ["cannot tell the format", "--format"]),
        (["-o", "{tmp}/m.onnx", "--opset", "18"], 2, ["--opset"]),
        (["-o", "{tmp}/m.dlpk", "--batch-size", "0"], 2, ["--batch-size"]),
        (["-o", "{tmp}/missing/m.dlpk"], 1, ["does not exist"]),
    ],
)
def test_bad_options(tiny_model, tmp_path, args, code, words):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_clean_error(invoke("export-model", tiny_model, *args), code, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_not_a_model_file(everest, tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("export-model", everest["image"], "-o", out)
    assert_clean_error(result, 1, "not a geopsp model")
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_output_needs_overwrite(tiny_model, tmp_path):
    out = tmp_path / "m.json"
    out.write_text("keep me")
    assert_clean_error(invoke("export-model", tiny_model, "-o", out), 1, "--overwrite")
    assert out.read_text() == "keep me"
    assert invoke("export-model", tiny_model, "-o", out, "--overwrite").exit_code == 0
    assert json.loads(out.read_text())["type"] == "Feature"


def test_output_over_the_model_is_refused(tiny_model, tmp_path):
    model = tmp_path / "m.json"
    shutil.copy(tiny_model, model)
    result = invoke("export-model", model, "-o", model, "--format", "stac", "--overwrite")
    assert_clean_error(result, 2, "is the model file")
    assert model.read_bytes() == tiny_model.read_bytes()


def test_pointrend_at_an_opset_without_gridsample(tmp_path):
    """An architecture that opset 15 cannot express: one line, exit 1, nothing written."""
    from .test_onnx import write_arch_model

    model = write_arch_model(tmp_path / "pr.safetensors", decoder="fpn", pointrend=True)
    out = tmp_path / "pr.onnx"
    result = invoke("export-model", model, "-o", out, "--opset", "15")
    assert_clean_error(result, 1, "PointRend", "opset 16")
    assert not out.exists() and leftovers(tmp_path) == []


def test_onnx_package_missing(tiny_model, tmp_path):
    """Without the onnx package: one line saying how to install it, exit 1, nothing written;
    ``info`` says the same of the onnx target."""
    import subprocess
    import sys

    out = tmp_path / "m.onnx"
    script = (
        "import sys; sys.modules['onnx'] = None\n"  # as if onnx were not installed
        "from geopsp.cli.main import cli\n"
        "cli(sys.argv[1:], prog_name='geopsp')\n"
    )
    r = subprocess.run([sys.executable, "-c", script, "export-model", str(tiny_model), "-o",
                        str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        "Error: ONNX export needs the onnx package: pip install 'geopsp[onnx]' (or 'onnx>=1.15')"
    ]
    assert not out.exists() and leftovers(tmp_path) == []
    r = subprocess.run([sys.executable, "-c", script, "info", str(tiny_model)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "needs the onnx package" in r.stdout


def test_output_that_is_a_folder(tiny_model, tmp_path):
    folder = tmp_path / "out.json"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    result = invoke("export-model", tiny_model, "-o", folder, "--overwrite")
    assert_clean_error(result, 2, "is a folder")
    assert (folder / "keep.txt").read_text() == "x"


def test_missing_model(tmp_path):
    out = tmp_path / "m.json"
    out.write_text("{}")
    result = invoke("export-model", tmp_path / "nope.safetensors", "-o", out, "--overwrite")
    assert_clean_error(result, 1, "does not exist")
    assert out.read_text() == "{}"
