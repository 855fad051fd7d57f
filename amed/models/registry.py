"""Named pretrained models (the AMED paper's checkpoints) and ``load_model`` for names or local files.

Each ``ModelSpec`` says where a checkpoint lives, its format and licence, and which loader builds the
adapter. Checkpoints are downloaded at run time into the cache (``$AMED_CACHE`` or ``~/.cache/amed``)
by ``amed.download.fetch`` and never shipped with the project. ``sha256=None`` means the hash is
recorded on first download and verified on every later use (no upstream hashes are published).
The embedded default model (``amed.models.embedded``, optional) is merged into listings and lookups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from .._io import open_regular
from ..download import cached_path, default_cache_dir, fetch, is_offline, read_sidecar
from .base import Denoiser
from ..errors import AmedValueError

__all__ = ["ModelSpec", "ModelRow", "MODELS", "load_model", "open_model", "is_registered", "list_models", "detect_format", "is_text_to_image",
           "EDM_LICENSE", "CM_LICENSE"]

EDM_LICENSE = "CC BY-NC-SA 4.0 (NVlabs/edm: non-commercial use, attribution, share-alike)"
CM_LICENSE = ("openai/consistency_models (MIT code); model card: research use only, not for commercial "
              "deployment")
_EDM = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"


def _load_edm(path, **kw) -> Denoiser:
    from .safe_pickle import load_edm_pickle

    return load_edm_pickle(path, **kw)


def _load_cm(path, **kw) -> Denoiser:
    from .cm import load_cm_bedroom

    return load_cm_bedroom(path, **kw)


def _load_sd(repo, *, local_files_only=None, name=None, **kw) -> Denoiser:
    from .sd import load_sd

    return load_sd(repo, local_files_only=local_files_only, name=name, **kw)


@dataclass(frozen=True)
class ModelSpec:
    """A registered checkpoint: where it is, what it is, and how to turn it into a Denoiser."""

    name: str
    url: str  # file URL, or the Hugging Face repo URL for diffusers models
    format: str  # "edm-pickle" | "cm-state-dict" | "diffusers"
    license: str
    size: str  # estimated download size
    sha256: str | None
    loader: Callable[..., Denoiser]
    description: str = ""
    repo: str | None = None  # Hugging Face repo id (diffusers models)
    extra: dict = field(default_factory=dict)
    shape: tuple | None = None  # the sampled tensor's shape (latent for SD), known without loading the model


def _edm(name, file, size, desc, shape):
    return ModelSpec(name, _EDM + file, "edm-pickle", EDM_LICENSE, size, None, _load_edm, desc, shape=shape)


def _sd(name, desc):
    from .sd import SD_LICENSE, SD_REPOS  # no heavy import: sd.py imports diffusers lazily

    repo = SD_REPOS[name]
    return ModelSpec(name, f"https://huggingface.co/{repo}", "diffusers", SD_LICENSE,
                     "~4.3 GB (fp32 UNet + VAE + text encoder)", None, _load_sd, desc, repo=repo, shape=(4, 64, 64))


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        _edm("cifar10", "edm-cifar10-32x32-uncond-vp.pkl", "~223 MB", "EDM DDPM++ CIFAR-10 32x32, unconditional",
             (3, 32, 32)),
        _edm("ffhq", "edm-ffhq-64x64-uncond-vp.pkl", "~248 MB", "EDM DDPM++ FFHQ 64x64, unconditional", (3, 64, 64)),
        _edm("afhqv2", "edm-afhqv2-64x64-uncond-vp.pkl", "~248 MB", "EDM DDPM++ AFHQv2 64x64, unconditional",
             (3, 64, 64)),
        _edm("imagenet64", "edm-imagenet-64x64-cond-adm.pkl", "~1.2 GB",
             "EDM ADM ImageNet 64x64, class-conditional", (3, 64, 64)),
        ModelSpec("lsun_bedroom", "https://openaipublic.blob.core.windows.net/consistency/edm_bedroom256_ema.pt",
                  "cm-state-dict", CM_LICENSE, "~2.1 GB", None, _load_cm,
                  "consistency-models EDM teacher, LSUN Bedroom 256x256", shape=(3, 256, 256)),
        _sd("sd-v1-4", "Stable Diffusion v1.4 (paper), CFG 7.5, MS-COCO prompts"),
        _sd("sd-v1-5", "Stable Diffusion v1.5 (authors' code; community mirror of runwayml)"),
    ]
}


class ModelRow(NamedTuple):
    """One line of ``amed models``."""

    name: str
    source: str
    license: str
    size: str
    cached: bool


def _embedded():
    """``amed.models.embedded`` if it exists (it is optional and may not have landed yet)."""
    try:
        from . import embedded
    except ImportError:
        return None
    return embedded


def _embedded_names() -> dict:
    mod = _embedded()
    return dict(getattr(mod, "EMBEDDED_MODELS", {}) or {}) if mod is not None else {}


def is_registered(name) -> bool:
    """Whether ``name`` is a model ``load_model`` knows: a registry entry or an embedded default."""
    return name in MODELS or name in _embedded_names()


def _attr(entry, key, default=""):
    if isinstance(entry, dict):
        return entry.get(key, default)
    return getattr(entry, key, default)


def _hf_cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo, "unet/config.json"), str)
    except Exception:
        return False


def list_models(cache_dir=None) -> list[ModelRow]:
    """Registered and embedded models with their source, licence, size and whether they are cached."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    rows = []
    for name, entry in _embedded_names().items():
        rows.append(ModelRow(name, "embedded", str(_attr(entry, "license", "")), str(_attr(entry, "size", "")),
                             True))
    for spec in MODELS.values():
        if spec.format == "diffusers":
            cached = _hf_cached(spec.repo)
        else:
            cached = cached_path(spec.url, cache).exists()
        rows.append(ModelRow(spec.name, spec.url, spec.license, spec.size, cached))
    return rows


def detect_format(path) -> str:
    """'diffusers' (folder), 'edm-pickle', or 'torch' (torch.save file, zip or legacy) from the file itself."""
    path = Path(path)
    if path.is_dir():
        if (path / "model_index.json").exists() or (path / "unet" / "config.json").exists():
            return "diffusers"
        raise AmedValueError(f"{path} is a folder but not a diffusers pipeline (no model_index.json / unet/config.json)")
    with open_regular(path, "checkpoint") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch"  # torch.save zip archive
    if head.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"):
        return "torch"  # legacy torch.save: pickled magic number first
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "edm-pickle"
    raise AmedValueError(f"{path}: unrecognised checkpoint format (not an EDM pickle, torch.save file or diffusers folder)")


def is_text_to_image(name_or_path) -> bool:
    """True for a registered diffusers model or a local diffusers folder (they take guidance and prompts)."""
    key = str(name_or_path)
    if key in MODELS:
        return MODELS[key].format == "diffusers"
    if key in _embedded_names():
        return False
    path = Path(key).expanduser()
    if not path.is_dir():
        return False
    try:
        return detect_format(path) == "diffusers"
    except ValueError:
        return False


def load_model(name_or_path, cache_dir=None, offline: bool | None = None, **kwargs) -> Denoiser:
    """An adapter for a registered/embedded model name, or a local EDM pickle / torch state dict / diffusers folder."""
    key = str(name_or_path)
    offline = is_offline(offline)
    if key in MODELS:
        spec = MODELS[key]
        if spec.format == "diffusers":
            return spec.loader(spec.repo, local_files_only=offline, name=spec.name, **kwargs)
        path = fetch(spec.url, cache_dir or default_cache_dir(), sha256=spec.sha256, offline=offline,
                     license=spec.license)
        return spec.loader(path, name=spec.name, source=spec.url, license=spec.license,
                           sha256=spec.sha256 or read_sidecar(path), **kwargs)
    embedded = _embedded_names()
    if key in embedded:
        return _embedded().load_embedded(key, **kwargs)

    path = Path(key).expanduser()
    if not path.exists():
        known = sorted(embedded) + sorted(MODELS)
        raise AmedValueError(f"unknown model {key!r}: not a registered name ({', '.join(known)}) nor an existing path")
    fmt = detect_format(path)
    if fmt == "diffusers":
        return _load_sd(str(path), local_files_only=True, name=path.name, **kwargs)
    if fmt == "edm-pickle":
        return _load_edm(path, **kwargs)
    return _load_cm(path, **kwargs)


def open_model(name_or_path, device="cpu", guidance: float | None = None, prompts=None) -> Denoiser:
    """``load_model`` moved to ``device`` in eval mode, a text-to-image model with its classifier-free guidance scale
    and the captions of the captions CSV ``prompts`` bound (evaluation seed i uses caption i)."""
    kwargs = {}
    if guidance is not None:
        kwargs["guidance_scale"] = guidance
    if prompts is not None:
        from .sd import read_captions  # noqa: PLC0415

        kwargs["captions"] = read_captions(prompts)
    model = load_model(name_or_path, **kwargs)
    if hasattr(model, "to"):
        model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    return model


def model_shape(name: str) -> tuple | None:
    """The sample shape of a registered or embedded model without loading it; None for a checkpoint path."""
    if name in MODELS:
        return MODELS[name].shape
    spec = _embedded_names().get(name)
    return tuple(spec.shape) if spec is not None else None
