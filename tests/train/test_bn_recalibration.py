"""Batch-norm recalibration after training: exact averages, and a one-sample remainder is left out."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gazeprep.train.loop import recalibrate_batchnorm  # noqa: E402


def test_one_sample_remainder_is_skipped_and_the_mean_is_exact() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1))
    x = torch.randn(5, 1, 2, 2)
    # batches of 2, 2 and a remainder of 1 (what a DataLoader gives for 5 items at batch size 2)
    loader = [{"image": x[0:2]}, {"image": x[2:4]}, {"image": x[4:5]}]
    recalibrate_batchnorm(model, loader, torch.device("cpu"))
    bn = model[0]
    # momentum None averages the per-batch means of the batches used (the first four samples)
    expected = (x[0:2].mean() + x[2:4].mean()) / 2
    assert torch.allclose(bn.running_mean, expected.reshape(1), atol=1e-6)
    assert bn.momentum == 0.1 and bn.num_batches_tracked.item() == 2
