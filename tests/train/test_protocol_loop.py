"""The training protocol options of the loop: lengths in iterations, learning-rate schedules,
model selection on a monitored value, early stopping, reload-best on a plateau, gradient clipping,
ROC AUC, and a resumed protocol run ending where an uninterrupted one ends."""

import math

import pytest
import torch
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.loop import BEST, TrainConfig, _plan, class_metrics, cyclic_factor, fit, load_checkpoint, roc_auc
from gazeprep.train.models.base import LossOutput


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i)]), "case_id": f"c{i}", "labels": torch.tensor([float(i % 2)])}


class _One(nn.Module):
    """A single weight w; its optimiser steps are counted."""

    stage_names = ("main",)

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.0))
        self.steps = 0


class _Scripted(nn.Module):
    """Training loss (w - 1)^2 (so w moves); in eval mode the loss of the k-th evaluation is
    ``script[k]`` (a scripted validation curve)."""

    def __init__(self, script=()):
        super().__init__()
        self.script = list(script)
        self.k = 0

    def forward(self, model, batch):
        if model.training:
            model.steps += 1
            loss = (model.w - 1.0) ** 2
            return LossOutput(loss, {"w": float(model.w.detach())})
        v = self.script[min(self.k, len(self.script) - 1)]
        self.k += 1
        return LossOutput(model.w * 0 + v)


def _cfg(**kw):
    base = dict(batch_size=4, lr=0.1, optimizer="sgd", momentum=0.0, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_iterations_plan_and_exact_step_count():
    m = _One()
    cfg = _cfg(iterations=5)
    # 10 items, batch 4, drop_last: 2 steps per epoch -> epochs of 2, 2 and 1 steps
    assert [(e.stage, e.step_limit) for e in _plan(m, cfg, 10)] == [("main", 2), ("main", 2), ("main", 1)]
    hist = fit(m, _Scripted([0.0]), _Items(10), cfg)
    assert m.steps == 5 and len(hist) == 3

    # stage-specific lengths: iterations for one stage, epochs for another
    class _Two(_One):
        stage_names = ("a", "b")

    cfg2 = _cfg(stage_iterations={"a": 3}, stage_epochs={"b": 2})
    assert [(e.stage, e.step_limit) for e in _plan(_Two(), cfg2, 10)] == [("a", 2), ("a", 1), ("b", None), ("b", None)]


def test_poly_schedule_per_step_by_hand():
    m = _One()
    cfg = _cfg(iterations=6, scheduler={"kind": "poly", "power": 0.9})
    hist = fit(m, _Scripted([0.0]), _Items(8), cfg)  # 2 steps per epoch, 3 epochs
    # the lr recorded after epoch e is the rate for the next step: base * (1 - steps_done / 6) ** 0.9
    assert [r["lr"] for r in hist] == pytest.approx([0.1 * (1 - t / 6) ** 0.9 for t in (2, 4, 6)], abs=1e-12)


def test_step_and_cosine_schedules_per_epoch():
    hist = fit(
        _One(), _Scripted([0.0]), _Items(4), _cfg(epochs=5, scheduler={"kind": "step", "step_size": 2, "gamma": 0.1})
    )
    assert [r["lr"] for r in hist] == pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])
    hist = fit(_One(), _Scripted([0.0]), _Items(4), _cfg(epochs=4, scheduler={"kind": "cosine"}))
    assert [r["lr"] for r in hist] == pytest.approx([0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (1, 2, 3, 4)])


def test_cyclic_factor_of_003_by_hand():
    lo = 0.0090552
    # triangle of period 4 epochs between lo and 1, amplitude halved each cycle
    want = [
        lo,
        lo + (1 - lo) * 0.5,
        1.0,
        lo + (1 - lo) * 0.5,
        lo,
        lo + (1 - lo) * 0.25,
        lo + (1 - lo) * 0.5,
        lo + (1 - lo) * 0.25,
        lo,
    ]
    assert [cyclic_factor(e, 2, lo, 1.0) for e in range(9)] == pytest.approx(want)
    hist = fit(
        _One(),
        _Scripted([0.0]),
        _Items(4),
        _cfg(epochs=3, lr=lo, scheduler={"kind": "cyclic", "step_size": 2, "min_factor": lo}),
    )
    assert [r["lr"] for r in hist] == pytest.approx([lo * want[e] for e in (1, 2, 3)])


def test_plateau_reload_best_select_best_and_early_stop(tmp_path):
    """Validation losses 5, 4, 4.5, 4.6, 4.7, 4.8, ...: epoch 2 is the best. With patience 1 the
    plateau lowers the rate after epoch 4 and reloads epoch 2's weights (GG-CAM's NetLearn); three
    epochs without improvement stop the stage after epoch 5; the model ends with epoch 2's weights."""
    m = _One()
    obj = _Scripted([5.0, 4.0, 4.5, 4.6, 4.7, 4.8, 4.9, 5.0])
    w_after = []

    class _Watch(_Scripted):
        def forward(self, model, batch):
            if not model.training and (not w_after or w_after[-1][0] != self.k):
                w_after.append((self.k, float(model.w.detach())))
            return super().forward(model, batch)

    obj = _Watch(obj.script)
    cfg = _cfg(
        epochs=8,
        monitor="val_loss",
        select_best=True,
        early_stop_patience=3,
        scheduler={"kind": "plateau", "patience": 1, "factor": 0.1, "reload_best": True},
        out_dir=str(tmp_path),
    )
    hist = fit(m, obj, _Items(4), cfg, val_data=_Items(2))
    assert [r["val_loss"] for r in hist] == pytest.approx([5.0, 4.0, 4.5, 4.6, 4.7])
    assert [r["improved"] for r in hist] == [True, True, False, False, False]
    assert hist[3]["reloaded_best_epoch"] == 2 and hist[3]["lr"] == pytest.approx(0.01)
    assert hist[-1]["early_stop"] == "patience" and len(hist) == 5
    w2 = w_after[1][1]  # weights evaluated after epoch 2
    assert float(m.w.detach()) == pytest.approx(w2, abs=1e-7)  # the selected epoch's weights
    best = load_checkpoint(tmp_path / BEST)
    assert best["epoch"] == 2 and best["value"] == 4.0
    # epoch 5 started from epoch 2's weights: its one SGD step at lr 0.01 on (w - 1)^2 from w2
    assert hist[4]["train_w"] == pytest.approx(w2, abs=1e-7)  # the logged w is the value before the step


def test_monitor_falls_back_to_training_values_and_undefined_auc_is_nan():
    m = _One()
    hist = fit(m, _Scripted([0.0]), _Items(4), _cfg(epochs=2, monitor="val_loss", select_best=True))
    assert all("improved" in r for r in hist)  # train_loss used: there is no validation split
    # an AUC the data leave undefined is NaN: never an improvement, no error
    hist = fit(_One(), _Scripted([0.0]), _Items(4), _cfg(epochs=1, monitor="val_auc_mean", select_best=True))
    assert hist[0]["improved"] is False
    with pytest.raises(GazeprepError, match="not in the epoch record"):
        fit(_One(), _Scripted([0.0]), _Items(4), _cfg(epochs=1, monitor="val_nothing"))
    with pytest.raises(GazeprepError, match="need train.monitor"):
        _cfg(select_best=True)


def test_gradient_clipping_by_norm_and_value():
    class _Big(_Scripted):
        def forward(self, model, batch):
            model.steps += 1
            return LossOutput(100.0 * model.w)  # gradient 100

    m = _One()
    fit(m, _Big(), _Items(4), _cfg(epochs=1, grad_clip_norm=0.01))
    assert float(m.w.detach()) == pytest.approx(-0.1 * 0.01)  # one SGD step with the gradient clipped to norm 0.01
    m = _One()
    fit(m, _Big(), _Items(4), _cfg(epochs=1, grad_clip_value=0.1))
    assert float(m.w.detach()) == pytest.approx(-0.1 * 0.1)


def test_roc_auc_by_hand():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 / 4
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.2], [0, 1, 0]) == pytest.approx((0.5 + 1) / 2)  # a tie counts half
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    s = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [float("nan"), 1.0]])
    got = class_metrics(s, y)
    # label 0 (known rows 0-2): positive 0.9 above both negatives -> 1; label 1: positives 0.8, 0.4, 0.7 vs 0.1 -> 1
    assert got["auc_mean"] == pytest.approx(1.0)
    assert got["acc"] == pytest.approx(3 / 4)  # row 2: argmax 0, truth 1


def test_protocol_run_resumes_to_the_same_weights(tmp_path):
    cfg = dict(
        epochs=6,
        monitor="val_loss",
        select_best=True,
        scheduler={"kind": "plateau", "patience": 1, "reload_best": True},
    )
    script = [5.0, 4.0, 4.5, 4.6, 3.0, 3.5]
    m1 = _One()
    h1 = fit(m1, _Scripted(script), _Items(4), _cfg(**cfg, out_dir=str(tmp_path / "a")), val_data=_Items(2))
    m2 = _One()
    fit(
        m2,
        _Scripted(script),
        _Items(4),
        _cfg(**cfg, out_dir=str(tmp_path / "b"), stop_after_epochs=3),
        val_data=_Items(2),
    )
    m3 = _One()
    obj3 = _Scripted(script)
    obj3.k = 3  # the scripted curve continues where the first process stopped
    h3 = fit(m3, obj3, _Items(4), _cfg(**cfg, out_dir=str(tmp_path / "b")), val_data=_Items(2))
    assert float(m1.w.detach()) == float(m3.w.detach())
    assert [r["lr"] for r in h1] == [r["lr"] for r in h3]
    assert [r.get("improved") for r in h1] == [r.get("improved") for r in h3]
