"""Clean-room consistency-models U-Net (LSUN Bedroom-256 EDM teacher), offline and tiny."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from amed.models.cm import AttentionBlock, CMDenoiser, load_cm_bedroom  # noqa: E402

TINY = dict(image_size=16, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
            attention_resolutions=(2,), dropout=0.1, channel_mult=(1, 2), num_head_channels=16,
            resblock_updown=True, use_scale_shift_norm=False)


def test_bedroom_config_matches_checkpoint_manifest():
    with torch.device("meta"):
        net = CMDenoiser()
    sd = net.model.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 526_304_771
    assert len(sd) == 566
    assert sd["middle_block.1.qkv.weight"].shape == (3072, 1024, 1, 1)
    assert sd["middle_block.1.proj_out.weight"].shape == (1024, 1024, 1, 1)
    assert sd["time_embed.0.weight"].shape == (1024, 256)
    assert sd["input_blocks.0.0.weight"].shape == (256, 3, 3, 3)
    assert sd["out.2.weight"].shape == (3, 256, 3, 3)
    assert len(net.model.input_blocks) == 18 and len(net.model.output_blocks) == 18
    assert net.feature_module() is net.model.middle_block
    assert net.info.shape == (3, 256, 256)


def test_attention_channel_order_is_qkv_head_dim():
    torch.manual_seed(0)
    blk = AttentionBlock(64, num_head_channels=32).eval()
    x = torch.randn(2, 64, 3, 3)
    qkv = blk.qkv(blk.norm(x)).reshape(2, 192, 9)
    outs = []
    for h in range(2):  # (q|k|v, head, dim): head h of q is channels [32h, 32h+32)
        q = qkv[:, 32 * h:32 * h + 32]
        k = qkv[:, 64 + 32 * h:64 + 32 * h + 32]
        v = qkv[:, 128 + 32 * h:128 + 32 * h + 32]
        w = torch.softmax(q.transpose(1, 2) @ k / 32**0.5, dim=-1)  # [b, t, s]
        outs.append(v @ w.transpose(1, 2))
    expected = x + blk.proj_out(torch.cat(outs, 1).reshape(2, 64, 3, 3))
    torch.testing.assert_close(blk(x), expected, rtol=1e-5, atol=1e-5)


def test_tiny_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    ref = CMDenoiser(TINY).eval()
    path = tmp_path / "tiny_cm.pt"
    torch.save(ref.model.state_dict(), path)
    net = load_cm_bedroom(path, config=TINY)
    for key, value in ref.model.state_dict().items():
        assert torch.equal(value, net.model.state_dict()[key]), key
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.05, 20.0])
    out, h = net.with_feature(x, sigma)
    torch.testing.assert_close(out, ref(x, sigma))
    assert h.shape == (2, 8, 8)

    # Karras preconditioning with network time 250 ln(sigma).
    s = sigma.reshape(-1, 1, 1, 1)
    f = ref.model(x / (s**2 + 0.25).sqrt(), 250 * sigma.log())
    torch.testing.assert_close(out, 0.25 / (s**2 + 0.25) * x + 0.5 * s / (s**2 + 0.25).sqrt() * f)

    # Hook on middle_block sees the 8x8 bottleneck with all channels.
    seen = []
    handle = net.feature_module().register_forward_hook(lambda m, i, o: seen.append(o.shape))
    net(x, sigma)
    handle.remove()
    assert seen == [torch.Size([2, 64, 8, 8])]


def test_bad_files_are_named(tmp_path):
    ref = CMDenoiser(TINY)
    sd = ref.model.state_dict()
    sd["middle_block.1.qkv.weight"] = sd["middle_block.1.qkv.weight"][..., 0]
    torch.save(sd, tmp_path / "gd.pt")
    with pytest.raises(ValueError, match="Conv1d"):
        load_cm_bedroom(tmp_path / "gd.pt", config=TINY)
    sd = ref.model.state_dict()
    sd["out.2.bias"] = torch.zeros(4)
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"shape mismatch for 'out.2.bias'"):
        load_cm_bedroom(tmp_path / "shape.pt", config=TINY)
    del sd["out.2.bias"]
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"missing keys \['out.2.bias'\]"):
        load_cm_bedroom(tmp_path / "missing.pt", config=TINY)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_cm_bedroom(tmp_path / "junk.pt", config=TINY)


def test_load_model_detects_torch_state_dict(tmp_path):
    from amed.models.registry import detect_format, load_model

    ref = CMDenoiser(TINY)
    torch.save(ref.model.state_dict(), tmp_path / "tiny.pt")
    assert detect_format(tmp_path / "tiny.pt") == "torch"
    net = load_model(str(tmp_path / "tiny.pt"), offline=True, config=TINY)
    assert isinstance(net, CMDenoiser)
    # The default (LSUN bedroom) config does not fit a tiny file: the error names a key.
    with pytest.raises(ValueError, match="missing keys"):
        load_model(str(tmp_path / "tiny.pt"), offline=True)
