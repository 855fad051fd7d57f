"""amed.analysis: trajectory PCA (Fig. 4), relative alignment (Fig. 5), the figure/table writers."""

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import amed  # noqa: E402
import amed.testbed  # noqa: E402
from amed import analysis  # noqa: E402

torch.set_num_threads(1)
F64 = torch.float64


def _plane_trajectories(B=5, T=21, D=50, seed=0):
    """Trajectories x_t = o + a(t) u + b(t) v in a random 2-D affine plane: [T, B, D]."""
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0, 1, T, dtype=F64)
    out = []
    for _ in range(B):
        o, u, v = torch.randn(3, D, generator=g, dtype=F64)
        out.append(o + torch.cos(3 * s)[:, None] * u + (s**2)[:, None] * v)
    return torch.stack(out, 1)


def test_pca_of_planar_trajectories_is_exact():
    p = analysis.trajectory_pca(_plane_trajectories())
    assert p["proj_error"].shape == (5, 21)
    assert float(p["proj_error"].max()) < 1e-10
    assert torch.allclose(p["explained_mean"][1:], torch.ones_like(p["explained_mean"][1:]), atol=1e-12)
    assert float(p["explained_mean"][0]) < 1.0  # one component does not suffice for a curved planar path


def test_pca_of_a_3d_curve_has_error():
    s = torch.linspace(0, 2 * math.pi, 40, dtype=F64)
    helix = torch.stack([torch.cos(s), torch.sin(s), 0.5 * s, torch.zeros_like(s) + 3.0], 1)  # [T, D]
    p = analysis.trajectory_pca(helix)
    assert p["proj_error"].shape == (1, 40)
    assert float(p["proj_error"].max()) > 1e-2
    assert float(p["explained_mean"][1]) < 1.0 - 1e-3
    assert math.isclose(float(p["explained_mean"][-1]), 1.0, rel_tol=1e-12)
    # The relative error is the norm of the residual outside the top-2 plane (through the mean), by definition.
    X = helix - helix.mean(0)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    resid = X - X @ Vh[:2].T @ Vh[:2]
    assert torch.allclose(p["proj_error"][0], resid.norm(dim=1) / helix.norm(dim=1), atol=1e-12)


def test_pca_batched_equals_per_trajectory_and_chunking():
    traj = _plane_trajectories(B=7) + 0.01 * torch.randn(21, 7, 50, generator=torch.Generator().manual_seed(1), dtype=F64)
    whole = analysis.trajectory_pca(traj, chunk=3)
    for b in range(7):
        one = analysis.trajectory_pca(traj[:, b])
        assert torch.allclose(whole["proj_error"][b], one["proj_error"][0], atol=1e-12)
        assert torch.allclose(whole["explained"][b], one["explained"][0], atol=1e-12)
    with pytest.raises(ValueError, match="T=1"):
        analysis.trajectory_pca(torch.zeros(1, 3, 4))


@pytest.fixture(scope="module")
def alignment():
    gm = amed.testbed.GaussianMixture.random((1, 4, 4), components=4, seed=0, dtype=F64)
    noise = amed.randn_seeds(range(12), (1, 4, 4), dtype=F64)
    return analysis.relative_alignment(gm, noise, r_grid=torch.linspace(0.1, 0.9, 9, dtype=F64))


def test_relative_alignment_on_gaussian_mixture(alignment):
    ra = alignment
    assert ra["t"].shape == (6,) and ra["truth"].shape == (6, 12, 1, 4, 4)
    assert set(analysis.FIG5_SOLVERS) <= set(ra)
    for key in analysis.FIG5_SOLVERS:
        res = ra[key]
        for q in ("alignment", "dist_baseline", "dist_searched", "dist_mid", "r"):
            assert res[q].shape == (5, 12) and bool(torch.isfinite(res[q]).all()), (key, q)
        # Greedy per step: the chosen r is no worse than r = 0.5 from the same state...
        assert bool((res["dist_searched"] <= res["dist_mid"] + 1e-12).all()), key
        # ...so at the first step (same start for both trajectories) the search never loses.
        assert bool((res["alignment"][0] >= -1e-12).all()), key
        assert bool(((res["r"] > 0) & (res["r"] < 1)).all())
    # AMED-Solver and DPM-Solver-2 share the r = 0.5 baseline (paper Sec. 3.3).
    assert torch.allclose(ra["amed"]["dist_baseline"], ra["dpm2"]["dist_baseline"], atol=1e-10)
    # The searched trajectory ends closer to the truth on average for AMED-Solver.
    assert float(ra["amed"]["alignment"][-1].mean()) > 0


def test_relative_alignment_truth_is_heun_on_the_student_points():
    gm = amed.testbed.GaussianMixture.random((1, 4, 4), components=4, seed=0, dtype=F64)
    noise = amed.randn_seeds(range(3), (1, 4, 4), dtype=F64)
    ra = analysis.relative_alignment(gm, noise, solvers=("amed",), r_grid=[0.5])
    ref = amed.sample(gm, noise, solver="heun", nfe=80, schedule="polynomial", rho=7.0)
    assert torch.allclose(ra["truth"][-1], ref, atol=1e-10)
    assert torch.equal(ra["amed"]["alignment"], torch.zeros(5, 3, dtype=F64))  # grid {0.5}: searched == baseline
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        analysis.relative_alignment(gm, noise, solvers=("nope",))
    with pytest.raises(ValueError, match="r_grid"):
        analysis.relative_alignment(gm, noise, solvers=("amed",), r_grid=[0.0, 0.5])


def _ok(png, csv):
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = csv.read_text().splitlines()
    assert len(lines) >= 2
    assert not list(png.parent.glob("*.tmp*"))


def test_plot_writers(tmp_path, alignment):
    rows = [{"dataset": "digits", "method": m, "nfe": n, "metric": "fd", "value": v / n}
            for m, v in (("dpm_solver_2", 30.0), ("ipndm", 20.0), ("amed_plugin", 10.0)) for n in (3, 5, 7)]
    analysis.plot_quality_vs_nfe(rows, tmp_path / "fig3.png", model="digits-8")
    _ok(tmp_path / "fig3.png", tmp_path / "fig3.csv")
    assert "True" in (tmp_path / "fig3.csv").read_text()  # dpm_solver_2 flagged single-step

    traj = _plane_trajectories() + 0.05 * torch.randn(21, 5, 50, dtype=F64)
    t = amed.get_schedule("polynomial", 21, rho=7.0)
    analysis.plot_trajectory_pca(analysis.trajectory_pca(traj), tmp_path / "fig4.png", t=t, model="plane")
    _ok(tmp_path / "fig4.png", tmp_path / "fig4.csv")

    analysis.plot_relative_alignment(alignment, tmp_path / "fig5.png", tmp_path / "fig5_data.csv", model="GMM")
    _ok(tmp_path / "fig5.png", tmp_path / "fig5_data.csv")

    g = torch.Generator().manual_seed(0)
    coef = {"r": torch.rand(3, 10, generator=g, dtype=F64), "c": 1 + 0.01 * torch.randn(3, 10, generator=g, dtype=F64),
            "t": amed.get_schedule("polynomial", 4, rho=7.0)}
    coef["s"] = coef["t"][1:, None] ** coef["r"] * coef["t"][:-1, None] ** (1 - coef["r"])
    analysis.plot_coefficients(coef, tmp_path / "fig7.png", model="digits-8")
    _ok(tmp_path / "fig7.png", tmp_path / "fig7.csv")

    imgs = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    analysis.write_sample_grid(imgs, tmp_path / "grid.png", seeds=range(100, 110))
    _ok(tmp_path / "grid.png", tmp_path / "grid.csv")
    assert "109" in (tmp_path / "grid.csv").read_text()


def test_image_grid_upscales_nearest():
    imgs = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1)
    g = analysis.image_grid(imgs, cols=2, pad=0)
    assert g.shape == (64, 128, 1)
    assert np.array_equal(g[:8, :8, 0], np.full((8, 8), imgs[0, 0, 0, 0]))
    assert np.array_equal(g[::8, 64::8], imgs[1])
    with pytest.raises(ValueError, match="uint8 NHWC"):
        analysis.image_grid(imgs.astype(np.float32))


def test_long_csv_roundtrip_and_markdown(tmp_path):
    rows = [{"dataset": "cifar10", "method": m, "nfe": n, "metric": "fid", "value": v}
            for m, n, v in (("teacher=heun", 3, 29.0), ("teacher=heun", 5, 7.6), ("teacher=ipndm", 3, 32.4),
                            ("teacher=ipndm", 5, 12.4))]
    analysis.write_csv(tmp_path / "t4.csv", rows)
    back = analysis.read_long_csv(tmp_path / "t4.csv")
    assert [(r["method"], r["nfe"], r["value"]) for r in back] == [(r["method"], r["nfe"], r["value"]) for r in rows]
    md = analysis.long_to_markdown(back, title="Table 4")
    assert "| method | NFE 3 | NFE 5 |" in md
    assert "| teacher=heun | **29.00** | **7.60** |" in md and "| teacher=ipndm | 32.40 | 12.40 |" in md
