"""Every model's tiny preset learns on the synthetic export: the loss falls and, for heatmap
predictors, the predicted maps move onto the gaze maps (CC rises from near 0 at random init)."""

import pytest
import torch

from tests.train.helpers import tiny_run


def assert_learns(before, after, history, loss_ratio=0.8, cc_gain=0.3, cc_min=0.5):
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert after["loss"] < loss_ratio * before["loss"], (before, after)
    if cc_min is not None:
        assert after["cc"] > before["cc"] + cc_gain, (before, after)
        assert after["cc"] > cc_min, (before, after)
        assert after["kld"] < before["kld"], (before, after)


@pytest.mark.parametrize("name", ["ggcam-resnet50", "ggcam-efficientnetv2s"])
def test_ggcam_learns(name):
    before, after, history, model, _, ds = tiny_run(name)
    assert_learns(before, after, history)
    assert after["ce"] < 0.5 * before["ce"]
    # CAM layer: logits are the spatial means of the CAM plus bias (paper 002, eq. 5)
    model.eval()
    with torch.no_grad():
        out = model(torch.stack([ds[0]["image"], ds[1]["image"]]))
    assert torch.allclose(out["logits"], out["cam"].mean((2, 3)) + model.cam.bias, atol=1e-5)


def test_lanfredi_mil_learns_with_weak_labels():
    before, after, history, model, _, _ = tiny_run(
        "lanfredi-mil", {"data": {"targets": ["disc", "ring", "bar"]}}, unannotated=6
    )
    assert_learns(before, after, history)
    assert after["mil"] < before["mil"]


def test_karargyris_baseline_learns():
    before, after, history, *_ = tiny_run("karargyris-unet")
    assert_learns(before, after, history)


def test_karargyris_guided_backprop_set1_moves_saliency_to_gaze():
    before, after, history, *_ = tiny_run("karargyris-unet", {"loss": {"variant": "set1", "generator": "guided"}, "train": {"epochs": 6}})
    assert_learns(before, after, history, cc_gain=0.2, cc_min=0.3)


@pytest.mark.parametrize("variant,generator", [("set2", "deconvnet"), ("set3", "deconvnet")])
def test_karargyris_other_sets_train(variant, generator):
    before, after, history, *_ = tiny_run("karargyris-unet", {"loss": {"variant": variant, "generator": generator}, "train": {"epochs": 4}}, n_cases=16)
    assert_learns(before, after, history, cc_min=None)
