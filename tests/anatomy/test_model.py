"""SAMed model: LoRA algebra, frozen encoder, checkpoint adaptation (1024 px -> 512 px), loss, schedule."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gazeprep.anatomy.model import (  # noqa: E402
    LoRAQKV,
    Samed,
    adapt_sam_state_dict,
    build_sam,
    build_samed,
    load_model,
    preset,
    resize_pos_embed,
    resize_rel_pos,
    save_model,
)
from gazeprep.anatomy.train import downsample_labels, lr_at, samed_loss, soft_dice_loss  # noqa: E402
from gazeprep.errors import GazeprepError  # noqa: E402

pytestmark = pytest.mark.torch


def test_lora_changes_only_q_and_v_by_exact_low_rank_product():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 18)
    m = LoRAQKV.from_linear(base, rank=2)
    x = torch.randn(4, 6)
    # B = 0 at init: identical to the base projection
    assert torch.equal(m(x), base(x))
    with torch.no_grad():
        m.lora_b_q.weight.normal_()
        m.lora_b_v.weight.normal_()
    out, ref = m(x), base(x)
    dq = x @ m.lora_a_q.weight.T @ m.lora_b_q.weight.T
    dv = x @ m.lora_a_v.weight.T @ m.lora_b_v.weight.T
    torch.testing.assert_close(out[:, :6], ref[:, :6] + dq)
    torch.testing.assert_close(out[:, 6:12], ref[:, 6:12])  # k untouched
    torch.testing.assert_close(out[:, 12:], ref[:, 12:] + dv)
    assert m.lora_a_q.weight.shape == (2, 6) and m.lora_b_v.weight.shape == (6, 2)
    assert m.lora_a_q.bias is None and m.lora_b_q.bias is None


def test_lora_a_is_kaiming_uniform_bound():
    m = LoRAQKV(256, rank=4)
    bound = 1.0 / math.sqrt(256)  # kaiming_uniform with a = sqrt(5): gain sqrt(2/6), bound = gain*sqrt(3/fan_in)
    a = m.lora_a_q.weight.detach()
    assert float(a.abs().max()) <= bound + 1e-7
    assert float(a.abs().max()) > 0.8 * bound  # spread over the range, not zeros
    assert float(m.lora_b_q.weight.detach().abs().max()) == 0.0


def test_samed_starts_as_plain_sam_and_training_leaves_frozen_weights_untouched():
    torch.manual_seed(1)
    cfg = preset("tiny")
    sam = build_sam(cfg)
    plain = copy.deepcopy(sam)
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        ref = plain.image_encoder(x)
    model = Samed(cfg, sam)
    with torch.no_grad():
        assert torch.equal(model.sam.image_encoder(x), ref)
    trainable_enc = {n for n, p in model.sam.image_encoder.named_parameters() if p.requires_grad}
    assert trainable_enc and all(".lora_" in n for n in trainable_enc)
    assert len(trainable_enc) == 4 * cfg.encoder_depth
    assert all(p.requires_grad for p in model.sam.mask_decoder.parameters())
    assert all(p.requires_grad for p in model.sam.prompt_encoder.parameters())

    frozen_before = {n: p.detach().clone() for n, p in model.sam.image_encoder.named_parameters() if ".lora_" not in n}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    y = torch.randint(0, cfg.num_classes + 1, (2, cfg.low_res_size, cfg.low_res_size))
    for _ in range(3):
        loss = samed_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.sam.image_encoder.named_parameters():
        if ".lora_" not in n:
            assert torch.equal(p, frozen_before[n]), n
    assert any(float(p.detach().abs().sum()) > 0 for n, p in model.lora_parameters().items() if "lora_b" in n)
    with torch.no_grad():
        assert not torch.allclose(model.sam.image_encoder(x), ref)


def test_forward_returns_one_channel_per_class_at_quarter_resolution():
    cfg = preset("tiny")
    model = build_samed(cfg)
    out = model(torch.rand(3, 3, cfg.image_size, cfg.image_size))
    assert out.shape == (3, len(cfg.classes), cfg.low_res_size, cfg.low_res_size)
    assert cfg.low_res_size == 4 * cfg.image_size // cfg.patch_size


def test_resize_pos_embed_is_exact_on_constant_and_linear_fields():
    a, b, c = 0.3, -0.7, 2.0
    ii, jj = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    field = (a * ii + b * jj + c)[None, :, :, None].repeat(1, 1, 1, 3)
    out = resize_pos_embed(field, 32)
    assert out.shape == (1, 32, 32, 3)
    # bilinear, half-pixel centres: output pixel k samples input coordinate 2k + 0.5
    oi, oj = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    expect = a * (2 * oi + 0.5) + b * (2 * oj + 0.5) + c
    torch.testing.assert_close(out[0, :, :, 1], expect, atol=1e-5, rtol=0)
    const = torch.full((1, 64, 64, 5), 1.25)
    torch.testing.assert_close(resize_pos_embed(const, 32), torch.full((1, 32, 32, 5), 1.25))


def test_resize_rel_pos_linear_field():
    t = torch.arange(127.0)[:, None].repeat(1, 4)
    out = resize_rel_pos(t, 63)
    assert out.shape == (63, 4)
    i = torch.arange(63.0)
    torch.testing.assert_close(out[:, 2], (i + 0.5) * 127 / 63 - 0.5, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """A real-format SAM ViT-B checkpoint (random tensors, official key names and 1024 px shapes)."""
    from gazeprep._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"](checkpoint=None)
    state = sam.state_dict()
    with torch.no_grad():  # a recognisable pos_embed: linear in the row index
        rows = torch.arange(64.0)[None, :, None, None].expand(1, 64, 64, 768)
        state["image_encoder.pos_embed"].copy_(rows * 0.01)
        state["image_encoder.blocks.5.attn.rel_pos_h"].copy_(torch.arange(127.0)[:, None].expand(127, 64))
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    return path, state


def test_official_vit_b_checkpoint_loads_into_512_px_samed(vit_b_checkpoint):
    path, state = vit_b_checkpoint
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, 768)
    assert state["mask_decoder.mask_tokens.weight"].shape == (4, 256)
    cfg = preset("vit_b")
    model = build_samed(cfg, path)
    enc = model.sam.image_encoder
    assert enc.pos_embed.shape == (1, 32, 32, 768)
    # row-linear field 0.01 * r resized: output row k = 0.01 * (2k + 0.5)
    torch.testing.assert_close(enc.pos_embed[0, :, 7, 100], 0.01 * (2 * torch.arange(32.0) + 0.5), atol=1e-5, rtol=0)
    for i, blk in enumerate(enc.blocks):
        expect = 63 if i in (2, 5, 8, 11) else 27
        assert blk.attn.rel_pos_h.shape == (expect, 64), i
        assert blk.attn.rel_pos_w.shape == (expect, 64), i
        if expect == 27:  # windowed blocks keep their weights exactly
            assert torch.equal(blk.attn.rel_pos_h, state[f"image_encoder.blocks.{i}.attn.rel_pos_h"])
        # frozen base weights are the checkpoint's
        assert torch.equal(blk.attn.qkv.weight, state[f"image_encoder.blocks.{i}.attn.qkv.weight"])
    torch.testing.assert_close(
        enc.blocks[5].attn.rel_pos_h[:, 0], (torch.arange(63.0) + 0.5) * 127 / 63 - 0.5, atol=1e-4, rtol=0
    )
    dec = model.sam.mask_decoder
    assert dec.mask_tokens.weight.shape == (5, 256)  # background + 4 structures, fresh init
    assert len(dec.output_hypernetworks_mlps) == 5
    assert torch.equal(
        dec.transformer.layers[0].self_attn.q_proj.weight,
        state["mask_decoder.transformer.layers.0.self_attn.q_proj.weight"],
    )
    with torch.no_grad():
        out = model(torch.rand(1, 3, 512, 512))
    assert out.shape == (1, 5, 128, 128)
    assert torch.isfinite(out).all()


def test_adapt_selects_global_blocks_by_index_not_substring():
    cfg = preset("vit_b")
    state = {
        "image_encoder.blocks.2.attn.rel_pos_h": torch.zeros(127, 64),
        "image_encoder.blocks.12.attn.rel_pos_h": torch.zeros(27, 64),  # '2' is a substring of 12
        "mask_decoder.iou_prediction_head.layers.2.weight": torch.zeros(4, 256),
    }
    out = adapt_sam_state_dict(state, cfg)
    assert out["image_encoder.blocks.2.attn.rel_pos_h"].shape == (63, 64)
    assert out["image_encoder.blocks.12.attn.rel_pos_h"].shape == (27, 64)
    assert "mask_decoder.iou_prediction_head.layers.2.weight" not in out


def test_bad_checkpoint_is_a_one_line_error(tmp_path):
    p = tmp_path / "x.pth"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(GazeprepError, match="x.pth"):
        build_samed(preset("tiny"), p)
    with pytest.raises(GazeprepError, match="not found"):
        build_samed(preset("tiny"), tmp_path / "missing.pth")
    torch.save({"foo": torch.zeros(1)}, p)
    with pytest.raises(GazeprepError, match="not a SAM"):
        build_samed(preset("tiny"), p)


def test_model_folder_round_trip(tmp_path):
    cfg = preset("tiny", lora_rank=3)
    model = build_samed(cfg)
    with torch.no_grad():
        for p in model.lora_parameters().values():
            p.normal_()
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.config == cfg
    x = torch.rand(1, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_soft_dice_and_loss_hand_computed():
    # two classes, 1 x 1 x 2 image; logits chosen so that softmax = [[0.5, 0.5], [1, 0] approx]
    logits = torch.tensor([[[[0.0, 20.0]], [[0.0, -20.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, 0]]])
    p0 = torch.tensor([0.5, 1.0])
    p1 = 1 - p0
    t0, t1 = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])
    eps = 1e-5
    d0 = 1 - (2 * (p0 * t0).sum() + eps) / ((p0**2).sum() + (t0**2).sum() + eps)
    d1 = 1 - (2 * (p1 * t1).sum() + eps) / ((p1**2).sum() + (t1**2).sum() + eps)
    torch.testing.assert_close(soft_dice_loss(logits, labels), (d0 + d1) / 2, atol=1e-6, rtol=0)
    ce = -(math.log(0.5) + 0.0) / 2
    torch.testing.assert_close(
        samed_loss(logits, labels), 0.2 * torch.tensor(ce) + 0.8 * (d0 + d1) / 2, atol=1e-6, rtol=0
    )


def test_lr_schedule_warmup_then_poly():
    assert lr_at(0, 0.005, 250, 1000) == pytest.approx(0.005 / 250)
    assert lr_at(249, 0.005, 250, 1000) == pytest.approx(0.005)
    assert lr_at(250, 0.005, 250, 1000) == pytest.approx(0.005)
    assert lr_at(625, 0.005, 250, 1000) == pytest.approx(0.005 * 0.5**0.9)
    assert lr_at(1000, 0.005, 250, 1000) == pytest.approx(0.0)
    lrs = [lr_at(i, 1.0, 10, 100) for i in range(100)]
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) < 0)


def test_downsample_labels_takes_pixel_centres():
    y = torch.arange(16).reshape(1, 4, 4)
    assert downsample_labels(y, 2).tolist() == [[[5, 7], [13, 15]]]


def test_checkpoint_of_another_size_is_a_one_line_error(tmp_path):
    small = build_sam(preset("tiny"))
    p = tmp_path / "tiny_sam.pth"
    torch.save(small.state_dict(), p)
    other = preset("tiny", encoder_embed_dim=32)
    with pytest.raises(GazeprepError, match="not a SAM tiny checkpoint"):
        build_samed(other, p)
    assert build_samed(preset("tiny"), p) is not None  # same size loads
