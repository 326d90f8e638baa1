"""The trainer's per-epoch map metrics: the evaluation area's CC/KLD (one implementation), the
004 IoU, and refusal of non-finite maps with one line naming the map."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from gazeprep.errors import GazeprepError  # noqa: E402
from gazeprep.evaluate import metrics as EM  # noqa: E402
from gazeprep.train import metrics as TM  # noqa: E402


def test_cc_and_kld_are_the_evaluation_functions_by_hand():
    # map 0: target = 2 * pred + 1 -> CC 1; map 1: pred = target -> KLD 0
    pred = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 1.0], [2.0, 4.0]]])
    target = torch.tensor([[[1.0, 3.0], [5.0, 7.0]], [[1.0, 1.0], [2.0, 4.0]]])
    got = TM.map_metrics(pred, target)
    assert got["cc"] == pytest.approx((1.0 + 1.0) / 2)
    # map 0 KLD (MIT): P = [0, 1, 2, 3] / 6, G = [1, 3, 5, 7] / 16, sum G log(eps + G / (P + eps))
    P, G = np.array([0, 1, 2, 3]) / 6, np.array([1, 3, 5, 7]) / 16
    k0 = float(np.sum(G * np.log(EM.EPS_MATLAB + G / (P + EM.EPS_MATLAB))))
    assert got["kld"] == pytest.approx((k0 + 0.0) / 2, rel=1e-9)
    # iou@0.15: map 0 pred > .15 -> 3 px, target -> 4 px, inter 3 -> 3/4; map 1 -> 1
    assert got["iou"] == pytest.approx((0.75 + 1.0) / 2)


def test_undefined_cc_is_left_out_and_all_undefined_is_nan():
    pred = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.stack([torch.ones(4, 4), pred[1] * 3])  # map 0: constant target, CC undefined
    got = TM.map_metrics(pred, target)
    assert got["cc"] == pytest.approx(1.0)  # only map 1 counts
    assert math.isnan(TM.map_metrics(pred[:1], torch.ones(1, 4, 4))["cc"])
    assert math.isnan(TM.map_metrics(pred[:1], torch.zeros(1, 4, 4))["kld"])  # all-zero target: no KLD


def test_target_resampled_to_the_prediction_grid():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    target = torch.zeros(1, 4, 4)
    target[0, :2, :2] = 1.0  # area-averaged to [[1, 0], [0, 0]]
    got = TM.map_metrics(pred, target)
    assert got["cc"] == pytest.approx(1.0) and got["iou"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("side", ["prediction", "target"])
def test_non_finite_maps_refused_naming_the_map(side, bad):
    pred, target = torch.rand(3, 4, 4), torch.rand(3, 4, 4)
    (pred if side == "prediction" else target)[1, 2, 2] = bad
    token = "NaN" if math.isnan(bad) else ("+inf" if bad > 0 else "-inf")
    with pytest.raises(GazeprepError) as exc:
        TM.map_metrics(pred, target)
    assert (
        str(exc.value)
        == f"{side} map 2 of 3: map holds 1 {token} value (of 16 pixels); no metric is defined on non-finite values"
    )
    labels = ["case 'a', target 'x'", "case 'b', target 'x'", "case 'c', target 'x'"]
    with pytest.raises(GazeprepError, match=rf"^{side} case 'b', target 'x': map holds 1 "):
        TM.map_metrics(pred, target, labels=labels)


def test_non_finite_message_counts_other_maps():
    pred = torch.rand(4, 3, 3)
    pred[0, 0, 0] = float("nan")
    pred[0, 1, 1] = float("nan")
    pred[3, 0, 0] = float("inf")
    with pytest.raises(
        GazeprepError, match=r"^prediction map 1 of 4: map holds 2 NaN values \(of 9 pixels\) \(1 other map too\)"
    ):
        TM.map_metrics(pred, torch.rand(4, 3, 3))


def test_mismatched_counts_refused():
    with pytest.raises(GazeprepError, match="2 predicted maps but 3 target maps"):
        TM.map_metrics(torch.rand(2, 3, 3), torch.rand(3, 3, 3))
