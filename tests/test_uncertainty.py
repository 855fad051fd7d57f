"""Intervals on a Frechet distance: known-answer coverage, paired comparisons, verdicts, the noise floor."""

import numpy as np
import pytest

from amed.fid import frechet_distance
from amed.uncertainty import (Comparison, Reference, basic_interval, compare, fd_bootstrap, mean_interval, noise_floor,
                              normal_interval, verdict)


def _psd(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_eigenvalue_fd_equals_the_sqrtm_fd():
    for d, seed in [(3, 0), (16, 1), (64, 2)]:
        mu1, mu2 = np.random.default_rng(seed).normal(size=(2, d))
        s1, s2 = _psd(d, seed + 10), _psd(d, seed + 20)
        assert Reference(mu2, s2).fd(mu1, s1) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-9)


def test_basic_interval_covers_a_known_fd_and_the_percentile_one_does_not():
    # Samples from N(mu, I) against the exact population statistics of N(0, I): the true FD is |mu|^2.
    d, n, trials = 4, 300, 100
    mu = np.array([0.3, 0.0, 0.0, 0.0])
    ref = Reference(np.zeros(d), np.eye(d))
    basic = percentile = 0
    for t in range(trials):
        f = np.random.default_rng(t).normal(size=(n, d)) + mu
        est = ref.fd_features(f)
        reps = fd_bootstrap(f, ref, n_boot=400, boot_seed=t)
        lo, hi = basic_interval(est, reps)
        q_lo, q_hi = np.quantile(reps, [0.025, 0.975])
        basic += lo <= mu @ mu <= hi
        percentile += q_lo <= mu @ mu <= q_hi
    assert 0.88 <= basic / trials <= 0.99  # nominal 0.95 (measured 0.95)
    assert percentile / trials < 0.85  # biased upwards (measured 0.70): why the basic interval is used


def test_normal_interval_covers_the_estimators_mean_at_this_n():
    # The value's interval is about the FD at this N (bias kept): compare with the Monte-Carlo mean of FD_N.
    d, n = 4, 300
    mu = np.array([0.3, 0.0, 0.0, 0.0])
    ref = Reference(np.zeros(d), np.eye(d))
    draws = [ref.fd_features(np.random.default_rng(10_000 + i).normal(size=(n, d)) + mu) for i in range(2000)]
    target = float(np.mean(draws))
    assert target > mu @ mu  # biased upwards at finite N
    hits = 0
    for t in range(100):
        f = np.random.default_rng(t).normal(size=(n, d)) + mu
        lo, hi = normal_interval(ref.fd_features(f), fd_bootstrap(f, ref, n_boot=300, boot_seed=t))
        hits += lo <= target <= hi
    assert 0.88 <= hits / 100 <= 1.0


def test_mean_interval_widens_with_the_spread_of_runs():
    noise = np.random.default_rng(0).normal(0, 0.02, size=(3, 200))
    tight = mean_interval([1.0, 1.0, 1.0], 1.0 + noise)
    wide = mean_interval([0.5, 1.0, 1.5], np.array([0.5, 1.0, 1.5])[:, None] + noise)
    assert tight[0] < 1.0 < tight[1] and wide[0] < 1.0 < wide[1]
    assert (wide[1] - wide[0]) > 10 * (tight[1] - tight[0])


def test_replicates_depend_only_on_n_and_the_seed():
    ref = Reference(np.zeros(3), np.eye(3))
    f = np.random.default_rng(0).normal(size=(50, 3))
    a, b = fd_bootstrap(f, ref, n_boot=20, boot_seed=5), fd_bootstrap(f, ref, n_boot=20, boot_seed=5)
    assert np.array_equal(a, b) and not np.array_equal(a, fd_bootstrap(f, ref, n_boot=20, boot_seed=6))


def test_paired_comparison_resolves_a_gap_the_unpaired_intervals_cannot():
    # Two "methods" whose samples share most of their noise (as two solvers from the same seeds do).
    d, n = 8, 400
    ref = Reference(np.zeros(d), np.eye(d))
    z = np.random.default_rng(0).normal(size=(n, d))
    fa, fb = z + 0.20, z + 0.22  # A is slightly closer to the reference
    va, vb = ref.fd_features(fa), ref.fd_features(fb)
    ra, rb = fd_bootstrap(fa, ref, 300), fd_bootstrap(fb, ref, 300)
    c = compare([va], [ra], [vb], [rb])
    assert c.difference == pytest.approx(va - vb) and c.hi < 0 and verdict(c) == "held"
    lo_a, hi_a = basic_interval(va, ra)
    lo_b, hi_b = basic_interval(vb, rb)
    assert lo_b < hi_a  # the separate intervals overlap
    # The same method against itself is inconclusive; reversed, the claim does not hold.
    assert verdict(compare([va], [ra], [va], [ra])) == "inconclusive"
    assert verdict(compare([vb], [rb], [va], [ra])) == "not held"


def test_training_seed_spread_widens_the_interval():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.02, size=(4, 200))
    tight = compare([1.0], [1.0 + noise[0]], [1.2], [1.2 + noise[3]])
    runs = [0.7, 1.0, 1.3]
    spread = compare(runs, [v + noise[i] for i, v in enumerate(runs)], [1.2], [1.2 + noise[3]])
    assert tight.hi < 0 and verdict(spread) == "inconclusive"
    assert (spread.hi - spread.lo) > 5 * (tight.hi - tight.lo)
    assert spread.wins == 2 and spread.pairs == 3


def test_verdict_rule_on_synthetic_intervals():
    mk = lambda lo, hi: Comparison(difference=(lo + hi) / 2, lo=lo, hi=hi, level=0.95, wins=0, pairs=1)
    assert [verdict(mk(-2, -1)), verdict(mk(-1, 1)), verdict(mk(1, 2)), verdict(mk(-1, 0))] == \
        ["held", "inconclusive", "not held", "inconclusive"]


def test_noise_floor_shrinks_with_n_and_is_zero_for_the_whole_reference_set():
    f = np.random.default_rng(0).normal(size=(1000, 4))
    ref = Reference(f.mean(0), np.cov(f, rowvar=False))
    small, _ = noise_floor(f, ref, 50)
    large, _ = noise_floor(f, ref, 500)
    assert small > large > 0
    assert noise_floor(f, ref, 1000, repeats=2)[0] == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="n=1001"):
        noise_floor(f, ref, 1001)


def test_bad_reference_statistics_are_refused():
    with pytest.raises(ValueError, match="finite"):
        Reference(np.array([np.nan, 0]), np.eye(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        Reference(np.zeros(2), np.array([[1.0, 0], [0, -1.0]]))


def test_torch_path_equals_numpy_path():
    # The torch path (CUDA in practice; "cpu:0" reaches it on a CPU) gives the numpy path's replicates.
    ref = Reference(np.zeros(6), np.eye(6) * 2.0)
    f = np.random.default_rng(3).normal(size=(80, 6))
    np.testing.assert_allclose(fd_bootstrap(f, ref, 20, device="cpu:0"), fd_bootstrap(f, ref, 20, device="cpu"),
                               rtol=1e-9, atol=1e-12)
