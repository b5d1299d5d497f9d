"""Bad input to ``geopsp train``: exit code, one ``Error:`` line, no traceback, nothing written."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from geopsp.cli.main import cli

TINY_ARGS = [
    "--backbone", "tu-mobilenetv3_small_050", "--encoder-weights", "none", "--output-stride",
    "16", "--no-pointrend", "--decoder", "upsample", "--batch-size", "4", "--device", "cpu",
    "--lr", "0.001",
]  # fmt: skip


def run(args):
    return CliRunner().invoke(cli, ["-q", "train", *args])


def assert_clean_error(res, code: int, match: str) -> str:
    assert res.exit_code == code, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert match in errors[0], errors[0]
    assert "Traceback" not in res.output
    return errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch run to resume from (shared by the resume error tests)."""
    from conftest import write_chip_folder

    base = tmp_path_factory.mktemp("finished")
    chips = write_chip_folder(base / "chips", n=8)
    res = run([str(chips), "-o", str(base / "run"), "--epochs", "1", *TINY_ARGS])
    assert res.exit_code == 0, res.output
    return chips, base / "run"


def test_empty_and_non_chip_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    for name in ("empty", "other"):
        res = run([str(tmp_path / name), "-o", str(tmp_path / "out"), *TINY_ARGS])
        assert_clean_error(res, 1, "not a chip folder")
        assert not (tmp_path / "out").exists()


def test_folders_with_different_bands_or_conflicting_classes(chip_folder, tmp_path):
    a = chip_folder("a", bands=3)
    b = chip_folder("b", bands=4)
    c = chip_folder("c", classes=((0, "background"), (1, "forest")))
    res = run([str(a), str(b), "-o", str(tmp_path / "out"), *TINY_ARGS])
    assert_clean_error(res, 1, "band(s)")
    res = run([str(a), str(c), "-o", str(tmp_path / "out"), *TINY_ARGS])
    assert_clean_error(res, 1, "conflicting classes")
    assert not (tmp_path / "out").exists()


def test_chip_size_not_a_multiple_of_the_output_stride(chip_folder, tmp_path):
    chips = chip_folder(size=36)
    args = [str(chips), "-o", str(tmp_path / "out"), *TINY_ARGS, "--output-stride", "8"]
    line = assert_clean_error(run(args), 2, "multiples of 8")
    assert "--chip-size 32" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(chip_folder, tmp_path):
    res = run([str(chip_folder()), "-o", str(tmp_path / "out"), *TINY_ARGS, "--device", "cuda"])
    assert_clean_error(res, 1, "no CUDA GPU is available")
    assert not (tmp_path / "out").exists()


def test_bad_option_values(chip_folder, tmp_path):
    chips = str(chip_folder())
    out = str(tmp_path / "out")
    assert_clean_error(run([chips, "-o", out, *TINY_ARGS, "--device", "tpu"]), 2, "--device")
    assert_clean_error(run([chips, "-o", out, *TINY_ARGS, "--lr", "-1"]), 2, "--lr")
    assert_clean_error(
        run([chips, "-o", out, *TINY_ARGS, "--ignore-classes", "7"]), 2, "no such class value"
    )
    assert_clean_error(
        run([chips, "-o", out, *TINY_ARGS, "--color-jitter", "3"]), 2, "--color-jitter"
    )
    assert_clean_error(
        run([chips, "-o", out, *TINY_ARGS, "--scale-jitter", "-0.2"]), 2, "--scale-jitter"
    )
    for decay in ("1", "-0.5"):
        assert_clean_error(run([chips, "-o", out, *TINY_ARGS, "--ema", decay]), 2, "--ema")
    assert not (tmp_path / "out").exists()


def test_config_file_with_an_unknown_key(chip_folder, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("epoch: 3\noptimizer: SGD\n")  # "epochs" misspelt: refused, not ignored
    res = run([str(chip_folder()), "-o", str(tmp_path / "out"), "-c", str(cfg), *TINY_ARGS])
    assert_clean_error(res, 2, "unknown option 'epoch'")
    assert "did you mean 'epochs'?" in res.output
    assert not (tmp_path / "out").exists()


def test_cuda_out_of_memory_suggests_smaller_batches(chip_folder, tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("geopsp.train.loop.train_step", oom)
    res = run([str(chip_folder()), "-o", str(tmp_path / "out"), *TINY_ARGS])
    line = assert_clean_error(res, 1, "out of memory")
    assert "--batch-size" in line
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_existing_output_needs_overwrite(finished_run, tmp_path):
    chips, done = finished_run
    before = sorted(p.name for p in done.iterdir())
    assert_clean_error(run([str(chips), "-o", str(done), *TINY_ARGS]), 1, "--overwrite")
    assert sorted(p.name for p in done.iterdir()) == before


def test_resume_with_a_different_architecture(finished_run):
    chips, done = finished_run
    args = [str(chips), "-o", str(done), "--resume", str(done / "last.ckpt"), "--epochs", "2"]
    line = assert_clean_error(run([*args, "--backbone", "resnet18"]), 2, "different architecture")
    assert "--backbone" in line
    assert_clean_error(run([*args, "--loss", "dice"]), 2, "different options")
    # Nothing was trained: the checkpoint is still the first epoch's.
    assert torch.load(done / "last.ckpt", weights_only=True)["epoch"] == 1


def test_resume_needs_more_epochs_and_a_real_checkpoint(finished_run, tmp_path):
    chips, done = finished_run
    args = [str(chips), "-o", str(done), "--resume", str(done / "last.ckpt")]
    assert_clean_error(run([*args, "--epochs", "1"]), 2, "raise --epochs")
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"not a checkpoint")
    res = run([str(chips), "-o", str(tmp_path), "--resume", str(bad)])
    assert_clean_error(res, 1, "not a readable geopsp checkpoint")


def test_help_defaults_match_the_model_defaults():
    from geopsp.models import DEFAULT_ARCH
    from geopsp.train.config import (
        BATCH_SIZE,
        CPU_ARCH_DEFAULTS,
        CPU_BATCH_SIZE,
        DEFAULTS,
        LR_DEFAULTS,
        TIME_LIMIT_DEFAULTS,
    )

    res = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert f"[default: {DEFAULT_ARCH['backbone']}]" in text
    stride = (
        f"{DEFAULT_ARCH['output_stride']} on CUDA, {CPU_ARCH_DEFAULTS['output_stride']} on a CPU"
    )
    assert f"[default: {stride}]" in text
    assert f"[default: {','.join(map(str, DEFAULT_ARCH['pyramid_sizes']))}]" in text
    assert f"[default: {DEFAULT_ARCH['decoder']}]" in text

    def on(flag: bool) -> str:
        return "on" if flag else "off"

    pointrend = (
        f"{on(DEFAULT_ARCH['pointrend'])} with CUDA, {on(CPU_ARCH_DEFAULTS['pointrend'])} on a CPU"
    )
    assert f"[default: {pointrend}]" in text
    assert f"[default: {LR_DEFAULTS['adamw']} with adamw, {LR_DEFAULTS['sgd']} with sgd]" in text
    assert f"[default: {BATCH_SIZE} on CUDA, {CPU_BATCH_SIZE} on a CPU]" in text
    for key in ("optimizer", "schedule", "loss", "augment", "class_weights",
                "sampling"):  # fmt: skip
        assert f"[default: {DEFAULTS[key]}]" in text, key
    for key in ("epochs", "patience", "monitor"):
        timed = "none" if key == "epochs" else TIME_LIMIT_DEFAULTS[key]
        assert f"[default: {DEFAULTS[key]}; {timed} with --time-limit]" in text, key


def test_resume_counts_the_time_the_checkpoint_spent(finished_run):
    """The first run's seconds count against a --time-limit given on resume: a limit it has
    already spent is refused (exit 2) before any training."""
    chips, out = finished_run
    spent = torch.load(out / "last.ckpt", weights_only=True)["elapsed"]
    assert spent > 0
    res = run([str(chips), "-o", str(out), "--resume", str(out / "last.ckpt"), "--epochs", "2",
               "--time-limit", f"{spent * 0.9:.3f}"])  # fmt: skip
    assert_clean_error(res, 2, "larger --time-limit")
