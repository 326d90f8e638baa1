"""Each loss against a hand-computed value."""

import math

import pytest
import torch

from gazeprep.train import losses as L


def test_brn_lower_bound_matches_paper_numbers():
    # paper 004, 2.2.1: the balanced range keeps [0.98, 1] when n_t = 256
    assert L.brn_lower_bound(256) == pytest.approx(0.98, abs=2e-4)
    # a product of n factors at the lower bound is the base itself
    for n in (1, 4, 1024):
        assert L.brn_lower_bound(n) ** n == pytest.approx(L.BRN_BASE, rel=1e-9)


def test_mil_image_probability_2x2_by_hand():
    g = torch.tensor([[[[0.0, 0.0], [0.0, math.log(3.0)]]]])  # sigmoids 0.5, 0.5, 0.5, 0.75
    # without normalisation: C = 1 - 0.5 * 0.5 * 0.5 * 0.25
    assert float(L.mil_image_probability(g, "none")) == pytest.approx(1 - 0.5**3 * 0.25, abs=1e-6)
    lo = L.BRN_BASE**0.25
    f = lambda s: lo + (1 - lo) * s  # noqa: E731
    want = 1 - f(0.5) ** 3 * f(0.25)
    assert float(L.mil_image_probability(g, "brn")) == pytest.approx(want, abs=1e-6)


def test_mil_loss_2x2_grid_all_three_cases():
    # one label, 2x2 grid with sigmoids [0.5, 0.5, 0.5, 0.75]
    g = torch.tensor([[[[0.0, 0.0], [0.0, math.log(3.0)]]]]).repeat(3, 1, 1, 1)
    cells = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    cells[0, 0, 1, 1] = True  # annotated: evidence only in the last cell
    annotated = torch.tensor([True, False, False])
    labels = torch.tensor([[1.0], [1.0], [0.0]])
    lo = L.BRN_BASE**0.25
    f = lambda s: lo + (1 - lo) * s  # noqa: E731
    # eq. 2 under BRN: each product has its own n_t (004's p_box with balancing): the evidence product
    # has 1 factor (range [BASE, 1]), the other product 3 (range [BASE^(1/3), 1]), not 4 for both
    lo_p, lo_n = L.BRN_BASE, L.BRN_BASE ** (1 / 3)
    l_a = -(
        3 * math.log(lo_n + (1 - lo_n) * 0.5) + math.log(lo_p + (1 - lo_p) * 0.75)
    )  # three negatives (1-s=.5), one positive (s=.75)
    prod_neg = f(0.5) ** 3 * f(0.25)
    l_up = -math.log(1 - prod_neg)  # eq. 3
    l_un = -math.log(prod_neg)  # eq. 4
    want = (3.0 * l_a + l_up + l_un) / 3  # eq. 5, lambda_A = 3, mean over images
    got = L.mil_loss(g, cells, annotated, labels, lambda_a=3.0, normalization="brn")
    assert float(got) == pytest.approx(want, rel=1e-5)
    # unknown labels of unannotated images are ignored
    got2 = L.mil_loss(g, cells, annotated, torch.tensor([[1.0], [float("nan")], [0.0]]), 3.0, "brn")
    assert float(got2) == pytest.approx((3.0 * l_a + l_un) / 3, rel=1e-5)


def test_multitask_bce_only_positive_annotated_channels():
    logits = torch.zeros(2, 2, 1, 2)
    targets = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]])
    pos = torch.tensor([[True, False], [False, False]])
    # channel (0, 0): mean BCE at p = 0.5 is log 2; divided by the batch size 2
    assert float(L.multitask_heatmap_bce(logits, targets, pos)) == pytest.approx(math.log(2) / 2, rel=1e-6)


def test_selective_mse_supervises_true_class_only():
    cam = torch.zeros(1, 2, 1, 2)
    cam[0, 1] = torch.tensor([[0.0, math.log(3.0)]])  # sigmoid -> 0.5, 0.75 with alpha = 1
    cam[0, 0] = 100.0  # other class: ignored
    target = torch.tensor([[[1.0, 0.0]]])
    got = L.selective_mse(cam, torch.tensor(1.0), target, torch.tensor([1]))
    assert float(got) == pytest.approx(((0.5 - 1) ** 2 + 0.75**2) / 2, rel=1e-6)
    got_a = L.selective_mse(cam, torch.tensor(0.0), target, torch.tensor([1]))  # alpha 0: sigmoid 0.5 everywhere
    assert float(got_a) == pytest.approx((0.25 + 0.25) / 2, rel=1e-6)


def test_uncertainty_weighting_eq11():
    w = L.UncertaintyWeighting(sigma_sm=0.5, sigma_ce=2.0)
    got = w(torch.tensor(0.1), torch.tensor(2.0)).detach()
    want = 0.1 / (2 * 0.25) + 2.0 / 4.0 + math.log(1.5) + math.log(3.0)
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(got) >= 0  # the paper's point: non-negative


def test_saliency_kl_by_hand():
    logits = torch.log(torch.tensor([[[0.25, 0.75]]]))  # softmax -> 0.25, 0.75
    target = torch.tensor([[[2.0, 2.0]]])  # -> 0.5, 0.5
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(L.saliency_kl(logits, target)) == pytest.approx(want, rel=1e-6)
    assert float(L.saliency_kl(logits, torch.tensor([[[0.25, 0.75]]]))) == pytest.approx(0.0, abs=1e-6)


def test_dice_and_logit_l2_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0, 1.0]])
    m = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # 1 - (2 * 1.5 + 1) / (2 + 2 + 1)
    assert float(L.dice_loss(p, m)) == pytest.approx(1 - 4 / 5, rel=1e-6)
    logits = torch.tensor([[0.0, 1.0]])
    target = torch.tensor([[0.5, 0.5]])  # logit 0
    assert float(L.logit_l2(logits, target)) == pytest.approx(0.5, rel=1e-6)
    total, parts = L.iai_heatmap_loss(torch.zeros(1, 2, 2), torch.tensor([[[0.5, 0.0], [0.0, 0.0]]]))
    mask_bce = math.log(2)  # p = 0.5 everywhere
    l2 = (0 + 3 * math.log(1e-4 / (1 - 1e-4)) ** 2) / 4
    dice = 1 - (2 * 0.5 + 1) / (2.0 + 1 + 1)
    assert parts["bce"] == pytest.approx(mask_bce, rel=1e-5)
    assert parts["dice"] == pytest.approx(dice, rel=1e-5)
    assert float(total) == pytest.approx(l2 + mask_bce + dice, rel=1e-4)


def test_triplet_batch_hard_by_hand():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchors: 0 -> pos 1 (d=1), neg 2 (d=3): relu(1-3+1)=0; 1 -> pos 0 (1), neg 2 (2): 0
    # 2 -> pos 3 (2), neg 1 (2): 1; 3 -> pos 2 (2), neg 1 (4): 0
    assert float(L.triplet_loss(emb, labels, margin=1.0)) == pytest.approx(0.25, rel=1e-6)
