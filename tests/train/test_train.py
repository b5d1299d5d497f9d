"""Training runs on small synthetic chips: outputs, resume equivalence, merging, weights."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from geopsp.cli.main import cli
from geopsp.train.losses import auto_class_weights
from geopsp.train.run import OUTPUT_FILES, TrainConfig, train

# A small, fast network: these tests check the plumbing, not the accuracy.
TINY = dict(
    backbone="tu-mobilenetv3_small_050",
    encoder_weights="none",
    output_stride=16,
    pointrend=False,
    decoder="upsample",
    batch_size=4,
    lr=1e-3,
    patience=0,
    device="cpu",
)
TINY_ARGS = [
    "--backbone", "tu-mobilenetv3_small_050", "--encoder-weights", "none", "--output-stride", "16", "--no-pointrend", "--decoder",
    "upsample", "--batch-size", "4", "--device", "cpu",
]  # fmt: skip


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def rows(path) -> list[dict]:
    from conftest import read_metrics

    return read_metrics(path)


class Stop(Exception):
    pass


def test_resume_is_equivalent_to_a_straight_run(chip_folder, tmp_path):
    chips = str(chip_folder(n=12))
    # With a weight average (--ema), which the checkpoint must carry across the resume too,
    # and random zooms (--scale-jitter), which must draw the same zooms after it.
    kw = dict(epochs=2, ema=0.9, scale_jitter=0.3, **TINY)
    straight = train(TrainConfig([chips], str(tmp_path / "a"), **kw))
    assert straight.epochs_run == 2 and straight.lr == 1e-3

    def interrupt(row):
        if row["epoch"] == 1:
            raise Stop  # as if the run were killed after epoch 1's files were written

    with pytest.raises(Stop):
        train(
            TrainConfig([chips], str(tmp_path / "b"), **kw),
            on_epoch=interrupt,
        )
    ckpt_path = tmp_path / "b" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)  # no pickled code inside
    assert ckpt["epoch"] == 1 and set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    assert {"model", "optimizer", "scheduler", "scaler", "best_score"} <= set(ckpt)
    assert ckpt["average"]["updates"] == ckpt["history"][-1]["steps"] > 0

    resumed = train(TrainConfig([chips], str(tmp_path / "b"), resume=str(ckpt_path)))
    assert resumed.epochs_run == 2
    assert rows(tmp_path / "a" / "metrics.csv") == rows(tmp_path / "b" / "metrics.csv")
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # Outputs of the straight run: every file, PNGs of the documented sizes, no temp files.
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(OUTPUT_FILES)
    assert png_size(tmp_path / "a" / "curves.png") == (1000, 400)
    assert png_size(tmp_path / "a" / "val_preview.png") == (750, 3 * 250)  # 3 validation chips

    # CLI: continue in place with more epochs (no --overwrite needed).
    res = CliRunner().invoke(
        cli,
        [
            "-q",
            "train",
            chips,
            "-o",
            str(tmp_path / "b"),
            "--resume",
            str(ckpt_path),
            "--epochs",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "epoch 3/3" in res.output
    assert [r["epoch"] for r in rows(tmp_path / "b" / "metrics.csv")] == ["1", "2", "3"]


@pytest.mark.parametrize("ema", [0.9, 0.0])
def test_model_file_holds_the_weight_average(chip_folder, tmp_path, ema):
    chips = str(chip_folder(n=12))
    cfg = TrainConfig([chips], str(tmp_path / "run"), epochs=2, monitor="last", ema=ema, **TINY)
    result = train(cfg)
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    saved = load_file(result.model_path)
    raw = ckpt["model"]
    if not ema:
        assert ckpt["average"] is None
        assert all(torch.equal(saved[k], raw[k]) for k in saved)
        return
    # The model file is the average; the checkpoint keeps the raw weights to train on.
    avg = ckpt["average"]["weights"]
    assert ckpt["average"]["updates"] == result.steps == 4
    assert all(torch.equal(saved[k], avg[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if raw[k].is_floating_point())
    # Validation scored the average: its loss on the validation chips is the one reported.
    assert result.history[-1]["val_loss"] == pytest.approx(_val_loss(cfg, saved), rel=1e-4)


def _val_loss(cfg: TrainConfig, weights: dict) -> float:
    from geopsp.core.runtime import setup, teardown
    from geopsp.train.config import device_defaults, resolve
    from geopsp.train.loop import validate
    from geopsp.train.setup import build_session

    cfg = resolve(TrainConfig(cfg.chips_dirs, str(cfg.output) + "_check", ema=cfg.ema, **TINY))
    rt = setup("cpu")
    try:
        device_defaults(cfg, "cpu", None)
        s = build_session(cfg, None, rt)
        s.plain.load_state_dict(weights)
        return validate(s.plain, s.data.val_loader, s.criterion, len(s.classes), s.accel, rt)[
            "val_loss"
        ]
    finally:
        teardown(rt)


def test_merged_folders_class_weights_and_ignored_classes(chip_folder, tmp_path, caplog):
    a = chip_folder("a", n=8, classes=((0, "background"), (1, "water"), (2, "cloud")))
    b = chip_folder("b", n=8, classes=((0, "background"), (3, "forest")), seed=1)
    cfg = TrainConfig(
        [str(a), str(b)],
        str(tmp_path / "out"),
        epochs=1,
        class_weights="auto",
        ignore_classes=[2],
        **TINY,
    )
    with caplog.at_level(logging.INFO, logger="geopsp"):
        result = train(cfg)
    from geopsp.models.modelfile import read_metadata

    meta = read_metadata(result.model_path)
    # The union of both tables, minus the ignored class; a channel per remaining class.
    assert [c["value"] for c in meta["classes"]] == [0, 1, 3]
    assert meta["architecture"]["num_classes"] == 3
    assert meta["train_config"]["class_weights"] == "auto"
    assert meta["train_config"]["ignore_classes"] == [2]
    # Cloud pixels count nowhere: the validation support is the non-cloud reference pixels.
    from geopsp.chips.folder import open_chip_folders
    from geopsp.train.data import class_pixels, read_chip_label

    cs = open_chip_folders([a, b])
    val = np.concatenate([read_chip_label(c.label).ravel() for c in cs.split("val")])
    support = [r["support"] for r in result.per_class]
    assert support == [int((val == v).sum()) for v in (0, 1, 3)]
    # The logged weights are median-frequency weights of the training pixels.
    classes = [c for c in cs.classes if c.value != 2]
    expect = auto_class_weights(class_pixels(cs.split("train"), classes))
    line = next(
        r.getMessage() for r in caplog.records if r.getMessage().startswith("class weights")
    )
    got = [float(x.split("=")[1]) for x in line.split(": ", 1)[1].split(", ")]
    assert np.allclose(got, expect, rtol=1e-2)


def test_arcgis_folder_trains(arcgis_chips, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(arcgis_chips), "-o", str(out), "--epochs", "1", "--lr", "0.001"]
    res = CliRunner().invoke(cli, args + TINY_ARGS)
    assert res.exit_code == 0, res.output
    assert "Glacier" in res.output and "IoU" in res.output  # per-class table
    from geopsp.models.modelfile import read_metadata

    meta = read_metadata(out / "model.safetensors")
    assert [(c["value"], c["name"]) for c in meta["classes"]] == [(0, "background"), (1, "Glacier")]
    mean = meta["normalization"]["mean"]
    assert len(mean) == 3 and 50 < mean[0] < 255  # measured on the chips (no stats.json)
    assert meta["crs"] == "EPSG:32645" and meta["chip_size"] == 64


def test_lr_auto_batch_clamp_and_reusable_config(chip_folder, tmp_path):
    chips = chip_folder(n=8)
    out = tmp_path / "run"
    tiny = {**TINY, "lr": "auto", "batch_size": 64}
    seen = {}
    result = train(
        TrainConfig([str(chips)], str(out), epochs=1, extra={"lr_test_steps": 12}, **tiny),
        on_start=seen.update,
    )
    assert result.lr_auto and seen["lr_auto"] and seen["lr"] == result.lr
    assert 1e-5 <= result.lr <= 0.1
    assert result.batch_size == 6 == seen["batch_size"]  # clamped to the 6 training chips
    from geopsp.models.modelfile import read_metadata

    meta = read_metadata(out / "model.safetensors")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert isinstance(cfg["lr"], float) and cfg["lr"] == pytest.approx(meta["train_config"]["lr"])
    assert cfg["lr"] == pytest.approx(result.lr) and cfg["batch_size"] == 64
    assert cfg["chips_dirs"] == [str(chips)]
    # The saved options rerun as they are (the learning rate is no longer "auto").
    res = CliRunner().invoke(
        cli, ["train", "-c", str(out / "config.yaml"), "-o", str(tmp_path / "again")]
    )
    assert res.exit_code == 0, res.output
    assert "chosen by the range test" not in res.output
    assert "larger than the 6 training chips" in res.output and "batch 6" in res.output
    assert yaml.safe_load((tmp_path / "again" / "config.yaml").read_text()) == cfg


def test_metadata_is_complete(chip_folder, tmp_path):
    result = train(TrainConfig([str(chip_folder(n=8))], str(tmp_path / "m"), epochs=1, **TINY))
    from geopsp.models.modelfile import read_metadata

    meta = read_metadata(result.model_path)
    assert meta["bands"] == [1, 2, 3] and meta["chip_size"] == 32
    assert meta["crs"] == "EPSG:32631" and meta["resolution"] == [10.0, 10.0]
    stats = json.loads((tmp_path / "chips" / "stats.json").read_text())
    assert meta["normalization"]["mean"] == pytest.approx(stats["mean"])
    assert meta["metrics"]["epoch"] == 1 and 0 <= meta["metrics"]["miou"] <= 1
    assert meta["train_config"]["epochs"] == 1 and meta["train_config"]["seed"] == 0


@pytest.mark.parametrize(
    ("native", "amp", "precision", "warns"),
    [
        (True, None, "bfloat16", False),  # the default on a CPU with bfloat16 instructions
        (False, None, "off", False),  # float32 elsewhere
        (True, False, "off", False),  # --no-amp
        (False, True, "bfloat16", True),  # --amp without the instructions: allowed, warned
    ],
)
def test_cpu_session_precision(
    chip_folder, tmp_path, monkeypatch, caplog, native, amp, precision, warns
):
    from geopsp.core.runtime import setup, teardown
    from geopsp.train.config import device_defaults, resolve
    from geopsp.train.result import amp_name
    from geopsp.train.setup import build_session

    monkeypatch.setattr("geopsp.train.loop.cpu_has_bf16", lambda: native)
    monkeypatch.setattr("geopsp.train.setup.cpu_has_bf16", lambda: native)
    cfg = resolve(TrainConfig([str(chip_folder("a", n=8))], str(tmp_path / "o"), amp=amp, **TINY))
    rt = setup("cpu")
    try:
        device_defaults(cfg, "cpu", None)
        with caplog.at_level(logging.WARNING, logger="geopsp"):
            session = build_session(cfg, None, rt)
    finally:
        teardown(rt)
    assert amp_name(session) == precision
    assert ("no bfloat16 instructions" in caplog.text) is warns
