"""The papers' loss arithmetic as their code computes it, against hand-computed values: GG-CAM's
log-parametrised uncertainty weighting and channel-mean CAM (002), 004's balanced range normalisation
per product, its code's L_I / L_T normalisation and its decoder."""

import math

import pytest
import torch

from gazeprep.train import losses as L

# -- 002 GG-CAM -------------------------------------------------------------------------------------


def test_uncertainty_weighting_in_log_space_by_hand():
    # the code's initial values for ResNet-50: lg_sigma_d = -23, lg_sigma_c = 7
    w = L.UncertaintyWeighting(lg_sigma_sm=-23.0, lg_sigma_ce=7.0)
    l_sm, l_ce = torch.tensor(0.02), torch.tensor(1.1)
    got = w(l_sm, l_ce)
    want = 0.02 * math.exp(46) / 2 + 1.1 * math.exp(-14) + math.log1p(math.exp(-23)) + math.log1p(math.exp(7))
    assert float(got.detach()) == pytest.approx(want, rel=1e-5)
    got.backward()
    # d/d lg_sm of L_sm e^{-2 lg} / 2 + ln(1 + e^{lg}) = -L_sm e^{-2 lg} + sigma / (sigma + 1)
    g = -0.02 * math.exp(46) + math.exp(-23) / (1 + math.exp(-23))
    assert float(w.lg_sigma_sm.grad) == pytest.approx(g, rel=1e-5)
    assert math.isfinite(float(w.lg_sigma_sm.grad))


def test_log_sigma_moves_under_adam_where_sigma_itself_cannot():
    """The paper's sigma_sm = 2e-9 learnt directly: the gradient -L/sigma^3 ~ 1e25 squares to inf in
    Adam's float32 second moment, so the step is 0 and sigma never moves. In log space Adam's first
    step moves lg_sigma by the learning rate (m / sqrt(v) = sign of the gradient)."""
    sigma = torch.nn.Parameter(torch.tensor(2e-9))
    opt = torch.optim.Adam([sigma], lr=7e-3)
    loss = torch.tensor(0.02) / (2 * sigma**2) + torch.log(sigma + 1)
    loss.backward()
    assert float(sigma.grad) ** 2 > 3.4e38  # beyond float32: Adam's second moment becomes inf
    opt.step()
    assert float(sigma.detach()) == pytest.approx(2e-9, rel=1e-6)  # stuck

    w = L.UncertaintyWeighting(lg_sigma_sm=math.log(2e-9), lg_sigma_ce=0.0)
    opt = torch.optim.Adam(w.parameters(), lr=7e-3)
    before = float(w.lg_sigma_sm.detach())
    w(torch.tensor(0.02), torch.tensor(1.0)).backward()
    opt.step()
    assert float(w.lg_sigma_sm.detach()) - before == pytest.approx(
        7e-3, rel=1e-3
    )  # sigma_sm grows, as the paper intends


def test_cam_layer_mean_is_the_sum_over_features_divided_by_g():
    from gazeprep.train.models.ggcam import CAMLayer

    torch.manual_seed(0)
    a = torch.rand(2, 6, 3, 4)
    s, m = CAMLayer(6, 3, "sum"), CAMLayer(6, 3, "mean")
    m.load_state_dict(s.state_dict())
    y_s, cam_s = s(a)
    y_m, cam_m = m(a)
    assert torch.allclose(cam_m, cam_s / 6, atol=1e-6)
    assert torch.allclose(y_m, cam_m.mean((2, 3)) + m.bias, atol=1e-6)  # eq. 5: spatial mean plus bias
    # one CAM value by hand: sum_k w_ck a_k / G
    assert float(cam_m[1, 2, 0, 1]) == pytest.approx(float((m.weight[2] * a[1, :, 0, 1]).sum()) / 6, rel=1e-5)


# -- 004 ----------------------------------------------------------------------------------------------


def _grid():
    # one image, one label, 2x2 grid with sigmoids [0.5, 0.5, 0.5, 0.75]
    return torch.tensor([[[[0.0, 0.0], [0.0, math.log(3.0)]]]])


def test_brn_counts_each_product_of_eq2_separately():
    g = _grid()
    cells = torch.tensor([[[[True, True], [False, False]]]])  # |B| = 2, |G - B| = 2
    lo2 = L.BRN_BASE**0.5
    # evidence product over cells 0, 1 (s = .5, .5), the other over cells 2, 3 (1 - s = .5, .25), both n_t = 2
    want = 2 * math.log(lo2 + (1 - lo2) * 0.5) + math.log(lo2 + (1 - lo2) * 0.5) + math.log(lo2 + (1 - lo2) * 0.25)
    assert float(L.annotated_log_likelihood(g, cells, "brn")[0, 0]) == pytest.approx(want, rel=1e-6)
    assert float(L.annotated_log_likelihood(g, cells, "brn_code")[0, 0]) == pytest.approx(want, rel=1e-6)
    # no evidence: the product over B is empty (1) and the other product has all 4 factors
    none = torch.zeros_like(cells)
    lo4 = L.BRN_BASE**0.25
    want0 = 3 * math.log(lo4 + (1 - lo4) * 0.5) + math.log(lo4 + (1 - lo4) * 0.25)
    assert float(L.annotated_log_likelihood(g, none, "brn")[0, 0]) == pytest.approx(want0, rel=1e-6)
    # Li et al.: [0.98, 1] for every factor whatever the counts
    li = lambda p: 0.98 + 0.02 * p  # noqa: E731
    want_li = 2 * math.log(li(0.5)) + math.log(li(0.5)) + math.log(li(0.25))
    assert float(L.annotated_log_likelihood(g, cells, "li")[0, 0]) == pytest.approx(want_li, rel=1e-6)


def test_image_probability_of_the_code_keeps_li_range():
    # 004's forward_inference calls normalize_p_ without a count: [0.98, 1] even with balancing on
    g = _grid()
    li = lambda p: 0.98 + 0.02 * p  # noqa: E731
    want = 1 - li(0.5) ** 3 * li(0.25)
    assert float(L.mil_image_probability(g, "brn_code")) == pytest.approx(want, rel=1e-6)
    lo4 = L.BRN_BASE**0.25
    assert float(L.mil_image_probability(g, "brn")) == pytest.approx(
        1 - (lo4 + (1 - lo4) * 0.5) ** 3 * (lo4 + (1 - lo4) * 0.25), rel=1e-6
    )


def test_mil_loss_sum_reduction_is_batch_times_mean():
    torch.manual_seed(1)
    g = torch.randn(3, 2, 4, 4)
    cells = torch.rand(3, 2, 4, 4) > 0.7
    ann = torch.tensor([True, False, False])
    lab = torch.tensor([[1.0, 0.0], [1.0, float("nan")], [0.0, 0.0]])
    mean = L.mil_loss(g, cells, ann, lab, 3.0, "brn_code", "mean")
    total = L.mil_loss(g, cells, ann, lab, 3.0, "brn_code", "sum")
    assert float(total) == pytest.approx(3 * float(mean), rel=1e-6)


def test_decoder_loss_code_normalisation_by_hand():
    """004's loss_unet: BCEWithLogitsLoss()(d * 1_{A+}, t) is the mean over all B*K*H*W elements; a
    masked element has logit 0 and costs log 2. So L_T(code) = L_T(paper) / K + log 2 * (masked share),
    and with L_I summed over B images the code weighs L_T about B * K times less than eqs. 5-7 read
    literally (the ratio the issue measured)."""
    d = torch.tensor([[[[0.0, math.log(3.0)]], [[2.0, -1.0]]], [[[1.0, 1.0]], [[0.5, 0.0]]]])  # (B=2, K=2, 1, 2)
    t = torch.tensor([[[[1.0, 0.0]], [[0.3, 0.7]]], [[[0.0, 0.0]], [[1.0, 1.0]]]])
    pos = torch.tensor([[True, False], [False, False]])  # one channel of one image
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))  # noqa: E731
    ch = (bce(0.0, 1.0) + bce(math.log(3.0), 0.0)) / 2  # mean over that channel's 2 pixels
    paper = ch / 2  # eq. 6: sum over labels, mean over the 2 images
    assert float(L.multitask_heatmap_bce(d, t, pos, "paper")) == pytest.approx(paper, rel=1e-6)
    code = (2 * ch + 6 * math.log(2)) / 8  # 8 elements, 6 of them masked
    assert float(L.multitask_heatmap_bce(d, t, pos, "code")) == pytest.approx(code, rel=1e-6)
    assert code == pytest.approx(paper / 2 + math.log(2) * 6 / 8)  # = paper / K + constant
    # masked logits carry no gradient
    dd = d.clone().requires_grad_(True)
    L.multitask_heatmap_bce(dd, t, pos, "code").backward()
    assert float(dd.grad[~pos].abs().sum()) == 0.0 and float(dd.grad[pos].abs().sum()) > 0
    # nothing positive and annotated: 0, as the code's `if ... .sum() > 0 else 0.`
    assert float(L.multitask_heatmap_bce(d, t, torch.zeros_like(pos), "code")) == 0.0


def test_lanfredi_decoder_is_fed_by_block5_with_the_codes_widths():
    from gazeprep.train.models.lanfredi import LanfrediMIL

    torch.manual_seed(0)
    m = LanfrediMIL([f"l{i}" for i in range(10)], backbone="test_resnet", hidden=512)
    n = sum(p.numel() for p in m.decoder.parameters())
    # 512->128 conv3x3 (+bias), BN(128); 128->64, BN(64); 64->10, BN(10)
    want = (512 * 128 * 9 + 128) + 2 * 128 + (128 * 64 * 9 + 64) + 2 * 64 + (64 * 10 * 9 + 10) + 2 * 10
    assert n == want == 669_918
    convs = [x for x in m.decoder if isinstance(x, torch.nn.Conv2d)]
    assert [c.in_channels for c in convs] == [512, 128, 64] and convs[-1].out_channels == 10
    assert all(b.momentum == 0.01 for b in m.decoder if isinstance(b, torch.nn.BatchNorm2d))
    m.eval()
    with torch.no_grad():
        out = m(torch.rand(1, 3, 128, 128))
    g = out["grid_logits"].shape[-1]
    assert out["decoder_logits"].shape == (1, 10, 8 * g, 8 * g)  # three x2 upsamplings of Block 5's grid
