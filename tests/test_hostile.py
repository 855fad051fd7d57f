"""Hostile configs, files and inputs (issue 12): each is refused with one line naming the bad value.

Every test here failed on dc53b93: the input was accepted and gave a number, hung, read until memory ran
out, or ended in a traceback. Tests that could hang or exhaust memory on a broken build guard themselves
(a FIFO is opened for writing now and then so a blocked reader gets EOF; reads run under an address-space
cap) so that they fail instead.
"""

import contextlib
import hashlib
import json
import os
import pickle
import re
import resource
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

import amed
from amed.cli import main
from amed.models.base import Denoiser

SHAPE = (1, 8, 8)


# ------------------------------------------------------------------------------------------ helpers
def refused(capsys, argv, *needles) -> str:
    """`amed argv` exits 2 with one line on stderr (no traceback) that contains every needle."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    for n in needles:
        assert n in err, err
    return err


def make_fifo(path):
    """A FIFO; a daemon opens it for writing every few seconds so a reader that blocked on it gets EOF."""
    os.mkfifo(path)

    def unblock():
        for _ in range(24):
            time.sleep(5)
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # nobody is reading (the good case), or the test is over
                pass

    threading.Thread(target=unblock, daemon=True).start()
    return path


@contextlib.contextmanager
def memory_cap(extra=1 << 30):
    """Cap this process's address space at its current size + extra, so a runaway read is a MemoryError."""
    with open("/proc/self/statm") as f:
        vsize = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    old = resource.getrlimit(resource.RLIMIT_AS)
    cap = vsize + extra if old[1] == resource.RLIM_INFINITY else min(vsize + extra, old[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def shard(path, seeds, images=None, **arrays):
    """A sample file as `amed sample` writes it (random digits-sized images unless given)."""
    rng = np.random.default_rng(int(seeds[0]) if len(seeds) else 0)
    if images is None:
        images = rng.integers(0, 256, (len(seeds), 8, 8, 1), dtype=np.uint8)
    np.savez(path, images=images, seeds=np.asarray(seeds, dtype=np.int64), **arrays)
    return path


@pytest.fixture(scope="module")
def model():
    return amed.load_model("digits-8")


@pytest.fixture(scope="module")
def trained(model):
    """A (briefly) trained AMED-Solver predictor for the embedded model: it reads bottleneck features."""
    return amed.train_predictor(model, SHAPE, solver="amed", nfe=3, M=1, num_trajectories=8, batch=8)


@pytest.fixture()
def ref(tmp_path):
    from amed.fid import save_stats

    return save_stats(tmp_path / "ref.npz", np.zeros(64), np.eye(64))


def save_format_1(pred, stem):
    """Write a predictor the way dc53b93 did (format 1: the record is not bound to the weights)."""
    from safetensors.torch import save as st_save

    blob = st_save({k: v.contiguous() for k, v in pred.state_dict().items()},
                   metadata={"format": "amed-predictor", "version": "1"})
    config = pred.config.to_json()
    config.pop("features", None)
    (stem.parent / (stem.name + ".safetensors")).write_bytes(blob)
    rec = {"format": "amed-predictor", "version": 1, "weights": stem.name + ".safetensors",
           "weights_sha256": hashlib.sha256(blob).hexdigest(), "num_parameters": 8950, "config": config}
    (stem.parent / (stem.name + ".json")).write_text(json.dumps(rec))
    return stem.parent / (stem.name + ".json")


# ------------------------------------------------------------------ 2. an edited predictor record
@pytest.mark.parametrize("field,value", [("nfe", 5), ("solver", "dpm2"), ("schedule", "polynomial"),
                                         ("scale_dir", 0.5), ("afs", False)])
def test_an_edited_predictor_record_is_refused(tmp_path, capsys, trained, field, value):
    trained.save(tmp_path / "p")
    path = tmp_path / "p.json"
    rec = json.loads(path.read_text())
    assert rec["config"][field] != value
    rec["config"][field] = value
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=rf"p.json: {field} is {value!r} in the record but .* in the weights"):
        amed.load_predictor(path)
    refused(capsys, ["sample", "--predictor", path, "--seeds", "0-3", "--quiet", "--out", tmp_path / "x.npz"],
            f"{field} is {value!r} in the record")
    assert not (tmp_path / "x.npz").exists()


# --------------------------------------------------- 3. a denoiser without the bottleneck feature
class NoFeature(Denoiser):
    """An adapter around the embedded model that names no feature module (with_feature gives zeros)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.info = inner, inner.info

    def denoise(self, x, sigma):
        return self.inner(x, sigma)


def test_a_predictor_trained_on_features_refuses_a_denoiser_without_them(tmp_path, model, trained):
    noise = amed.randn_seeds(range(4), SHAPE)
    amed.sample(model, noise, predictor=trained)  # the adapter supplies the feature
    for den in (lambda x, s: model(x, s), NoFeature(model)):
        with pytest.raises(ValueError, match="trained on the bottleneck feature of model 'digits-8'.* supplies none"):
            amed.sample(den, noise, predictor=trained)
    assert trained.config.features is True  # recorded by training, and saved with the predictor
    # A predictor saved by dc53b93 (no 'features' in its record) naming a registered model: the same.
    old = save_format_1(trained, tmp_path / "old")
    with pytest.warns(UserWarning, match="format 1"):
        p1 = amed.load_predictor(old)
    with pytest.raises(ValueError, match="supplies none"):
        amed.sample(lambda x, s: model(x, s), noise, predictor=p1)


def test_a_feature_of_the_wrong_shape_is_an_error(model, trained):
    class Coarse:  # a bring-your-own denoiser whose 'bottleneck' is 4x4
        info = model.info

        def __call__(self, x, sigma):
            return model(x, sigma)

        def with_feature(self, x, sigma):
            D, h = model.with_feature(x, sigma)
            return D, h[:, :4, :4]

    with pytest.raises(ValueError, match=r"with_feature must return the bottleneck feature as \[B, 8, 8\] = "
                                         r"\[4, 8, 8\], got \[4, 4, 4\]"):
        amed.sample(Coarse(), amed.randn_seeds(range(4), SHAPE), predictor=trained)


# ------------------------------------------------------------------------ 4. misspelt keywords
@pytest.mark.parametrize("kw,name", [({"shedule": "logsnr"}, "'shedule' (did you mean 'schedule'?)"),
                                     ({"sigma_mx": 10.0}, "'sigma_mx' (did you mean 'sigma_max'?)"),
                                     ({"table": None}, "'table'")])  # discrete's option, not polynomial's
def test_misspelt_keywords_are_type_errors(model, trained, kw, name):
    noise = amed.randn_seeds(range(2), SHAPE)
    with pytest.raises(TypeError, match=re.escape(name)):
        amed.sample(model, noise, nfe=3, **kw)
    with pytest.raises(TypeError, match="unexpected keyword"):
        amed.sample_trajectory(model, noise, nfe=3, **kw)
    with pytest.raises(TypeError, match="unexpected keyword"):  # with a predictor too
        amed.sample(model, noise, predictor=trained, **kw)
    with pytest.raises(TypeError, match="unexpected keyword"):
        amed.sample(model, noise, nfe=None, schedule=amed.get_schedule("logsnr", 4), **kw)


def test_get_schedule_refuses_unknown_keywords():
    with pytest.raises(TypeError, match=r"schedule 'logsnr' got unexpected keyword argument\(s\) \['tabel'\]"):
        amed.get_schedule("logsnr", 5, tabel=None)


# ------------------------------------------------------------------------------- 5. shapes
@pytest.mark.parametrize("noise_shape", [(2, 1, 16, 16), (2, 64), (3, 64), (4, 64), (8, 64), (2, 3, 8, 8)])
def test_noise_must_fit_the_model(model, noise_shape):
    noise = torch.randn(noise_shape)
    with pytest.raises(ValueError, match=rf"noise of shape \[{', '.join(map(str, noise_shape))}\] does not fit the "
                                         r"model: it samples \[1, 8, 8\] per image"):
        amed.sample(model, noise, nfe=3)


def test_noise_must_fit_the_predictors_model(model, trained):
    with pytest.raises(ValueError, match=r"noise of shape \[2, 64\]"):
        amed.sample(model, torch.randn(2, 64), predictor=trained)


@pytest.mark.parametrize("cut", ["batch", "row"])
def test_a_denoiser_output_of_another_shape_is_an_error(model, cut):
    def bad(x, sigma):
        D = model(x, sigma)
        return D[:1] if cut == "batch" else D[:, :, :1]  # both broadcast against x

    got = "[1, 1, 8, 8]" if cut == "batch" else "[4, 1, 1, 8]"
    with pytest.raises(ValueError, match=re.escape(f"returned D of shape {got} for x of shape [4, 1, 8, 8]")):
        amed.sample(bad, amed.randn_seeds(range(4), SHAPE), nfe=3)


# --------------------------------------------------------------------------- 7. FD inputs
@pytest.mark.parametrize("case,needle", [("nan_sigma", "sigma has 1 non-finite entries"),
                                         ("nan_mu", "mu has 1 non-finite entries"),
                                         ("negative", "not positive semi-definite"),
                                         ("asymmetric", "not symmetric")])
def test_bad_reference_statistics_are_refused(tmp_path, capsys, case, needle):
    from amed.fid import frechet_distance, load_stats

    mu, sigma = np.zeros(64), np.eye(64)
    if case == "nan_sigma":
        sigma[3, 5] = np.nan
    elif case == "nan_mu":
        mu[7] = np.nan
    elif case == "negative":
        sigma = -np.eye(64)
    else:
        sigma[0, 1] = 0.5
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
    with pytest.raises(ValueError, match=needle):
        load_stats(tmp_path / "ref.npz")
    with pytest.raises(ValueError, match=needle):
        frechet_distance(np.zeros(64), np.eye(64), mu, sigma)
    shard(tmp_path / "s.npz", range(16))
    refused(capsys, ["fid", "--images", tmp_path / "s.npz", "--ref", tmp_path / "ref.npz", "--out",
                     tmp_path / "fd.json"], needle)
    assert not (tmp_path / "fd.json").exists()


@pytest.mark.parametrize("dtype,low", [(np.float32, 0), (np.int64, 0), (np.int16, -255), (np.bool_, 0)])
def test_fid_images_must_be_uint8(tmp_path, capsys, ref, dtype, low):
    images = np.random.default_rng(0).integers(low, 256, (16, 8, 8, 1)).astype(dtype)
    shard(tmp_path / "s.npz", range(16), images=images)
    refused(capsys, ["fid", "--images", tmp_path / "s.npz", "--ref", ref],
            f"images must be uint8 [N, H, W, C] with H x W x C = 8x8x1 for this metric, got {np.dtype(dtype)}")


def test_digit_features_refuse_integer_and_nonfinite_images():
    from amed.features import digit_features

    with pytest.raises(ValueError, match="float images in"):
        digit_features(torch.zeros(2, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        digit_features(torch.full((2, 1, 8, 8), float("nan")))


# ------------------------------------------------------------------- 8. shards against seeds
def test_a_copied_shard_is_refused(tmp_path, capsys, ref):
    a = shard(tmp_path / "000000.npz", range(0, 8))
    (tmp_path / "000008.npz").write_bytes(a.read_bytes())
    refused(capsys, ["fid", "--images", a, tmp_path / "000008.npz", "--ref", ref],
            "a shard named 000008.npz starts at seed 8, this one starts at seed 0")
    (tmp_path / "b.npz").write_bytes(a.read_bytes())
    refused(capsys, ["fid", "--images", a, tmp_path / "b.npz", "--ref", ref],
            "seed 0 occurs twice in the inputs", "b.npz (image 0)")


def test_fid_seeds_states_what_the_inputs_hold(tmp_path, capsys, ref):
    files = [shard(tmp_path / "000000.npz", range(0, 8)), shard(tmp_path / "000008.npz", range(8, 16))]
    assert main(["fid", "--images", *map(str, files), "--ref", str(ref), "--seeds", "0-15"]) == 0
    refused(capsys, ["fid", "--images", *files, "--ref", ref, "--seeds", "0-23"],
            "--seeds states 24 seeds, the inputs hold 16 images")
    refused(capsys, ["fid", "--images", *files[::-1], "--ref", ref, "--seeds", "0-15"],
            "image 0 has seed 8, --seeds says seed 0")
    shard(tmp_path / "x.npz", [0, 1, 2, 3, 4, 5, 7, 6])
    refused(capsys, ["fid", "--images", tmp_path / "x.npz", "--ref", ref, "--seeds", "0-7"],
            "image 6 has seed 7, --seeds says seed 6")


# ---------------------------------------------------------------- 9. special files and bombs
def test_a_fifo_model_is_refused(tmp_path, capsys):
    fifo = make_fifo(tmp_path / "model.pkl")
    refused(capsys, ["sample", "--model", fifo, "--seeds", "0-1", "--quiet", "--out", tmp_path / "x.npz"],
            "is a FIFO; give a regular file")


def test_a_fifo_predictor_record_is_refused(tmp_path, capsys, trained):
    trained.save(tmp_path / "p")
    (tmp_path / "p.json").unlink()
    make_fifo(tmp_path / "p.json")
    with pytest.raises(ValueError, match="predictor record .*p.json' is a FIFO"):
        amed.load_predictor(tmp_path / "p.json")
    refused(capsys, ["sample", "--predictor", tmp_path / "p.json", "--seeds", "0-1", "--quiet",
                     "--out", tmp_path / "x.npz"], "is a FIFO")


def test_special_files_are_refused_everywhere(tmp_path):
    from amed.fid import load_stats
    from amed.models.sd import read_captions

    with pytest.raises(ValueError, match="is a FIFO"):
        load_stats(make_fifo(tmp_path / "ref.npz"))
    with pytest.raises(ValueError, match="is a FIFO"):
        read_captions(make_fifo(tmp_path / "captions.csv"))
    with pytest.raises(ValueError, match="is a FIFO"):
        amed.load_model(make_fifo(tmp_path / "net.pt"))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_weights_linked_to_dev_zero_are_refused(tmp_path, trained):
    trained.save(tmp_path / "p")
    (tmp_path / "p.safetensors").unlink()
    (tmp_path / "p.safetensors").symlink_to("/dev/zero")
    with memory_cap(), pytest.raises(ValueError, match="predictor weights .* is a character device"):
        amed.load_predictor(tmp_path / "p.json")


def _bomb(path, n):
    """A sample file declaring n digits images: 16 random ones, then zeros (n x 64 bytes deflate to ~n / 16)."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("images.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, 8, 8, 1)})
            f.write(rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8).tobytes())
            zero, left = bytes(16 << 20), (n - 16) * 64
            while left:
                f.write(zero[:min(left, len(zero))])
                left -= min(left, len(zero))
    return path


def test_fid_num_reads_only_the_images_it_uses(tmp_path, capsys, ref):
    bomb = _bomb(tmp_path / "bomb.npz", 4_000_000)  # 256 MB of pixels in a ~250 kB file
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        rc = main(["fid", "--images", str(bomb), "--ref", str(ref), "--num", "16"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rc == 0 and "over 16 images" in capsys.readouterr().out
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MB traced for 16 images of 64 bytes"


def test_an_npz_header_that_lies_about_its_size_is_refused(tmp_path, capsys, ref):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("images.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (40_000_000, 8, 8, 1)})
            f.write(bytes(64 * 16))
    refused(capsys, ["fid", "--images", path, "--ref", ref, "--num", "16"],
            "array 'images' declares shape (40000000, 8, 8, 1)", "the archive holds 1024 bytes for it")


# ------------------------------------------------------------------ 10. one line, not a traceback
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_refused_pickle_is_one_line(tmp_path, capsys):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"ema": _Evil()}, protocol=4))
    refused(capsys, ["sample", "--model", evil, "--seeds", "0-1", "--quiet", "--out", tmp_path / "x.npz"],
            "refusing to load global", "system")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_absent_device_is_one_line(tmp_path, capsys):
    refused(capsys, ["sample", "--device", "cuda", "--seeds", "0-1", "--quiet", "--out", tmp_path / "x.npz"],
            "device 'cuda' is not available on this machine")
    refused(capsys, ["sample", "--device", "gpu", "--seeds", "0-1", "--quiet", "--out", tmp_path / "x.npz"],
            "unknown device 'gpu'")


def test_a_diverging_run_is_one_line(tmp_path, capsys):
    refused(capsys, ["sample", "--sigma-max", "1e39", "--nfe", "3", "--seeds", "0-1", "--quiet",
                     "--out", tmp_path / "x.npz"], "non-finite state after step 0")
    assert not (tmp_path / "x.npz").exists()


def test_an_output_that_is_a_directory_is_one_line(tmp_path, capsys):
    refused(capsys, ["sample", "--nfe", "3", "--seeds", "0-1", "--quiet", "--out", tmp_path],
            f"--out {str(tmp_path)!r} is a directory")
    (tmp_path / "file").write_text("")
    refused(capsys, ["teacher", "--nfe", "3", "--trajectories", "8", "--quiet", "--out", tmp_path / "file"],
            "is a file; a teacher cache is a directory")


def test_a_corrupt_safetensors_header_is_one_line(tmp_path, capsys, trained):
    stem = tmp_path / "p"
    record = save_format_1(trained, stem)
    blob = (1 << 40).to_bytes(8, "little") + b'{"a": 1}'  # declares a 1 TiB header
    (tmp_path / "p.safetensors").write_bytes(blob)
    rec = json.loads(record.read_text())
    rec["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    record.write_text(json.dumps(rec))
    refused(capsys, ["sample", "--predictor", record, "--seeds", "0-1", "--quiet", "--out", tmp_path / "x.npz"],
            "corrupt safetensors header (it declares 1099511627776 header bytes, the file has 16 in all)")


def test_a_cache_meta_that_is_not_an_object_is_one_line(tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "meta.json").write_text("[1, 2, 3]")
    refused(capsys, ["train", "--nfe", "3", "--trajectories", "8", "--batch", "8", "--cache", tmp_path / "cache",
                     "--quiet", "--out", tmp_path / "p"], "must hold a JSON object, got list")


@pytest.mark.parametrize("cmd", ["sample", "fid"])
def test_a_huge_seed_range_is_one_line(tmp_path, capsys, ref, cmd):
    argv = (["sample", "--quiet", "--out", tmp_path / "x.npz"] if cmd == "sample" else
            ["fid", "--images", shard(tmp_path / "s.npz", range(4)), "--ref", ref])
    with memory_cap():
        refused(capsys, [*argv, "--seeds", "0-99999999999"],
                "seeds '0-99999999999' name 100000000000 seeds, more than the 1000000 one run takes")
