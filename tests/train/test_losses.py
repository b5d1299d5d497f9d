"""Losses ignore label 255 everywhere; class weights; the PSPNet total (aux 0.4, points)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geopsp.core.errors import UsageError
from geopsp.train.losses import LOSSES, auto_class_weights, lovasz, make_criterion, total_loss


def _data(seed=0, k=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, k, (2, 8, 8), generator=g)
    target[:, :3] = 255  # a band of ignored pixels
    return logits, target


@pytest.mark.parametrize("name", LOSSES)
def test_ignored_pixels_have_no_effect(name):
    logits, target = _data()
    loss = make_criterion(name)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    # No gradient reaches ignored pixels, and changing their logits changes nothing.
    assert logits.grad[:, :, :3].abs().max() == 0
    other = logits.detach().clone()
    other[:, :, :3] = 100.0
    assert torch.allclose(make_criterion(name)(other, target), loss.detach())


def test_ce_matches_torch_with_weights():
    logits, target = _data()
    w = torch.tensor([0.5, 2.0, 1.0])
    ours = make_criterion("ce", w)(logits, target)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert torch.allclose(ours, ref)


def test_all_ignored_batch_gives_zero_not_nan():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    for name in LOSSES:
        loss = make_criterion(name)(logits, target)
        assert loss.item() == 0.0
        loss.backward()


def test_focal_downweights_easy_pixels():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    easy = torch.zeros(1, 2, 4, 4)
    easy[:, 0] = 5.0
    ce, fo = make_criterion("ce")(easy, target), make_criterion("focal")(easy, target)
    assert fo < ce * 0.01


def test_auto_class_weights_median_frequency():
    w = auto_class_weights(np.array([600, 300, 100, 0]))
    # frequencies 0.6, 0.3, 0.1 -> median 0.3 -> weights 0.5, 1, 3; absent class -> 0
    assert np.allclose(w, [0.5, 1.0, 3.0, 0.0])
    assert np.allclose(auto_class_weights(np.array([5, 5])), [1, 1])
    # Clipped to at most 10 so a nearly absent class cannot dominate.
    assert auto_class_weights(np.array([10**6, 10**6, 1])).max() == pytest.approx(10.0)


def test_sqrt_class_weights_are_the_square_root_of_median_frequency():
    w = auto_class_weights(np.array([600, 300, 100, 0]), power=0.5)
    assert np.allclose(w, [0.5**0.5, 1.0, 3.0**0.5, 0.0])
    # The clip applies after the root: 1e6 / 1 -> 1000 -> 31.6 -> 10.
    assert auto_class_weights(np.array([10**6, 10**6, 1]), power=0.5).max() == pytest.approx(10.0)


def test_weights_raise_the_rare_class_loss():
    logits, target = _data(1, 2)
    plain = make_criterion("ce")(logits, target)
    heavy = make_criterion("ce", torch.tensor([1.0, 10.0]))(logits, target)
    per_class = [
        F.cross_entropy(logits, torch.where(target == c, target, 255), ignore_index=255)
        for c in (0, 1)
    ]
    lo, hi = sorted(float(x) for x in per_class)
    assert lo <= float(plain) <= hi
    assert abs(float(heavy) - float(per_class[1])) < abs(float(plain) - float(per_class[1]))


def test_total_loss_adds_aux_and_points():
    logits, target = _data(2)
    crit = make_criterion("ce")
    aux = torch.randn_like(logits)
    coords = torch.rand(2, 10, 2)
    pl = torch.randn(2, 3, 10)
    main = crit(logits, target)
    only_aux = total_loss(
        {"logits": logits, "aux": aux, "point_logits": None, "point_coords": None}, target, crit
    )
    assert torch.allclose(only_aux, main + 0.4 * crit(aux, target))
    from geopsp.models import point_labels

    pt = F.cross_entropy(pl, point_labels(target, coords), ignore_index=255)
    full = total_loss(
        {"logits": logits, "aux": aux, "point_logits": pl, "point_coords": coords}, target, crit
    )
    assert torch.allclose(full, main + 0.4 * crit(aux, target) + pt)


def test_unknown_loss():
    with pytest.raises(UsageError, match="--loss"):
        make_criterion("hinge")


def test_class_weights_option_picks_the_power(chip_folder):
    from types import SimpleNamespace

    from geopsp.chips.folder import open_chip_folders
    from geopsp.train.data import class_pixels
    from geopsp.train.setup import _class_weight

    cs = open_chip_folders([chip_folder(n=8)])
    train, rt = cs.split("train"), SimpleNamespace(device="cpu")
    pixels = class_pixels(train, cs.classes)
    for option, power in (("auto", 1.0), ("sqrt", 0.5)):
        cfg = SimpleNamespace(class_weights=option)
        got = _class_weight(cfg, train, cs.classes, rt).numpy()
        assert np.allclose(got, auto_class_weights(pixels, power))
    assert _class_weight(SimpleNamespace(class_weights="none"), train, cs.classes, rt) is None
    assert not np.allclose(auto_class_weights(pixels, 1.0), auto_class_weights(pixels, 0.5))


def _mean_iou(pred, target, classes):
    ious = []
    for c in classes:
        inter = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        ious.append(inter / union)
    return sum(ious) / len(ious)


@pytest.mark.parametrize("seed", range(5))
def test_lovasz_of_hard_predictions_is_one_minus_miou(seed):
    # The Lovasz extension is tight: on one-hot probabilities it is the Jaccard loss itself.
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (2, 12, 12), generator=g)
    pred = torch.randint(0, 3, (2, 12, 12), generator=g)
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 50.0
    assert lovasz(logits, target).item() == pytest.approx(1 - _mean_iou(pred, target, range(3)))
    right = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50.0
    assert lovasz(right, target).item() == pytest.approx(0.0, abs=1e-6)


def test_lovasz_skips_absent_classes_and_weighs_present_ones():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1  # classes 0 and 1 present, class 2 absent
    pred = target.clone()
    pred[0, 0, 0] = 0  # one class-1 pixel mapped as class 0
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 50.0
    iou0, iou1 = 8 / 9, 7 / 8
    assert lovasz(logits, target).item() == pytest.approx(1 - (iou0 + iou1) / 2)
    w = torch.tensor([1.0, 3.0, 5.0])  # the absent class's weight must not count
    expected = (1 * (1 - iou0) + 3 * (1 - iou1)) / 4
    assert lovasz(logits, target, w).item() == pytest.approx(expected)


def test_lovasz_gradient_lowers_the_loss():
    logits, target = _data(seed=3)
    crit = make_criterion("ce+lovasz")
    before = crit(logits, target)
    before.backward()
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad / logits.grad.abs().max()
    assert crit(stepped, target) < before


def test_cli_offers_every_loss():
    # The CLI lists the names itself so that `geopsp --help` does not import torch.
    from geopsp.cli.train import command

    option = next(p for p in command.params if p.name == "loss")
    assert tuple(option.type.choices) == LOSSES
