"""``classify --adapt-priors``: the area's class mix, the reweighting, the model's class prior."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geopsp.classify.fingerprint import classify_fingerprint
from geopsp.classify.predictor import Predictor
from geopsp.classify.priors import area_prior, prior_weights, reweighted
from geopsp.classify.run import ClassifyOptions, classify_raster
from geopsp.classify.tiling import TileGrid
from geopsp.cli.main import cli
from geopsp.core.classes import ClassInfo

CLASSES = [ClassInfo(0, "land", (0, 120, 0)), ClassInfo(1, "water", (0, 0, 255))]


def _raster(path, arr):
    prof = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                dtype=arr.dtype, crs="EPSG:32632", transform=from_origin(500000, 4000000, 2, 2))  # fmt: skip
    with rasterio.open(path, "w", **prof) as d:
        d.write(arr)
    return str(path)


def _identity():
    """A "model" whose probabilities are its input bands / 255 (see test_inference.py)."""
    return Predictor(lambda x: x, CLASSES, [0.0, 0.0], [255.0, 255.0], activation="none")


def _uniform(path, land: int, water: int, shape=(90, 130)):
    """A 2-band raster whose "probabilities" are land / 255 and water / 255 everywhere."""
    return _raster(
        path, np.stack([np.full(shape, land, np.uint8), np.full(shape, water, np.uint8)])
    )


def test_weights_move_probabilities_from_the_training_mix_to_the_area_mix():
    w = prior_weights(np.array([0.8, 0.2]), np.array([0.6, 0.4]))
    np.testing.assert_allclose(w, [0.75, 2.0])
    probs = np.array([[0.6, 0.9], [0.4, 0.1]], np.float32).reshape(1, 2, 1, 2)
    out = reweighted(lambda x: x.copy(), w)(probs)
    np.testing.assert_allclose(out[0, :, 0, 0], [0.36, 0.64], rtol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    assert out[0, 1, 0, 1] > 0.1  # every pixel is reweighted, not set
    # A class the model never predicted in training keeps a finite weight.
    assert np.isfinite(prior_weights(np.array([1.0, 0.0]), np.array([0.5, 0.5]))).all()


def test_area_prior_is_the_mean_over_the_valid_pixels_of_spread_windows():
    grid = TileGrid(200, 300, 64, 8, 128)
    rng = np.random.default_rng(0)
    probs = {t: rng.uniform(size=(2, 64, 64)).astype(np.float32) for t in grid.tiles()}
    valid = {t: rng.uniform(size=(64, 64)) > 0.3 for t in grid.tiles()}
    calls = []

    def forward(x):
        calls.append(len(x))
        return x

    got = area_prior(grid, lambda t: (probs[t], valid[t]), forward, batch_size=3, windows=5)
    picks = [grid.tile_range(int(k), int(k) + 1)[0] for k in np.linspace(0, len(grid) - 1, 5)]
    total = sum((probs[t] * valid[t]).sum(axis=(1, 2)) for t in picks)
    np.testing.assert_allclose(got, total / total.sum())
    assert sum(calls) == 5 and max(calls) <= 3
    nodata = area_prior(grid, lambda t: (probs[t], np.zeros((64, 64), bool)), forward, 4)
    assert nodata is None


@pytest.mark.parametrize("adapt", [False, True])
def test_adapt_priors_changes_the_map_as_the_mixes_say(tmp_path, adapt):
    # Every pixel of the input: land 0.6, water 0.4; of the training raster: land 0.8. The
    # model's 0.6 for land is weaker evidence than it looks: in this input water wins.
    src = _uniform(tmp_path / "in.tif", 153, 102)
    train = _uniform(tmp_path / "train.tif", 204, 51, shape=(70, 50))
    opts = ClassifyOptions(tile_size=64, overlap=8, overwrite=True, progress=False,
                           probabilities=str(tmp_path / "p.tif"),
                           adapt_priors=train if adapt else None)  # fmt: skip
    summary = classify_raster(src, tmp_path / "c.tif", _identity(), opts)
    with rasterio.open(tmp_path / "p.tif") as d:
        water = d.read(2)
    if adapt:  # weights 0.6 / 0.8 and 0.4 / 0.2: water 0.8 / (0.45 + 0.8) = 0.64
        assert summary.class_pixels == {0: 0, 1: 90 * 130}
        assert np.all(water == round(0.64 * 255))
    else:
        assert summary.class_pixels == {0: 90 * 130, 1: 0}
        assert np.all(water == 102)


def test_the_same_mix_leaves_the_map_unchanged(tmp_path):
    rng = np.random.default_rng(1)
    land = rng.integers(0, 256, size=(120, 110), dtype=np.uint8)
    src = _raster(tmp_path / "in.tif", np.stack([land, 255 - land]))
    maps = []
    for adapt in (None, src):
        opts = ClassifyOptions(tile_size=64, overlap=8, overwrite=True, progress=False,
                               adapt_priors=adapt)  # fmt: skip
        classify_raster(src, tmp_path / f"c_{adapt is None}.tif", _identity(), opts)
        with rasterio.open(tmp_path / f"c_{adapt is None}.tif") as d:
            maps.append(d.read(1))
    np.testing.assert_array_equal(maps[0], maps[1])


def test_the_training_raster_is_part_of_the_resume_fingerprint(tmp_path):
    src = _uniform(tmp_path / "in.tif", 100, 100, shape=(40, 40))
    train = _uniform(tmp_path / "train.tif", 150, 50, shape=(40, 40))
    grid = TileGrid(40, 40, 32, 4, 64)
    plain = classify_fingerprint(src, _identity(), grid, None, ClassifyOptions())
    adapted = classify_fingerprint(
        src, _identity(), grid, None, ClassifyOptions(adapt_priors=train)
    )
    assert "adapt_priors" not in plain  # fingerprints of earlier runs stay valid
    assert adapted["adapt_priors"]["input"].endswith("train.tif")


def test_cli_adapt_priors(everest_model, everest, tmp_path):
    from .test_classify_cli import crop

    area = crop(everest["image"], tmp_path / "area.tif", 200)
    out = tmp_path / "adapted.tif"
    r = CliRunner().invoke(cli, ["-v", "classify", str(area), "-m", str(everest_model),
                                 "-o", str(out), "--adapt-priors", str(everest["image"])])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "class mix of area.tif (training raster)" in r.output
    with rasterio.open(out) as d, rasterio.open(area) as s:
        assert d.transform == s.transform and d.crs == s.crs
        assert set(np.unique(d.read(1))) <= {0, 1}


@pytest.mark.parametrize(
    ("training", "code", "words"),
    [("missing.tif", 1, "no such file"), ("one_band.tif", 2, "has 1 band(s)")],
)
def test_cli_adapt_priors_errors(everest_model, everest, tmp_path, training, code, words):
    if training == "one_band.tif":
        _raster(tmp_path / training, np.full((1, 40, 40), 7, np.uint8))
    out = tmp_path / "c.tif"
    r = CliRunner().invoke(cli, ["-q", "classify", str(everest["image"]), "-m", str(everest_model),
                                 "-o", str(out), "--adapt-priors", str(tmp_path / training)])  # fmt: skip
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: --adapt-priors:") and words in lines[0]
    assert "-b/--bands" not in lines[0]  # -b is the input's option
    assert not out.exists()


def test_inputs_of_one_run_share_the_training_mix(tmp_path, monkeypatch):
    # Several inputs, one training raster: it is planned and measured once, and every input
    # is still weighted by its own mix (a land-heavy and a water-heavy input).
    from geopsp.classify import reader as reader_module
    from geopsp.classify.run import plan_jobs, run_raster
    from geopsp.core.runtime import Runtime

    opened = []

    class CountingReader(reader_module.TileReader):
        def __init__(self, address, *args, **kwargs):
            opened.append(address)
            super().__init__(address, *args, **kwargs)

    monkeypatch.setattr(reader_module, "TileReader", CountingReader)  # the mixes' reader only
    train = _uniform(tmp_path / "train.tif", 204, 51, shape=(70, 50))
    inputs = [_uniform(tmp_path / "a.tif", 153, 102), _uniform(tmp_path / "b.tif", 230, 25)]
    opts = ClassifyOptions(tile_size=64, overlap=8, overwrite=True, progress=False,
                           adapt_priors=train)  # fmt: skip
    jobs = plan_jobs(inputs, str(tmp_path / "out"), _identity(), opts, Runtime())
    assert jobs[0].training is jobs[1].training
    summaries = [run_raster(job, _identity(), Runtime()) for job in jobs]
    assert opened == [train]
    np.testing.assert_allclose(jobs[0].training.mix, [0.8, 0.2], atol=1e-6)
    # a: land 0.6 against 0.8 in training turns to water; b: land 0.9 stays land
    assert summaries[0].class_pixels == {0: 0, 1: 90 * 130}
    assert summaries[1].class_pixels == {0: 90 * 130, 1: 0}
