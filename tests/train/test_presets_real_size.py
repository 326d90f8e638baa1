"""Every paper preset trains at its real size: the preset's architecture, input frame, loss, optimiser,
schedule and selection, random init, one optimiser step per stage on a batch of one or two synthetic
cases at the original image size, with a finite loss and the papers' tensor shapes (GG-CAM's 48 x 40
CAM, 004's 32 x 32 grid and 256 x 256 decoder, Qiu's 1920-channel DenseNet hook).

These are the expensive tests of the trainer (a ResNet-50 step at 1536 x 1280 takes tens of seconds
on a 2-core CPU): marked ``slow``."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from gazeprep.train.data import GazeDataset, MemoryExport, input_options  # noqa: E402
from gazeprep.train.loop import TrainConfig, fit  # noqa: E402
from gazeprep.train.models import REFLACX_LABELS, get_model, get_objective, resolve_config  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.torch]


def _export(n: int, hw: tuple[int, int], targets: list[str], labels: list[str]) -> MemoryExport:
    """``n`` cases with ``hw`` images, a Gaussian gaze map per target and one positive label each."""
    rng = np.random.default_rng(0)
    h, w = hw
    yy, xx = np.ogrid[0:h, 0:w]
    cases, lab_rows, hm_rows, maps, images = [], [], [], {}, {}
    for i in range(n):
        cid = f"c{i}"
        images[cid] = rng.random((h, w), dtype=np.float32)
        cy, cx = h * (0.3 + 0.4 * rng.random()), w * (0.3 + 0.4 * rng.random())
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.1 * h) ** 2)).astype(np.float32)
        for t in targets:
            maps[(cid, t)] = m
            hm_rows.append({"case_id": cid, "target": t})
        for j, lab in enumerate(labels):
            lab_rows.append({"case_id": cid, "source_label": lab, "value": float(j == i % len(labels))})
        cases.append({"case_id": cid, "subject_id": i, "discarded": False, "image_height_px": h, "image_width_px": w})
    tables = {"cases": pl.DataFrame(cases), "heatmaps": pl.DataFrame(hm_rows), "case_labels": pl.DataFrame(lab_rows)}
    return MemoryExport(tables, maps, images)


def _step_each_stage(name: str, over: dict | None = None, n: int = 2, hw=(3056, 2544), hooks=()):
    """Build ``name``'s default preset (with ``over`` merged), train one step per stage at its real
    frame; returns (history, model, config, captured hook outputs)."""
    torch.manual_seed(0)
    cfg = resolve_config(name, {"preset": "default", **(over or {})})
    data = cfg["data"]
    targets, labels = list(data.get("targets") or ["full"]), list(data["labels"])
    ds = GazeDataset(
        _export(n, hw, targets, labels),
        targets=targets,
        labels=labels,
        augment=data.get("augment"),
        **input_options(data),
    )
    model, objective = get_model(name, cfg), get_objective(name, cfg)
    captured: dict[str, torch.Size] = {}
    for key, module in hooks:

        def hook(_m, _i, out, key=key):  # returns None: the module's output is kept
            captured.setdefault(key, out[-1].shape if isinstance(out, tuple) else out.shape)

        module(model).register_forward_hook(hook)
    stages = cfg["train"].get("stages") or list(model.stage_names)
    train = {
        **cfg["train"],
        "batch_size": n,
        "stage_batch_size": {},
        "iterations": None,
        "stage_epochs": {},
        "stage_iterations": {s: 1 for s in stages},
        "progress": False,
        "device": "cpu",
    }
    hist = fit(model, objective, ds, TrainConfig.from_dict(train))
    assert [r["stage"] for r in hist] == stages
    assert all(math.isfinite(r["train_loss"]) for r in hist), hist
    return hist, model, cfg, captured, ds


@pytest.mark.parametrize("name,lg_sigma", [("ggcam-resnet50", -23.0), ("ggcam-efficientnetv2s", -16.0)])
def test_ggcam_presets_train_at_1536_by_1280(name, lg_sigma):
    hist, model, cfg, cap, ds = _step_each_stage(name, n=1, hooks=[("cam", lambda m: m.cam)])
    assert ds[0]["image"].shape == (3, 1536, 1280)
    assert cap["cam"][-2:] == (48, 40)  # the code's CAM grid (gaze subsampled with stride 64)
    assert cfg["loss"]["lg_sigma_sm"] == lg_sigma and cfg["train"]["scheduler"]["kind"] == "plateau"
    assert hist[0]["train_sigma_sm"] == pytest.approx(math.exp(lg_sigma), rel=1e-3)  # log-parametrised: no overflow


def test_lanfredi_preset_trains_at_512():
    hist, model, cfg, cap, ds = _step_each_stage(
        "lanfredi-mil", n=2, hw=(3000, 2500), hooks=[("grid", lambda m: m.grid_head), ("dec", lambda m: m.decoder)]
    )
    assert cap["grid"] == (2, len(REFLACX_LABELS), 32, 32)
    assert cap["dec"] == (2, len(REFLACX_LABELS), 256, 256)
    assert 0.6e6 < sum(p.numel() for p in model.decoder.parameters()) < 0.7e6


def test_qiu_preset_trains_every_stage_at_640_by_512():
    hist, model, cfg, cap, ds = _step_each_stage("qiu-dual-unet", n=1, hooks=[("dn", lambda m: m.densenet.features)])
    assert ds[0]["image"].shape == (3, 640, 512)
    assert cap["dn"][1] == 1920  # hooked at the output of denseblock4
    assert model.enc[0].body[0].out_channels == 64 and model.enc[0].body[0].in_channels == 1


def test_karargyris_and_gradcam_presets_train_at_224():
    _step_each_stage("karargyris-unet", n=2, hw=(600, 500))
    hist, model, cfg, cap, ds = _step_each_stage("gradcam-baseline", n=2, hw=(600, 500))
    assert cfg["data"]["clahe"] and model.input_norm.kind == "zscore"


def _biomedclip_folder(d):
    """BiomedCLIP's real architecture (ViT-B/16 at 224, a 12-layer 768-wide BERT) as a local folder
    without weights; the vocabulary file is a stub (ids stay below the configured size)."""
    cfg = {
        "model_cfg": {
            "embed_dim": 512,
            "vision_cfg": {
                "timm_model_name": "vit_base_patch16_224",
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": 224,
            },
            "text_cfg": {
                "hf_model_name": str(d),
                "hf_tokenizer_name": str(d),
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "hf_model_pretrained": False,
                "context_length": 256,
            },
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    (d / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "architectures": ["BertModel"],
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "intermediate_size": 3072,
                "vocab_size": 30522,
                "max_position_embeddings": 512,
                "type_vocab_size": 2,
            }
        )
    )
    (d / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "chest", "heart", "left", "right", "lung"])
        + "\n"
    )
    (d / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 256})
    )
    return d


def test_iai_preset_trains_both_stages_at_224(tmp_path):
    pytest.importorskip("transformers")
    d = _biomedclip_folder(tmp_path)
    hist, model, cfg, cap, ds = _step_each_stage("iai-adapter", {"model": {"clip_dir": str(d)}}, n=2, hw=(600, 500))
    assert ds[0]["image"].shape == (3, 224, 224)
    assert cfg["train"]["scheduler"] == {"kind": "poly", "power": 0.9} and cfg["train"]["weight_decay"] == 1e-4
    assert len(model.blocks) == 8 and model.patch_embed.out_channels == 240
