"""Train the embedded models: the EDM denoiser and the FD feature classifier, on data shipped in sklearn.

    python -m amed.models.train_embedded --dataset digits --out amed/assets --steps 2500
    python -m amed.models.train_embedded --dataset digits --features --out amed/assets

Denoiser: EDM loss (Karras et al. 2022, Eq. 2 and Table 1): ln(sigma) ~ N(P_mean=-1.2, P_std=1.2),
weight (sigma^2 + sd^2) / (sigma sd)^2, Adam with warm-up and cosine decay, EMA weights shipped.
Digits get no augmentation (a flipped digit is another glyph); patches get horizontal flips.
Classifier: a small CNN on a fixed, held-out split of the digits, with +-1 pixel shift augmentation.
Outputs are ``<out>/<name>.safetensors`` + ``<out>/<name>.json`` (record with the sha256); no pickle.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write_bytes
from .embedded import MEAN_KEY, SPECS, build_network
from ..features import DigitClassifier
from ..errors import AmedValueError

__all__ = ["load_dataset", "train_denoiser", "train_classifier", "main"]

P_MEAN, P_STD = -1.2, 1.2


def load_dataset(name: str, seed: int = 0, n_patches: int = 20000) -> np.ndarray:
    """The training images, float32 [N, C, 8, 8] in [-1, 1]."""
    if name == "digits":
        from sklearn.datasets import load_digits

        return (load_digits().images[:, None] / 8.0 - 1.0).astype(np.float32)
    if name == "patches":
        from sklearn.datasets import load_sample_images

        imgs = load_sample_images().images  # two 427x640x3 uint8 (china.jpg, flower.jpg), CC BY 2.0
        rng = np.random.default_rng(seed)
        out = np.empty((n_patches, 3, 8, 8), np.float32)
        for i in range(n_patches):
            im = imgs[i % len(imgs)]
            r, c = rng.integers(0, im.shape[0] - 8), rng.integers(0, im.shape[1] - 8)
            out[i] = im[r:r + 8, c:c + 8].transpose(2, 0, 1) / 127.5 - 1.0
        return out
    raise AmedValueError(f"unknown dataset {name!r}; expected 'digits' or 'patches'")


def digits_split(seed: int = 0, n_test: int = 360):
    """Fixed train / held-out split of load_digits for the classifier: (x_tr, y_tr, x_te, y_te)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:, None] / 8.0 - 1.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(x))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], d.target[tr], x[te], d.target[te]


def _lr(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def _atomic_save(state: dict, record: dict, out: Path, name: str) -> dict:
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in state.items()})
    wpath = out / f"{name}.safetensors"
    atomic_write_bytes(wpath, blob)
    record = dict(record, weights=wpath.name, sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    atomic_write_bytes(out / f"{name}.json", (json.dumps(record, indent=2) + "\n").encode())
    return record


def train_denoiser(dataset: str, out: Path, steps: int, batch: int, lr: float, seed: int,
                   ema_decay: float, dtype: str, log_every: int = 100) -> dict:
    """EDM training of the embedded U-Net; saves the EMA weights and the record."""
    name = {"digits": "digits-8", "patches": "patches-8"}[dataset]
    spec = SPECS[name]
    torch.manual_seed(seed)
    images = torch.from_numpy(load_dataset(dataset, seed=seed))
    # The model works in a zero-mean space (data minus the per-pixel mean image, added back by the
    # adapter's decode): AFS assumes D(x; sigma_max) ~ 0, true for CIFAR-like [-1, 1] images but not for
    # digits, whose background pulls the mean to -0.39 (AFS then mis-steers the first step).
    mean_image = images.mean(0)
    data = images - mean_image
    sd = float(data.std())
    net = build_network(spec, sigma_data=sd).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    params = sum(p.numel() for p in net.parameters())
    print(f"{name}: {len(data)} images, sigma_data={sd:.4f}, {params} parameters", flush=True)
    t0, losses = time.time(), []
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, steps, lr, warmup=200)
        y = data[torch.randint(len(data), (batch,), generator=g)]
        if dataset == "patches":  # horizontal flip
            flip = torch.rand(batch, generator=g) < 0.5
            y = torch.where(flip[:, None, None, None], y.flip(-1), y)
        sigma = (torch.randn(batch, generator=g) * P_STD + P_MEAN).exp()
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        n = torch.randn(y.shape, generator=g) * sigma[:, None, None, None]
        D = net(y + n, sigma)
        loss = (weight[:, None, None, None] * (D - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # EMA with warm-up (decay grows from 0.1 to ema_decay).
        beta = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1 - beta)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f} "
                  f"{time.time() - t0:.0f}s", flush=True)
    wall = time.time() - t0
    state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
    fp16_err = None
    if dtype == "fp16":
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
        fp16_err = _fp16_error(ema, state, data, sd)
    state[MEAN_KEY] = mean_image.float().contiguous()
    record = dict(
        name=name, kind="denoiser", dataset=dataset, n_images=len(data), sigma_data=sd,
        data_mean=float(images.mean()), centered=True, mean_image_key=MEAN_KEY, config=spec.config, params=params,
        invocation="python -m amed.models.train_embedded " + shlex.join(sys.argv[1:]),
        seed=seed, steps=steps, batch=batch, lr=lr, ema_decay=ema_decay, dtype=dtype,
        loss=dict(P_mean=P_MEAN, P_std=P_STD, weight="(sigma^2+sd^2)/(sigma*sd)^2"),
        augmentation="hflip" if dataset == "patches" else "none", fp16_rms_error_of_D=fp16_err,
        final_loss=float(np.mean(losses[-min(200, len(losses)):])), wall_seconds=round(wall, 1),
        torch_threads=torch.get_num_threads(), torch_version=torch.__version__, license=spec.license,
    )
    return _atomic_save(state, record, out, name)


def _fp16_error(ema: torch.nn.Module, state: dict, data: torch.Tensor, sd: float) -> float:
    """RMS change of D(x; sigma) from storing the EMA weights in fp16, over sigma in [0.002, 80]."""
    g = torch.Generator().manual_seed(1)
    y = data[torch.randint(len(data), (256,), generator=g)]
    sigma = torch.logspace(math.log10(0.002), math.log10(80.0), 256)
    x = y + torch.randn(y.shape, generator=g) * sigma[:, None, None, None]
    half = copy.deepcopy(ema)
    half.load_state_dict({k: v.float() for k, v in state.items()})
    with torch.no_grad():
        return float((ema(x, sigma) - half(x, sigma)).pow(2).mean().sqrt())


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random +-1 pixel translation (pad with the background value -1)."""
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=g).tolist()
    return xp[:, :, dy:dy + 8, dx:dx + 8]


def train_classifier(out: Path, steps: int, batch: int, lr: float, seed: int) -> dict:
    """Train the FD-digits feature network on a fixed split; report held-out accuracy."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = (torch.from_numpy(a) for a in digits_split(seed))
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    t0, losses = time.time(), []
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, steps, lr, warmup=50)
        idx = torch.randint(len(xtr), (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(net(_shift(xtr[idx], g)), ytr[idx].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        acc = float((net(xte).argmax(1) == yte).float().mean())
        acc_tr = float((net(xtr).argmax(1) == ytr).float().mean())
    print(f"classifier: held-out accuracy {acc:.4f} ({len(xte)} images), train {acc_tr:.4f}", flush=True)
    record = dict(
        name="digits-8-features", kind="classifier", dataset="digits", feature_dim=64,
        n_train=len(xtr), n_test=len(xte), split_seed=seed, test_accuracy=acc, train_accuracy=acc_tr,
        params=sum(p.numel() for p in net.parameters()),
        invocation="python -m amed.models.train_embedded " + shlex.join(sys.argv[1:]),
        seed=seed, steps=steps, batch=batch, lr=lr, augmentation="random +-1 pixel shift",
        final_loss=float(np.mean(losses[-100:])), wall_seconds=round(time.time() - t0, 1),
        torch_version=torch.__version__,
    )
    return _atomic_save(net.state_dict(), record, out, "digits-8-features")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m amed.models.train_embedded", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["digits", "patches"], default="digits")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "assets")
    p.add_argument("--features", action="store_true", help="train the FD feature classifier instead")
    p.add_argument("--steps", type=int, default=None, help="default: 2500 (denoiser), 1500 (classifier)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 (denoiser), 2e-3 (classifier)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp16", help="stored weight precision")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.features:
        if a.dataset != "digits":
            p.error(f"--features is only defined for --dataset digits, got {a.dataset!r}")
        rec = train_classifier(a.out, a.steps or 1500, a.batch, a.lr or 2e-3, a.seed)
    else:
        rec = train_denoiser(a.dataset, a.out, a.steps or 2500, a.batch, a.lr or 1e-3, a.seed, a.ema, a.dtype)
    print(json.dumps({k: rec[k] for k in ("name", "sha256", "final_loss", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
