"""FLOPs of one network call per image for the paper's models, counted on this project's clean-room networks.

torch.utils.flop_counter counts the multiply-adds of matmuls and convolutions (2 FLOPs each) of one forward
pass at batch 1, with the architectures of the released checkpoints (shared/reference/checkpoints.md 2.1;
random weights: the count does not depend on them). Writes workflow/resources/network_costs.csv, which the
workflow's run plan turns into GPU-hours at an assumed throughput (config key plan.gpu_tflops).

    python benchmarks/network_flops.py --out workflow/resources/network_costs.csv
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from amed.models.cm import BEDROOM_CONFIG, UNetModel
from amed.models.edm import DhariwalUNet, SongUNet

from _common import write_csv

# Stated, not counted here (diffusers' UNet is not built offline at full size): SD v1.x UNet at a 64x64 latent.
SD_GFLOPS = 400.0
SD_NOTE = "stated: ~400 GFLOPs per UNet call at 64x64 latents (an estimate; CFG doubles the calls, counted in NFE)"
INCEPTION_GFLOPS = 11.5  # Inception-v3 at 299x299 (5.7 G multiply-adds, Szegedy et al. 2016)


def count(net: torch.nn.Module, x: torch.Tensor, *args, **kw) -> float:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net.eval()(x, *args, **kw)
    return fc.get_total_flops() / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="workflow/resources/network_costs.csv")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    one = torch.ones(1)
    rows = []
    for name, net, shape, kw in [
        ("cifar10", SongUNet(32, 3, 3, model_channels=128, channel_mult=(2, 2, 2), augment_dim=9), (3, 32, 32), {}),
        ("ffhq", SongUNet(64, 3, 3, model_channels=128, channel_mult=(1, 2, 2, 2), augment_dim=9), (3, 64, 64), {}),
        ("afhqv2", SongUNet(64, 3, 3, model_channels=128, channel_mult=(1, 2, 2, 2), augment_dim=9), (3, 64, 64), {}),
        ("imagenet64", DhariwalUNet(64, 3, 3, label_dim=1000), (3, 64, 64), {"class_labels": torch.zeros(1, 1000)}),
        ("lsun_bedroom", UNetModel(**BEDROOM_CONFIG), (3, 256, 256), {}),
    ]:
        g = count(net, torch.zeros(1, *shape), one, **kw)
        rows.append({"model": name, "params": sum(p.numel() for p in net.parameters()), "gflops_per_call": round(g, 3),
                     "source": "counted: torch.utils.flop_counter, this project's network, batch 1"})
        print(rows[-1], flush=True)
        del net
    import amed  # noqa: PLC0415

    emb = amed.load_model("digits-8")  # the embedded default: its adapter (preconditioning included)
    rows.append({"model": "digits-8", "params": sum(p.numel() for p in emb.parameters()),
                 "gflops_per_call": round(count(emb, torch.zeros(1, *emb.info.shape), one), 4),
                 "source": "counted: torch.utils.flop_counter, the embedded adapter, batch 1"})
    for name in ("sd-v1-4", "sd-v1-5"):
        rows.append({"model": name, "params": "", "gflops_per_call": SD_GFLOPS, "source": SD_NOTE})
    rows.append({"model": "inception-2015-12-05", "params": "", "gflops_per_call": INCEPTION_GFLOPS,
                 "source": "stated: Inception-v3 at 299x299, 5.7 G multiply-adds (Szegedy et al. 2016)"})
    write_csv(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
