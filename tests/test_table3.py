"""Table 3 (Stable Diffusion, CFG, MS-COCO prompts) end to end on a tiny diffusers pipeline and a fake Inception.

The fake Inception is a TorchScript module with clean-fid's interface (``layers``, ``forward(x,
return_features)`` -> [B, 2048]) saved as ``inception-2015-12-05.pt`` under ``$AMED_INCEPTION_DIR``; the MS-COCO
val2014 images are a handful of JPEGs the tests write (a zip and a folder), pointed at by ``$AMED_COCO_VAL2014``.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import amed.fid
import amed.inception
from amed.cli import main
from amed.fid import FeatureMoments, coco_image, coco_reference_stats, feature_stats, inception_features, load_stats
from amed.models.sd import caption_index
from amed.reference import reference_stats
from amed.training import TRAIN_SEED_BASE, training_seeds

PIL = pytest.importorskip("PIL.Image")

CAPTIONS = ["a cat", "a dog", "a photo", "cat !", "a cat !", "a dog !", "photo !", "a photo !"]
IMAGE_IDS = [3, 1, 2, 1, 4, 3, 2, 4]  # 4 distinct images, in first-seen order 3, 1, 2, 4; image 5 is not named


# ---- fixtures -------------------------------------------------------------------------------------------------
class _Layers(torch.nn.Module):
    """Pool to 4x4, a fixed random linear map to 2048 features, tanh."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 16, 2048)

    def forward(self, x):
        return torch.tanh(self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)))


class _FakeInception(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = _Layers()

    def forward(self, x, return_features: bool = False):
        return self.layers((x - 128.0) / 128.0)  # float [0, 255] NCHW at any resolution, like the real one


@pytest.fixture(scope="session")
def fake_inception_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("inception")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_FakeInception().eval()), str(d / amed.fid.INCEPTION_FILE))
    return d


@pytest.fixture
def inception(monkeypatch, fake_inception_dir):
    monkeypatch.setenv("AMED_INCEPTION_DIR", str(fake_inception_dir))
    monkeypatch.setattr(amed.inception, "_MODEL", None)  # the module-level cache: load the fake, forget it afterwards
    return fake_inception_dir


def _name(i: int) -> str:
    return f"COCO_val2014_{i:012d}.jpg"


def _images() -> dict[int, "PIL.Image"]:
    """Non-square, square, grayscale: noise, so any shift of the crop shows in the pixels."""
    rng = np.random.default_rng(0)
    sizes = {1: (40, 24), 2: (24, 40), 3: (30, 30), 4: (33, 20), 5: (20, 20)}  # (w, h)
    out = {}
    for i, (w, h) in sizes.items():
        if i == 3:
            out[i] = PIL.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
        else:
            out[i] = PIL.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
    return out


@pytest.fixture(scope="session")
def coco(tmp_path_factory):
    """A val2014-like zip and folder of JPEGs, and a captions CSV (image_id, id, text) naming 4 of the 5 images."""
    d = tmp_path_factory.mktemp("coco")
    folder = d / "val2014"
    folder.mkdir()
    with zipfile.ZipFile(d / "val2014.zip", "w") as z:
        z.writestr("val2014/", "")
        for i, img in _images().items():
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            z.writestr(f"val2014/{_name(i)}", buf.getvalue())
            (folder / _name(i)).write_bytes(buf.getvalue())
    with open(d / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "id", "text"])
        w.writerows([[iid, 100 + k, text] for k, (iid, text) in enumerate(zip(IMAGE_IDS, CAPTIONS))])
    return d


# ---- COCO reference statistics -------------------------------------------------------------------------------
def test_coco_image_crops_the_centre_square_and_replicates_gray():
    # 30 x 10, three 10-column bands: the central square is exactly the green band.
    a = np.zeros((10, 30, 3), np.uint8)
    a[:, :10, 0], a[:, 10:20, 1], a[:, 20:, 2] = 255, 255, 255
    out = coco_image(PIL.fromarray(a), resolution=10)
    assert out.dtype == np.uint8 and out.shape == (10, 10, 3)
    assert (out[..., 1] == 255).all() and (out[..., [0, 2]] == 0).all()
    # Tall 24 x 40: rows 8..31; then PIL bicubic to 16 x 16.
    img = _images()[2]
    ref = np.asarray(img.crop((0, 8, 24, 32)).resize((16, 16), PIL.BICUBIC))
    np.testing.assert_array_equal(coco_image(img, 16), ref)
    # Odd margin (33 x 20): floor((33 - 20) / 2) = 6 columns on the left.
    img = _images()[4]
    np.testing.assert_array_equal(coco_image(img, 20), np.asarray(img)[:, 6:26])
    # Grayscale: the one channel, three times.
    g = coco_image(_images()[3], 30)
    np.testing.assert_array_equal(g, np.repeat(np.asarray(_images()[3])[..., None], 3, axis=2))


def _expected(src: Path, ids, resolution):
    imgs = np.stack([coco_image(PIL.open(src / _name(i)), resolution) for i in ids])
    return feature_stats(inception_features(imgs))


def test_coco_reference_stats_zip_folder_subset(tmp_path, coco, inception):
    out = coco_reference_stats(tmp_path / "ref.npz", resolution=16, images=coco / "val2014.zip",
                               captions=coco / "captions.csv", batch=3)
    mu, sigma = load_stats(out)
    mu_e, sigma_e = _expected(coco / "val2014", [3, 1, 2, 4], 16)  # the captions' distinct image_ids
    np.testing.assert_allclose(mu, mu_e, rtol=0, atol=1e-6)  # float32 features, batches of 3 vs 4
    np.testing.assert_allclose(sigma, sigma_e, rtol=0, atol=1e-6)
    with np.load(out) as z:
        assert (int(z["count"]), int(z["resolution"])) == (4, 16) and str(z["source"]).endswith("val2014.zip")
    # The folder gives the same statistics; without captions every image is used.
    seen = []
    mu_f, sigma_f = load_stats(coco_reference_stats(tmp_path / "f.npz", resolution=16, images=coco / "val2014",
                                                    captions=coco / "captions.csv", batch=3, progress=seen.append))
    np.testing.assert_allclose(mu_f, mu, rtol=1e-12)
    np.testing.assert_allclose(sigma_f, sigma, rtol=1e-10, atol=1e-14)
    assert sum(seen) == 4
    out = coco_reference_stats(tmp_path / "all.npz", resolution=16, images=coco / "val2014.zip")
    with np.load(out) as z:
        assert int(z["count"]) == 5
    np.testing.assert_allclose(load_stats(out)[0], _expected(coco / "val2014", [1, 2, 3, 4, 5], 16)[0], atol=1e-6)


def test_coco_reference_stats_errors(tmp_path, coco, inception, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,text\n1,a cat\n99,a dog\n")
    with pytest.raises(ValueError, match=r"1 of the 2 images .* e.g. 'COCO_val2014_000000000099.jpg'"):
        coco_reference_stats(tmp_path / "x.npz", images=coco / "val2014.zip", captions=bad)
    # No images given, no $AMED_COCO_VAL2014, offline, empty cache: a clear error, no download attempt.
    monkeypatch.delenv("AMED_COCO_VAL2014", raising=False)
    monkeypatch.setenv("AMED_OFFLINE", "1")
    monkeypatch.setenv("AMED_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"offline.*val2014\.zip.*AMED_COCO_VAL2014"):
        coco_reference_stats(tmp_path / "x.npz")
    # $AMED_COCO_VAL2014 is the default source.
    monkeypatch.setenv("AMED_COCO_VAL2014", str(coco / "val2014"))
    with np.load(coco_reference_stats(tmp_path / "env.npz", resolution=8)) as z:
        assert int(z["count"]) == 5 and str(z["source"]) == str(coco / "val2014")
    assert not (tmp_path / "x.npz").exists()


def test_fid_ref_makes_coco_and_checked_npz_references(tmp_path, coco, inception, capsys):
    """`amed fid-ref` and the workflow's fid_ref rule share one dispatch: amed.reference.reference_stats."""
    out = tmp_path / "coco.npz"
    assert main(["fid-ref", "--data", "coco-val2014", "--coco-images", str(coco / "val2014.zip"), "--captions",
                 str(coco / "captions.csv"), "--resolution", "16", "--quiet", "--out", str(out)]) == 0
    assert f"coco-val2014 (4 images, 16x16, inception features) -> {out}" in capsys.readouterr().out
    direct = coco_reference_stats(tmp_path / "d.npz", 16, images=coco / "val2014.zip", captions=coco / "captions.csv")
    for a, b in zip(load_stats(out), load_stats(direct)):
        np.testing.assert_array_equal(a, b)
    for argv, msg in [(["--data", "coco-val2014", "--metric", "fd-digits"], "use --metric inception, got --metric "
                                                                            "fd-digits"),
                      (["--data", "coco-val2014", "--features-out", "f.npy"], "--features-out is supported for --data "
                                                                              "digits, got --data coco-val2014"),
                      (["--data", "cifar10"], "an EDM-format .npz with mu and sigma (an https:// URL or a local path), "
                                              "got 'cifar10'")]:
        assert main(["fid-ref", *argv, "--out", str(tmp_path / "x.npz")]) == 2
        assert msg in capsys.readouterr().err
    # An EDM-format .npz (a URL goes through the download cache first) is checked, then copied as it is.
    assert reference_stats(str(out), tmp_path / "copy.npz").read_bytes() == out.read_bytes()
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="lack key"):
        reference_stats(str(tmp_path / "bad.npz"), tmp_path / "y.npz")
    assert not (tmp_path / "y.npz").exists() and not (tmp_path / "x.npz").exists()


def test_inception_takes_512px_samples_unresized(inception):
    seen = []
    model = amed.inception._inception()

    class Spy(torch.nn.Module):  # records what reaches the network (the fixture restores _MODEL)
        def forward(self, x):
            seen.append(tuple(x.shape))
            return model(x)

    amed.inception._MODEL = Spy()
    f = inception_features(np.full((3, 512, 512, 3), 7, np.uint8), batch=2)
    assert f.shape == (3, 2048) and seen == [(2, 3, 512, 512), (1, 3, 512, 512)]
    np.testing.assert_allclose(f[0], f[2], atol=1e-5)  # same image, batches of 2 and 1


def test_feature_moments_match_np_cov():
    f = np.random.default_rng(1).normal(5.0, 0.01, size=(50, 6))  # a large mean: the pivot avoids cancellation
    m = FeatureMoments()
    for i in range(0, 50, 7):
        m.add(f[i:i + 7])
    mu, sigma = m.stats()
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-9)


# ---- captions <-> seeds -----------------------------------------------------------------------------------------
def test_training_seeds_map_to_captions_deterministically():
    n = 7
    assert [caption_index(s, n) for s in range(n)] == list(range(n))  # evaluation seed i -> caption i
    seeds = training_seeds(0, 7000)
    idx = [caption_index(s, n) for s in seeds]
    assert idx == [caption_index(s, n) for s in seeds]  # a pure function of the seed
    counts = np.bincount(idx, minlength=n)
    assert counts.min() > 900 and counts.max() < 1100  # spread over every caption (expected 1000 each)
    steps = np.diff(idx) % n
    assert np.bincount(steps, minlength=n).max() < 1200  # not a walk through consecutive captions (seed % n)
    assert caption_index(training_seeds(1, 1)[0], 30000) != caption_index(training_seeds(0, 1)[0], 30000)
    for s in (n, TRAIN_SEED_BASE - 1, -1):
        with pytest.raises(ValueError, match=f"seed {s} has no caption"):
            caption_index(s, n)


# ---- the CLI on a tiny SD pipeline ------------------------------------------------------------------------------
SOLVER = ["--solver", "dpmpp2m", "--nfe", "4", "--schedule", "discrete", "--rho", "1", "--no-afs",
          "--opt", "max_order=2", "--opt", "predict_x0=false"]


def _captions(path: Path, captions=CAPTIONS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "text"])
        w.writerows([[iid, t] for iid, t in zip(IMAGE_IDS, captions)])
    return path


def _sample(pipe, out, seeds, caps, *extra):
    assert main(["sample", "--model", str(pipe), *SOLVER, "--guidance", "7.5", "--prompts", str(caps),
                 "--seeds", seeds, "--batch", "2", "--quiet", "--out", str(out), *extra]) == 0
    with np.load(out) as f:
        return f["images"], json.loads(str(f["meta"]))


@pytest.mark.slow
def test_cli_sample_teacher_train_on_sd(tmp_path, tiny_pipeline_8x8, capsys):
    pipe, caps = tiny_pipeline_8x8, _captions(tmp_path / "caps.csv")
    both, meta = _sample(pipe, tmp_path / "a.npz", "0-1", caps)
    assert both.shape == (2, 8, 8, 3) and both.dtype == np.uint8
    assert meta["guidance"] == 7.5 and meta["prompts"] == str(caps)
    one, _ = _sample(pipe, tmp_path / "b.npz", "1", caps)
    assert np.abs(one[0].astype(int) - both[1].astype(int)).max() <= 1  # sample i depends on seed i only
    # Prompt i <-> seed i: another caption for seed 1 changes image 1 only.
    other = _captions(tmp_path / "other.csv", [CAPTIONS[0], "cat cat cat"] + CAPTIONS[2:])
    changed, _ = _sample(pipe, tmp_path / "c.npz", "0-1", other)
    np.testing.assert_array_equal(changed[0], both[0])
    assert np.abs(changed[1].astype(int) - both[1].astype(int)).max() > 1

    # Teacher cache and plugin training on training seeds (>= 1e9), whose captions are hashed from the seed.
    amed_args = ["--teacher", "dpmpp2m", "--M", "2", "--teacher-opt", "max_order=2", "--teacher-opt",
                 "predict_x0=false", "--trajectories", "4", "--batch", "2", "--guidance", "7.5", "--prompts", str(caps),
                 "--quiet"]
    assert main(["teacher", "--model", str(pipe), *SOLVER, *amed_args, "--out", str(tmp_path / "cache")]) == 0
    assert main(["train", "--model", str(pipe), *SOLVER, *amed_args, "--scale-dir", "0", "--scale-time", "0.2",
                 "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "pred")]) == 0
    assert main(["sample", "--model", str(pipe), "--predictor", str(tmp_path / "pred.json"), "--guidance", "7.5",
                 "--prompts", str(caps), "--seeds", "0-3", "--batch", "2", "--quiet",
                 "--out", str(tmp_path / "p.npz")]) == 0
    capsys.readouterr()

    # Without prompts, seeds have no caption: a one-line error.
    assert main(["sample", "--model", str(pipe), *SOLVER, "--seeds", "0", "--quiet",
                 "--out", str(tmp_path / "n.npz")]) == 2
    assert "no captions list bound" in capsys.readouterr().err
    # Evaluation seeds beyond the captions list are an error, not a wrap-around.
    assert main(["sample", "--model", str(pipe), *SOLVER, "--prompts", str(caps), "--seeds", "8", "--quiet",
                 "--out", str(tmp_path / "n.npz")]) == 2
    assert "seed 8 has no caption" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--guidance", "7.5"], ["--prompts", "caps.csv"]])
def test_text_flags_on_a_pixel_model_are_an_error(tmp_path, capsys, flag):
    for cmd in ("sample", "teacher", "train"):
        assert main([cmd, "--model", "digits-8", *flag, "--quiet", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{flag[0]} apply to text-to-image" in err and "'digits-8'" in err and err.count("\n") == 0


@pytest.mark.slow
def test_fid_inception_on_sd_samples_and_dimension_check(tmp_path, tiny_pipeline_8x8, coco, inception, capsys):
    caps = _captions(tmp_path / "caps.csv")
    _sample(tiny_pipeline_8x8, tmp_path / "s.npz", "0-3", caps)
    ref = coco_reference_stats(tmp_path / "ref.npz", resolution=256, images=coco / "val2014.zip", captions=caps)
    assert main(["fid", "--images", str(tmp_path / "s.npz"), "--ref", str(ref), "--metric", "inception",
                 "--num", "4", "--out", str(tmp_path / "fid.json")]) == 0
    rec = json.loads((tmp_path / "fid.json").read_text())
    assert rec["num_images"] == 4 and math.isfinite(rec["value"]) and rec["value"] > 0
    assert main(["fid-ref", "--out", str(tmp_path / "digits.npz")]) == 0  # fd-digits statistics, not 2048-d
    capsys.readouterr()
    assert main(["fid", "--images", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "digits.npz"),
                 "--metric", "inception"]) == 2
    assert "gives 2048-d features: build the reference with the same metric" in capsys.readouterr().err


# ---- the workflow's Table 3 -------------------------------------------------------------------------------------
PLUGIN_OPTS = {"max_order": 2, "predict_x0": False}


def table3_config(pipe: Path, caps: Path) -> dict:
    """config/paper.yaml's sd_v1_4, shrunk: 8 samples in 2 shards, NFE 4, 4 training trajectories."""
    paper = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/paper.yaml").read_text())
    d = copy.deepcopy(paper["datasets"]["sd_v1_4"])
    d.update(model=str(pipe), prompts=str(caps), paper=None, num_samples=8, shard_size=4, batch=4, nfe=[4])
    d["methods"]["amed_plugin"]["train"].update(trajectories=4, batch=2, holdout=2, steps=2)
    assert d["methods"]["amed_plugin"]["options"] == PLUGIN_OPTS and d["ref"] == "coco-val2014"
    # 2048-d features: a bootstrap replicate costs seconds on a CPU, so few of them here.
    return {"datasets": {"sdtiny": d}, "table3": {"dataset": "sdtiny"}, "uncertainty": {"n_boot": 10}}


@pytest.mark.slow
def test_workflow_table3_end_to_end(tmp_path, tiny_pipeline_8x8, coco, fake_inception_dir, monkeypatch):
    pytest.importorskip("snakemake")
    import pandas as pd

    import test_workflow

    caps = _captions(tmp_path / "caps.csv")
    env = {**test_workflow.ENV, "AMED_INCEPTION_DIR": str(fake_inception_dir),
           "AMED_COCO_VAL2014": str(coco / "val2014.zip"), "HF_HUB_OFFLINE": "1", "AMED_OFFLINE": "1",
           "AMED_CACHE": str(tmp_path / "cache")}
    cfg = table3_config(tiny_pipeline_8x8, caps)
    monkeypatch.setattr(test_workflow, "ENV", env)  # smk() runs snakemake with test_workflow.ENV
    r = test_workflow.smk(tmp_path, cfg, "--cores", "2", "results/table3.csv")
    assert r.returncode == 0, r.stderr[-4000:]
    t3 = pd.read_csv(tmp_path / "results/table3.csv")
    assert sorted(t3["method"]) == ["amed_plugin", "dpmpp2m"]
    assert (t3["nfe"] == 8).all() and (t3["sampler_nfe"] == 4).all()  # CFG: each step is 2 NFE
    assert (t3["n_samples"] == 8).all() and (t3["metric"] == "inception").all()
    assert np.isfinite(t3["value"]).all() and (t3["value"] > 0).all()
    with np.load(tmp_path / "results/sdtiny/fid_ref.npz") as z:  # the prompts' 4 distinct images, at 256
        assert (int(z["count"]), int(z["resolution"])) == (4, 256)
    with np.load(tmp_path / "results/sdtiny/dpmpp2m/nfe4/samples/000004.npz") as z:
        assert z["seeds"].tolist() == [4, 5, 6, 7] and json.loads(str(z["meta"]))["guidance"] == 7.5


def test_fid_ref_inputs():
    import sys
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow/scripts"))
    try:
        import experiments
    finally:
        sys.path.pop(0)
    ds = {"sd": {"ref": "coco-val2014", "prompts": "caps.csv"}, "local": {"ref": "refs/x.npz", "prompts": None},
          "url": {"ref": "https://example.org/x.npz", "prompts": None}, "digits": {"ref": "digits", "prompts": None}}
    got = {k: experiments.fid_ref_input({"datasets": ds}, SimpleNamespace(dataset=k)) for k in ds}
    assert got == {"sd": {"prompts": "results/sd/prompts.csv"}, "local": {"ref": "refs/x.npz"}, "url": {}, "digits": {}}
