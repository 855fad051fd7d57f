import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Nothing in the test suite may reach the network or write under ~.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


# ---- Tiny Stable Diffusion pipelines (diffusers folders saved and reloaded offline) -------------------------

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def hide_broken_torchvision():
    """A torchvision build that does not match torch breaks `import transformers`; SD needs none of it.

    Prefer the project's shim (amed._tvshim); only if torchvision still fails to import, make it look absent
    to transformers/diffusers.
    """
    try:
        from amed import _tvshim

        _tvshim.apply()
    except ImportError:
        pass
    try:
        import torchvision  # noqa: F401
    except Exception:
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        sys.modules["torchvision"] = None  # importlib.util.find_spec() now reports it absent


def make_tiny_sd_pipeline(d, levels: int = 2):
    """A random SD-shaped pipeline with latents 4x8x8 and 8x8 RGB images, saved under ``d/pipe``.

    ``levels=2``: UNet blocks (8, 16), mid block at 4x4. ``levels=1``: one cross-attention level, mid block at
    8x8, so the AMED predictor (64 bottleneck values) can train on it.
    """
    hide_broken_torchvision()
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "cat</w>": 3, "dog</w>": 4, "a": 5, "c": 6,
             "t</w>": 7, "!": 8, "photo</w>": 9}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=8)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=10, hidden_size=12, intermediate_size=24, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=8, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1))
    if levels == 2:
        blocks = dict(block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    else:
        blocks = dict(block_out_channels=(8,), down_block_types=("CrossAttnDownBlock2D",),
                      up_block_types=("CrossAttnUpBlock2D",))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=4,
                                cross_attention_dim=12, attention_head_dim=2, **blocks)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8,), norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=8)
    sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **SD_BETAS)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sch,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(d / "pipe")
    return d / "pipe"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """Two-level tiny SD (mid block 4x4)."""
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="session")
def tiny_pipeline_8x8(tmp_path_factory):
    """One-level tiny SD whose mid block is 8x8: trainable with the AMED predictor."""
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("sd8"), levels=1)
