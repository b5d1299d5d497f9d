"""The model file and last.ckpt are written after the first epoch, at most every SAVE_EVERY_S
seconds, and after the last epoch; the model file always ends with the best epoch's weights."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from geopsp.train import run, saving
from geopsp.train.run import TrainConfig, train
from tests.train.test_train import TINY, rows


def best_is_epoch_2(monkeypatch) -> None:
    """Make epoch 2 the best of the run, whatever the scores."""
    calls = iter([True, True, False, False, False, False])
    monkeypatch.setattr(run, "_better", lambda score, best, monitor: next(calls))


def test_large_files_are_written_at_most_every_interval(chip_folder, tmp_path, monkeypatch):
    chips = str(chip_folder(n=12))
    best_is_epoch_2(monkeypatch)
    every_epoch = tmp_path / "every"
    train(TrainConfig([chips], str(every_epoch), epochs=4, monitor="miou", **TINY))

    best_is_epoch_2(monkeypatch)
    monkeypatch.setattr(saving, "SAVE_EVERY_S", 1e9)  # nothing is due between first and last
    out = tmp_path / "throttled"
    seen = []

    def look(row):
        ckpt = torch.load(out / "last.ckpt", weights_only=True)
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            model_epoch = json.loads(f.metadata()["geopsp"])["metrics"]["epoch"]
        seen.append((row["epoch"], ckpt["epoch"], model_epoch, len(rows(out / "metrics.csv"))))

    result = train(TrainConfig([chips], str(out), epochs=4, monitor="miou", **TINY), on_epoch=look)
    # (epoch, last.ckpt's epoch, the model file's epoch, metrics.csv rows)
    assert seen == [(1, 1, 1, 1), (2, 1, 1, 2), (3, 1, 1, 3), (4, 4, 2, 4)]
    assert result.best_epoch == 2
    # Epoch 2's weights were kept in memory and written at the end: the same file as a run
    # that wrote every epoch.
    wa, wb = load_file(every_epoch / "model.safetensors"), load_file(out / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ca = torch.load(every_epoch / "last.ckpt", weights_only=True)["model"]
    cb = torch.load(out / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    assert rows(every_epoch / "metrics.csv") == rows(out / "metrics.csv")
