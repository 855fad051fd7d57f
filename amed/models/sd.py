"""Stable Diffusion v1.x through diffusers, seen as an EDM/VE denoiser on the 4x64x64 latent.

The discrete VP model is used in its VE view (AMED paper Sec. 4 / EDM Appendix): with
sigma_i = sqrt((1 - abar_i) / abar_i) from the scheduler's ``alphas_cumprod`` (0.0292 ... 14.6146 for
SD v1.x) and x_VE = x_VP sqrt(1 + sigma^2),

    D(x; sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma), c),

with classifier-free guidance eps = eps_u + w (eps_c - eps_u), w = 7.5, evaluated as one UNet batch
[uncond; cond]. The sigma -> timestep map is option (a) of the project notes: diffusers'/k-diffusion's
linear interpolation of the index in log sigma between bracketing grid points (the UNet accepts a float
timestep). It agrees with diff-sampler's continuous-t map (option b) on the 1000 grid points and differs
slightly between them.

Prompts are bound per seed: evaluation seed i uses caption i of the MS-COCO 30k list; a training seed
(>= ``amed.calls.TRAIN_SEED_BASE``) uses a caption chosen by a fixed hash of the seed (``caption_index``;
the authors draw them with an unseeded ``random.sample``).

diffusers/transformers are imported lazily, inside functions only; ``import amed`` never needs them.
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import torch

from .base import Denoiser, ModelInfo
from .._io import open_regular_text
from ..errors import AmedOSError, AmedValueError, MissingDependency

__all__ = ["SD_REPOS", "DEFAULT_SD_REPO", "COCO_CAPTIONS_URL", "SD_LICENSE", "SDDenoiser", "load_sd",
           "vp_sigmas", "sigma_to_t", "read_captions", "coco_captions", "caption_index"]

DEFAULT_SD_REPO = "CompVis/stable-diffusion-v1-4"
SD_REPOS = {"sd-v1-4": DEFAULT_SD_REPO, "sd-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
SD_LICENSE = ("CreativeML OpenRAIL-M (use-based restrictions; "
              "https://huggingface.co/spaces/CompVis/stable-diffusion-license)")
COCO_CAPTIONS_URL = ("https://github.com/boomb0om/text2image-benchmark/releases/download/v0.0.1/"
                     "MS-COCO_val2014_30k_captions.csv")
COCO_LICENSE = "MS-COCO annotations: CC BY 4.0 (https://cocodataset.org/#termsofuse)"


def vp_sigmas(alphas_cumprod) -> torch.Tensor:
    """VE noise levels of a discrete VP model: sigma_i = sqrt((1 - abar_i) / abar_i), float64, ascending."""
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return ((1 - a) / a).sqrt()


def sigma_to_t(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Fractional timestep index by linear interpolation in log sigma on the grid (diffusers' _sigma_to_t)."""
    log_grid = sigmas.to(torch.float64).log().to(sigma.device)
    log_s = sigma.to(torch.float64).clamp(min=1e-10).log()
    hi = torch.searchsorted(log_grid, log_s).clamp(1, len(log_grid) - 1)
    lo = hi - 1
    w = ((log_s - log_grid[lo]) / (log_grid[hi] - log_grid[lo])).clamp(0, 1)
    return lo.to(torch.float64) + w


def _splitmix64(x: int) -> int:
    """SplitMix64's output function (Steele et al. 2014): a fixed bijective mix of a 64-bit integer."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def caption_index(seed: int, num_captions: int) -> int:
    """The caption of a noise seed: evaluation seed i -> i; training seed s -> splitmix64(s) mod num_captions.

    Evaluation seeds (0 <= seed < num_captions) pair with caption i, as the authors' sample.py does.
    Training seeds (>= amed.calls.TRAIN_SEED_BASE) get a caption drawn by a fixed hash of the seed, so a
    teacher cache, its training run and any rerun see the same (noise, prompt) pairs, independent of batch
    size and of which other seeds are in the batch. Deliberate deviation: the authors' training draws
    prompts with an unseeded ``random.sample(captions, B)`` per batch, which is not reproducible. The hash
    (not ``seed % n``) keeps consecutive training seeds from walking through consecutive captions.
    Seeds in neither range are an error.
    """
    from ..calls import TRAIN_SEED_BASE  # noqa: PLC0415 (the call layer imports no driver: no cycle)

    seed, n = int(seed), int(num_captions)
    if 0 <= seed < n:
        return seed
    if seed >= TRAIN_SEED_BASE and n > 0:
        return _splitmix64(seed) % n
    raise AmedValueError(f"seed {seed!r} has no caption: the captions list has {n} entries "
                     f"(evaluation seeds 0..{n - 1}, training seeds >= {TRAIN_SEED_BASE})")


class SDDenoiser(Denoiser):
    """Latent SD v1.x denoiser with CFG; prompts are bound per seed via ``condition``."""

    def __init__(self, unet, vae, text_encoder, tokenizer, alphas_cumprod, *, guidance_scale: float = 7.5,
                 captions: list[str] | None = None, name: str = "sd", source: str = "", license: str = SD_LICENSE):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.guidance_scale = float(guidance_scale)
        self.captions = captions
        self.sigmas = vp_sigmas(alphas_cumprod)
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215)) if vae is not None else 0.18215
        size = unet.config.sample_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.info = ModelInfo(name=name, shape=(unet.config.in_channels, size, size),
                              sigma_min=float(self.sigmas[0]), sigma_max=float(self.sigmas[-1]), source=source,
                              license=license, extra={"guidance_scale": self.guidance_scale, "latent": True})
        self._cond: torch.Tensor | None = None
        self._uncond: torch.Tensor | None = None

    # Text conditioning -------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states [N, 77, 768] of the prompts (padded to the tokenizer's max length)."""
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(tok.input_ids.to(device))[0]

    @property
    def conditioning_id(self) -> str | None:
        """sha256 of the bound captions list (teacher caches record it: another list is another teacher)."""
        if self.captions is None:
            return None
        import hashlib  # noqa: PLC0415

        return hashlib.sha256("\n".join(self.captions).encode()).hexdigest()

    def prompts_for(self, seeds, prompts=None) -> list[str]:
        """Prompt i for seed i: explicit prompts (a string is repeated), else ``captions[caption_index(seed)]``."""
        if prompts is not None:
            prompts = [prompts] * len(seeds) if isinstance(prompts, str) else list(prompts)
            if len(prompts) != len(seeds):
                raise AmedValueError(f"got {len(prompts)} prompts for {len(seeds)} seeds")
            return prompts
        if self.captions is None:
            raise AmedValueError(f"{self.info.name}: no prompts given and no captions list bound (see coco_captions())")
        return [self.captions[caption_index(int(s), len(self.captions))] for s in seeds]

    @contextlib.contextmanager
    def condition(self, seeds, prompts=None):
        """Bind the text embeddings of seed i's prompt (and the empty-prompt embedding) for the block."""
        cond = self.encode_prompts(self.prompts_for(seeds, prompts))
        if self._uncond is None:
            self._uncond = self.encode_prompts([""])
        previous, self._cond = self._cond, cond
        try:
            yield self
        finally:
            self._cond = previous

    # Denoiser ----------------------------------------------------------------------------------

    def feature_module(self) -> torch.nn.Module:
        return self.unet.mid_block

    def select_feature(self, h: torch.Tensor, batch: int) -> torch.Tensor:
        """The hooked batch is [uncond; cond]: keep the conditional half."""
        return h[-batch:]

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self._cond is None:
            raise AmedValueError(f"{self.info.name} needs prompts: wrap calls in `with model.condition(seeds):`")
        batch = x.shape[0]
        if self._cond.shape[0] != batch:
            raise AmedValueError(f"{self._cond.shape[0]} prompts are bound but the batch has {batch} samples")
        dtype = self.unet.dtype
        x = x.to(torch.float32)
        sigma = sigma.to(device=x.device, dtype=torch.float32)
        s = sigma.reshape(-1, 1, 1, 1)
        x_in = (x / (1 + s**2).sqrt()).to(dtype)
        t = sigma_to_t(sigma, self.sigmas).to(device=x.device, dtype=torch.float32)
        cond = self._cond.to(device=x.device, dtype=dtype)
        if self.guidance_scale == 1.0:
            eps = self.unet(x_in, t, encoder_hidden_states=cond).sample.to(torch.float32)
        else:
            uncond = self._uncond.to(device=x.device, dtype=dtype).expand(batch, -1, -1)
            out = self.unet(torch.cat([x_in, x_in]), torch.cat([t, t]),
                            encoder_hidden_states=torch.cat([uncond, cond])).sample.to(torch.float32)
            eps_u, eps_c = out.chunk(2)
            eps = eps_u + self.guidance_scale * (eps_c - eps_u)
        return x - s * eps

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode denoised latents to images in [-1, 1] (float32, NCHW)."""
        if self.vae is None:
            raise AmedValueError(f"{self.info.name} was loaded without a VAE")
        z = (latents / self.scaling_factor).to(device=next(self.vae.parameters()).device, dtype=self.vae.dtype)
        return self.vae.decode(z).sample.to(torch.float32).clamp(-1, 1)


def _scheduler_alphas_cumprod(path_or_repo, **kw) -> torch.Tensor:
    from .._tvshim import apply as _tv_apply

    _tv_apply()
    from diffusers import DDPMScheduler

    # PNDM's config carries keys DDPM does not take; from_config ignores them. Only the betas matter.
    config = DDPMScheduler.load_config(path_or_repo, subfolder="scheduler", **kw)
    return DDPMScheduler.from_config(config).alphas_cumprod


def load_sd(path_or_repo: str = DEFAULT_SD_REPO, *, local_files_only: bool | None = None,
            torch_dtype: torch.dtype | None = None, device=None, guidance_scale: float = 7.5,
            captions: list[str] | None = None, revision: str | None = None, cache_dir=None,
            with_vae: bool = True, name: str | None = None) -> SDDenoiser:
    """SD v1.x adapter from a diffusers folder or a Hub repo id (``sd-v1-4``/``sd-v1-5`` aliases accepted)."""
    import os

    try:
        from .._tvshim import apply as _tv_apply

        _tv_apply()
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        UNet2DConditionModel.__name__  # diffusers' lazy import fails here, e.g. on a mismatched torchvision
    except ImportError as exc:
        raise MissingDependency("Stable Diffusion needs the optional dependencies: pip install 'amed[sd]'") from exc
    except RuntimeError as exc:
        raise MissingDependency(f"diffusers/transformers failed to import (a torchvision build that does not match "
                          f"torch is a common cause): {exc}") from exc

    repo = SD_REPOS.get(str(path_or_repo), str(path_or_repo))
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or Path(repo).is_dir()
    kw = dict(local_files_only=local_files_only, revision=revision, cache_dir=cache_dir)
    dkw = dict(kw, torch_dtype=torch_dtype) if torch_dtype is not None else kw
    try:
        unet = UNet2DConditionModel.from_pretrained(repo, subfolder="unet", **dkw)
        vae = AutoencoderKL.from_pretrained(repo, subfolder="vae", **dkw) if with_vae else None
        text_encoder = CLIPTextModel.from_pretrained(repo, subfolder="text_encoder", **dkw)
        tokenizer = CLIPTokenizer.from_pretrained(repo, subfolder="tokenizer", **kw)
        alphas_cumprod = _scheduler_alphas_cumprod(repo, **kw)
    except (OSError, ValueError) as exc:
        hint = " (offline: is it in the Hugging Face cache?)" if local_files_only else ""
        raise AmedOSError(f"cannot load Stable Diffusion from {repo!r}{hint}: {exc}") from exc
    net = SDDenoiser(unet, vae, text_encoder, tokenizer, alphas_cumprod, guidance_scale=guidance_scale,
                     captions=captions, name=name or str(path_or_repo), source=repo)
    net = net.eval().requires_grad_(False)
    return net.to(device) if device is not None else net


def read_captions(path, column: str = "text") -> list[str]:
    """Prompts from a captions CSV (the MS-COCO val2014 30k file uses the ``text`` column)."""
    try:
        with open_regular_text(path, "captions CSV") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise AmedValueError(f"{path}: no {column!r} column (columns: {reader.fieldnames})")
            return [row[column] for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise AmedValueError(f"captions CSV {str(path)!r} is not a UTF-8 CSV file ({e})") from None


def coco_captions(cache_dir=None, *, offline: bool = False) -> list[str]:
    """The MS-COCO val2014 30k captions used for SD evaluation (prompt i pairs with seed i)."""
    from ..download import fetch

    return read_captions(fetch(COCO_CAPTIONS_URL, cache_dir, offline=offline, license=COCO_LICENSE))
