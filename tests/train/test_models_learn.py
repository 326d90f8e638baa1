"""Every model's tiny preset learns on the synthetic export: the loss falls and, for heatmap
predictors, the predicted maps move onto the gaze maps (CC rises from near 0 at random init)."""

import pytest
import torch
from _train_helpers import tiny_run


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
    before, after, history, *_ = tiny_run(
        "karargyris-unet", {"loss": {"variant": "set1", "generator": "guided"}, "train": {"epochs": 6}}
    )
    assert_learns(before, after, history, cc_gain=0.2, cc_min=0.3)


@pytest.mark.parametrize("variant,generator", [("set2", "deconvnet"), ("set3", "deconvnet")])
def test_karargyris_other_sets_train(variant, generator):
    before, after, history, *_ = tiny_run(
        "karargyris-unet", {"loss": {"variant": variant, "generator": generator}, "train": {"epochs": 4}}, n_cases=16
    )
    assert_learns(before, after, history, cc_min=None)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_qiu_three_stage_cooperative_training():
    from _train_helpers import tiny_run

    before, after, history, model, objective, ds = tiny_run(
        "qiu-dual-unet", {"train": {"stages": ["pretrain", "classify"], "epochs": 3}}
    )
    by = {s: [r for r in history if r["stage"] == s] for s in ("pretrain", "classify")}
    assert by["pretrain"][-1]["train_triplet"] < by["pretrain"][0]["train_triplet"]
    assert by["classify"][-1]["train_ce"] < by["classify"][0]["train_ce"]
    from gazeprep.train.loop import TrainConfig, evaluate, fit

    dn = _snapshot(model.densenet)
    model.set_stage("saliency")
    tc = TrainConfig(epochs=4, batch_size=8, lr=3e-3, progress=False, recalibrate_bn=True, stages=["saliency"])
    sal_before = evaluate(model, objective, ds, tc)
    fit(model, objective, ds, tc)
    sal_after = evaluate(model, objective, ds, tc)
    assert _same(dn, _snapshot(model.densenet))  # DenseNet frozen in stage 2 (weights and BN statistics)
    assert sal_after["kl"] < 0.7 * sal_before["kl"]
    assert sal_after["cc"] > sal_before["cc"] + 0.3 and sal_after["cc"] > 0.5
    unet = _snapshot(model.unet)
    model.set_stage("fusion")
    tc = TrainConfig(epochs=3, batch_size=8, lr=3e-3, progress=False, recalibrate_bn=True, stages=["fusion"])
    ce_before = evaluate(model, objective, ds, tc)["ce"]
    fit(model, objective, ds, tc)
    assert _same(unet, _snapshot(model.unet)) and _same(dn, _snapshot(model.densenet))
    assert evaluate(model, objective, ds, tc)["ce"] < 0.8 * ce_before


def test_iai_adapter_heatmap_stage_learns_and_classifier_stage_is_isolated():
    from _train_helpers import tiny_run

    before, after, history, model, objective, ds = tiny_run(
        "iai-adapter", {"train": {"stages": ["heatmap"], "epochs": 6}}
    )
    # a smooth random map already correlates with the centred targets (CC ~0.5 at init), so the margin
    # is on KLD: the predicted distribution must concentrate on the gaze maps
    assert_learns(before, after, history, loss_ratio=0.5, cc_gain=0.05, cc_min=0.6)
    assert after["kld"] < 0.6 * before["kld"], (before, after)
    from gazeprep.train.loop import TrainConfig, fit

    adapter, clip = _snapshot(model.adapter), _snapshot(model.clip)
    alpha = model.alpha.detach().clone()
    head = _snapshot(model.classifier)
    hist = fit(
        model, objective, ds, TrainConfig(epochs=2, batch_size=8, lr=1e-2, progress=False, stages=["classifier"])
    )
    assert all(torch.isfinite(torch.tensor(r["train_ce"])) for r in hist)
    assert (
        _same(adapter, _snapshot(model.adapter))
        and _same(clip, _snapshot(model.clip))
        and torch.equal(alpha, model.alpha)
    )
    assert not _same(head, _snapshot(model.classifier))
    maps = model.predict_heatmaps(ds[0]["image"][None])
    assert maps.shape == (1, 1, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_gradcam_baseline_learns_and_explains():
    from _train_helpers import tiny_run

    before, after, history, model, _, ds = tiny_run("gradcam-baseline")
    assert_learns(before, after, history, loss_ratio=0.5, cc_min=None)
    img = torch.stack([ds[i]["image"] for i in range(3)])
    for method in ("gradcam", "gradcam++", "eigencam"):
        model.method = method
        maps = model.predict_heatmaps(img)
        assert maps.shape == (3, 1, 64, 64)
        assert torch.isfinite(maps).all() and float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-5


def _iai_classifier_run(mask: str, seed: int = 0):
    """Train 000's tiny preset (``mask='predicted'``: heatmap stage, then classifier stage on the image
    masked by the predicted map; ``'target'``: classifier stage only, masked by the gaze map) on 48
    synthetic cases; evaluate the classifier at init and after training on them and on 48 held-out cases."""
    from _train_helpers import tiny_setup

    from gazeprep.train.loop import evaluate, fit

    over = {"loss": {"classifier_mask": mask}}
    if mask == "target":
        over["train"] = {"stages": ["classifier"]}
    model, objective, ds, tc, make_dataset = tiny_setup("iai-adapter", over, n_cases=48, seed=seed)
    held_out = make_dataset(48, 100 + seed)
    model.set_stage("classifier")
    before = {"train": evaluate(model, objective, ds, tc), "held_out": evaluate(model, objective, held_out, tc)}
    history = fit(model, objective, ds, tc)
    after = {"train": evaluate(model, objective, ds, tc), "held_out": evaluate(model, objective, held_out, tc)}
    return before, after, [r for r in history if r["stage"] == "classifier"], model, ds


def _assert_classifier_learns(before, after, history):
    # the class is the object's shape, inside the gaze map: a frozen encoder + trained linear layer must
    # find it on images it has not seen. Chance accuracy is 1/3; a random head scores >= 0.6 on 48
    # held-out cases with probability ~1e-4.
    assert history[-1]["train_ce"] < 0.8 * history[0]["train_ce"], history
    assert after["train"]["ce"] < 0.7 * before["train"]["ce"], (before, after)
    assert after["train"]["acc"] >= 0.7, (before, after)
    assert after["held_out"]["ce"] < 0.85 * before["held_out"]["ce"], (before, after)
    assert after["held_out"]["acc"] >= 0.6 and after["held_out"]["acc"] > before["held_out"]["acc"] + 0.25, (
        before,
        after,
    )


def test_iai_masked_classifier_learns_from_predicted_heatmaps():
    """Paper 000 pipeline: heatmap stage, then the classifier on image x predicted map (section 3.2)."""
    before, after, history, model, _ = _iai_classifier_run("predicted")
    _assert_classifier_learns(before, after, history)


def test_iai_masked_classifier_learns_from_gaze_maps_and_its_norm_is_the_data_mean():
    """Table 8's ablation (ground-truth gaze map as the mask); the tiny preset's parameter-free norm in
    front of the linear layer holds the exact mean of the frozen embeddings of the training images."""
    before, after, history, model, ds = _iai_classifier_run("target")
    _assert_classifier_learns(before, after, history)
    from gazeprep.train.loop import _collate

    norm, linear = model.classifier
    assert not any(True for _ in norm.parameters())  # no affine: only the linear layer is trained
    batch = _collate([ds[i] for i in range(len(ds))])
    model.eval()
    with torch.no_grad():
        emb = model.clip.encode_image((batch["image"] * batch["heatmaps"][:, :1] - model.mean) / model.std)
        logits = model(batch["image"], mask=batch["heatmaps"][:, :1])["logits"]
    # 6 epochs of 6 equal batches: the cumulative average of batch means is the data mean
    assert torch.allclose(norm.running_mean, emb.mean(0), atol=1e-5)
    expect = linear((emb - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps))
    assert torch.allclose(logits, expect, atol=1e-5)  # eval mode: a fixed affine map, then the linear layer


def test_iai_objective_rejects_unknown_classifier_mask():
    from gazeprep.errors import GazeprepError
    from gazeprep.train.models.iai import IAIObjective

    with pytest.raises(GazeprepError, match="classifier_mask"):
        IAIObjective(classifier_mask="gaze")
