"""The `amed` command on the embedded model: outputs, summary lines, and one-line errors with exit 2."""

import json

import numpy as np
import pytest

from amed.cli import main


@pytest.mark.slow
def test_sample_train_fid_round_trip(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sample", "--solver", "ipndm", "--nfe", "3", "--seeds", "0-15", "--batch", "8", "--quiet",
                 "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (16, 8, 8, 1) and f["images"].dtype == np.uint8
        assert f["seeds"].tolist() == list(range(16))
    assert "sampled 16 images" in capsys.readouterr().out
    stem = tmp_path / "pred"
    assert main(["train", "--solver", "amed", "--nfe", "3", "--M", "1", "--trajectories", "16", "--batch", "8",
                 "--quiet", "--out", str(stem)]) == 0
    rec = json.loads((tmp_path / "pred.json").read_text())
    assert rec["config"]["nfe"] == 3 and rec["config"]["model"] == "digits-8"
    out2 = tmp_path / "a.npz"
    assert main(["sample", "--predictor", str(stem) + ".json", "--seeds", "16-23", "--quiet", "--out", str(out2)]) == 0
    # A flag that disagrees with the predictor's record is an error naming it, not silently ignored.
    assert main(["sample", "--predictor", str(stem) + ".json", "--nfe", "5", "--seeds", "0-7", "--quiet",
                 "--out", str(tmp_path / "b.npz")]) == 2
    assert "trained for nfe=3, got nfe=5" in capsys.readouterr().err
    assert not (tmp_path / "b.npz").exists()
    ref = tmp_path / "ref.npz"
    assert main(["fid-ref", "--out", str(ref)]) == 0
    # (amed fid refuses a seed twice across its inputs, so the two files hold seeds 0-15 and 16-23.)
    assert main(["fid", "--images", str(out), str(out2), "--ref", str(ref), "--out", str(tmp_path / "fd.json")]) == 0
    assert json.loads((tmp_path / "fd.json").read_text())["num_images"] == 24


@pytest.mark.parametrize("argv,msg", [
    (["sample", "--solver", "heun", "--nfe", "5"], "NFE=5 is unreachable with afs=False"),
    (["sample", "--solver", "euler"], "unknown solver 'euler'"),
    (["sample", "--seeds", "9-3"], "bad seed range"),
    (["sample", "--nfe", "0"], "--nfe must be >= 1"),
    (["sample", "--model", "no-such-model"], "no-such-model"),
    (["train", "--scale-dir", "1.5", "--trajectories", "8"], "scale_dir must lie in [0, 1), got 1.5"),
    (["train", "--nfe", "4", "--trajectories", "8"], "NFE=4 is unreachable with afs=True"),
    (["fid", "--images", "a.npz", "--ref", "r.npz", "--num", "-1"], "--num must be >= 1, got -1"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, argv, msg):
    out = tmp_path / "x.npz"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "Traceback" not in err and err.count("\n") == 0
    assert not out.exists()


def test_fid_rejects_a_file_without_images(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(64), sigma=np.eye(64))
    assert main(["fid", "--images", str(bad), "--ref", str(ref)]) == 2
    assert "holds no 'images' array" in capsys.readouterr().err
    # The reference is read first: a bad one is named before the images are opened.
    assert main(["fid", "--images", str(bad), "--ref", str(bad)]) == 2
    assert "lack key(s) ['mu', 'sigma']" in capsys.readouterr().err


def test_training_refuses_a_cache_built_for_other_settings(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["teacher", "--solver", "amed", "--nfe", "3", "--M", "1", "--trajectories", "16", "--batch", "8",
                 "--quiet", "--out", str(cache)]) == 0
    assert main(["train", "--solver", "amed", "--nfe", "3", "--M", "3", "--trajectories", "16", "--batch", "8",
                 "--cache", str(cache), "--quiet", "--out", str(tmp_path / "p")]) == 2
    assert "was built for M=1, this training run needs M=3" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_compile_flag(tmp_path, capsys, monkeypatch):
    """--compile on goes through amed.compile (checked against eager on its first call) and gives the same images."""
    import amed.compile

    made = []
    original = amed.compile.compile_denoiser

    def quick(model, **kw):  # the 'eager' dynamo backend: the same code path, without inductor's ~40 s build
        made.append(kw)
        return original(model, backend="eager", **kw)

    monkeypatch.setattr(amed.compile, "compile_denoiser", quick)
    args = ["sample", "--solver", "ipndm", "--nfe", "3", "--seeds", "0-7", "--batch", "8", "--quiet"]
    assert main(args + ["--compile", "off", "--out", str(tmp_path / "e.npz")]) == 0
    assert main(args + ["--out", str(tmp_path / "auto.npz")]) == 0  # auto on CPU: eager
    assert made == []
    assert main(args + ["--compile", "on", "--out", str(tmp_path / "c.npz")]) == 0
    assert made == [{"mode": None, "fallback": False}]
    with np.load(tmp_path / "e.npz") as e, np.load(tmp_path / "c.npz") as c:
        assert np.abs(e["images"].astype(int) - c["images"].astype(int)).max() <= 1
        assert json.loads(str(c["meta"]))["compiled"] and not json.loads(str(e["meta"]))["compiled"]
    assert main(args + ["--compile", "reduce-overhead", "--out", str(tmp_path / "r.npz")]) == 2
    assert "needs --device cuda" in capsys.readouterr().err
    assert not (tmp_path / "r.npz").exists()
