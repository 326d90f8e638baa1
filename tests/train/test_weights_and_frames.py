"""Local weight loading (weights_only, shape-checked) and mapping predictions back to the GT frame."""

import numpy as np
import pytest
import torch

from gazeprep.errors import GazeprepError
from gazeprep.train.data import letterbox
from gazeprep.train.models.base import load_weights, timm_model
from gazeprep.train.run import map_to_frame


def test_load_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    src = timm_model("test_resnet", num_classes=5)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    torch.manual_seed(1)
    dst = timm_model("test_resnet", num_classes=3)  # a different head: skipped, the rest loads
    matched, total = load_weights(dst, path)
    assert matched == total - 2  # fc.weight and fc.bias differ in shape
    assert torch.equal(dst.state_dict()["conv1.0.weight"], src.state_dict()["conv1.0.weight"])
    other = timm_model("test_efficientnet")
    with pytest.raises(GazeprepError, match="wrong architecture"):
        load_weights(other, path)
    with pytest.raises(GazeprepError, match="not found"):
        load_weights(dst, tmp_path / "missing.pt")


def test_map_to_frame_undoes_the_letterbox():
    h, w, size = 30, 20, 60
    orig = np.zeros((h, w), np.float32)
    orig[21, 5] = 1.0
    boxed = letterbox(torch.as_tensor(orig)[None], size)[0].numpy()
    back = map_to_frame(boxed, (h, w), size, (h, w))
    assert back.shape == (h, w)
    assert np.unravel_index(np.argmax(back), back.shape) == (21, 5)
    # a square ground truth of a non-square image is already letterboxed: resize only
    sq = map_to_frame(boxed, (h, w), size, (size, size))
    assert np.unravel_index(np.argmax(sq), sq.shape) == np.unravel_index(np.argmax(boxed), boxed.shape)


def test_densenet_weights_with_torchvision_legacy_names(tmp_path):
    import re

    from gazeprep._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from torchvision.models import DenseNet

    from gazeprep.train.models.qiu import DenseNetEncoder

    torch.manual_seed(0)
    net = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16)
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)", r"\1.\2", k): v for k, v in net.state_dict().items()}
    assert any(".norm.1." in k for k in legacy)
    torch.save(legacy, tmp_path / "dn.pt")
    enc = DenseNetEncoder("tiny", 3, tmp_path / "dn.pt")
    names = [n for n, _ in net.features.named_children()]
    ref = net.features.state_dict()
    for k, v in enc.features.state_dict().items():
        idx, rest = k.split(".", 1)
        assert torch.equal(v, ref[f"{names[int(idx)]}.{rest}"]), k
