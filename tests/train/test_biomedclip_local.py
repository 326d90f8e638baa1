"""Paper 000's frozen encoder in BiomedCLIP's architecture (open_clip CustomTextCLIP: timm ViT trunk
+ BERT text tower with an MLP projection), built from a local folder only, with a small BERT config.
Needs ``transformers`` (part of the [ml] extra)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from gazeprep.train.models.iai import IAIModel, build_clip  # noqa: E402

pytestmark = pytest.mark.torch


def _biomedclip_like_folder(d, with_weights_from=None):
    """open_clip_config.json in BiomedCLIP's layout (hf text tower, mlp proj, CLS pooling), a
    2-layer 64-wide BERT config, a tiny vocab; no network, nothing downloaded."""
    cfg = {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {
                "timm_model_name": "vit_tiny_patch16_224",
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
                "context_length": 16,
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
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 128,
                "vocab_size": 16,
                "max_position_embeddings": 64,
                "type_vocab_size": 2,
            }
        )
    )
    (d / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "heart", "left", "right", "lung"]) + "\n"
    )
    (d / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 16})
    )
    if with_weights_from is not None:
        torch.save(with_weights_from.state_dict(), d / "open_clip_pytorch_model.bin")
    return d


def test_biomedclip_architecture_builds_from_a_local_folder_and_loads_its_weights(tmp_path):
    (tmp_path / "a").mkdir()
    a_dir = _biomedclip_like_folder(tmp_path / "a")
    torch.manual_seed(0)
    model, tok = build_clip("biomedclip", a_dir, image_size=64)
    assert type(model).__name__ == "CustomTextCLIP"
    assert type(model.text.transformer).__name__ == "BertModel"  # a BERT text tower, as BiomedCLIP
    tokens = tok(["the heart", "left lung"])
    assert tokens.shape == (2, 16)
    with torch.no_grad():
        assert model.encode_text(tokens).shape == (2, 32)
        assert model.encode_image(torch.rand(1, 3, 64, 64)).shape == (1, 32)

    # a user's released weight file (saved at BiomedCLIP's native 224 px) in the folder is loaded
    torch.manual_seed(7)
    released, _ = build_clip("biomedclip", a_dir, image_size=224)
    (tmp_path / "b").mkdir()
    b_dir = _biomedclip_like_folder(tmp_path / "b", with_weights_from=released)
    torch.manual_seed(123)  # a different random init would differ everywhere
    loaded, _ = build_clip("biomedclip", b_dir, image_size=64)
    ref = released.state_dict()
    for k, v in loaded.state_dict().items():
        if k.startswith("visual.trunk.pos_embed"):
            continue  # resized from 224 px (14 x 14 patches) to 64 px (4 x 4) after loading
        assert torch.equal(v, ref[k]), k


def test_iai_model_runs_on_the_biomedclip_architecture(tmp_path):
    (tmp_path / "c").mkdir()
    d = _biomedclip_like_folder(tmp_path / "c")
    torch.manual_seed(0)
    model = IAIModel(
        map_names=("heart",),
        clip="biomedclip",
        clip_dir=str(d),
        image_size=64,
        adapter_dim=32,
        adapter_depth=4,
        adapter_heads=2,
        mlp_hidden=16,
        fuse_clip_layers=(1, 2, 3),
    )
    assert all(not p.requires_grad for p in model.clip.parameters())  # frozen encoder (000)
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    hl = out["heatmap_logits"]
    assert hl.shape[:2] == (2, 1) and torch.isfinite(hl).all()
    hl.mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
