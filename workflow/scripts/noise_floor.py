"""The noise floor of one dataset's metric: FD of N real images (drawn without replacement) against the full
reference, for every N its cells evaluate - what a perfect sampler would score. Needs the real images: the
embedded data set; for downloaded reference statistics it records why there is none."""
import json
import sys


from amed._io import atomic_write_bytes
from amed.fid import load_stats
from amed.uncertainty import Reference, noise_floor

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
p = snakemake.params  # noqa: F821
out = {"ref": p.ref, "repeats": int(p.repeats), "floor": {}}
if p.ref == "digits":
    import torch

    from amed.features import digit_features
    from amed.models.base import to_uint8
    from amed.models.train_embedded import load_dataset

    data = to_uint8(torch.from_numpy(load_dataset("digits")))  # quantised exactly as samples and the reference
    feats = digit_features(data.permute(0, 3, 1, 2).float() / 127.5 - 1.0).numpy()
    ref = Reference(*load_stats(snakemake.input.ref))  # noqa: F821
    for n in p.n:
        if n <= len(feats):
            mean, sd = noise_floor(feats, ref, int(n), repeats=int(p.repeats))
            out["floor"][str(n)] = {"mean": mean, "sd": sd}
        else:
            out["floor"][str(n)] = {"mean": None, "sd": None, "why": f"only {len(feats)} real images"}
    out["real_images"] = len(feats)
else:
    out["why"] = "the reference statistics were not computed here from images available to the workflow"
atomic_write_bytes(snakemake.output[0], (json.dumps(out, indent=1) + "\n").encode())  # noqa: F821
print(json.dumps(out))
