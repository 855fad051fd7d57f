"""kernels.lincomb: torch reference vs a naive loop, and the Triton kernel under TRITON_INTERPRET=1.

Tolerances (|y - exact| <= bound, exact = float64 sum of the same rounded inputs):
  bound = (K + 2) * 2**-24 * sum_k |c_k t_k|   (fp32 accumulation, fp32 coefficients)
        + u_out * |exact| + 2**-24               (rounding the result to the output dtype)
  u_out: fp32 0, fp16 2**-10 and bf16 2**-7 (one ulp; the interpreter's fp32->bf16 cast
  truncates instead of rounding to nearest, so half an ulp is not enough there).
fp32 Triton vs the fp32 torch reference: rtol = atol = 1e-6 (bit-exact in practice).
"""
import ast
import importlib
import os
from pathlib import Path

import pytest
import torch

from kernels import lincomb, lincomb_reference, triton_available

# `kernels.lincomb` the attribute is the function; fetch the submodule itself.
lc = importlib.import_module("kernels.lincomb")

U_OUT = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float64: 0.0}
U_ACC = {torch.float32: 2.0**-24, torch.float16: 2.0**-24, torch.bfloat16: 2.0**-24, torch.float64: 2.0**-53}

# Per-sample element counts 1, 1023, 1025 (tails around BLOCK=1024) and a 3x37x41 image.
SHAPES = [(2, 1), (2, 1023), (2, 1025), (3, 3, 37, 41)]


@pytest.fixture(scope="module", autouse=True)
def _interpret_env():
    """TRITON_INTERPRET=1 for this module's tests only, never at collection: triton 3.7 reads the flag when
    `triton.jit` runs (compute-stack.md §1), which kernels.lincomb does lazily on first use, so the kernel is
    rebuilt here under the flag and dropped again afterwards (later modules and their subprocesses see the
    environment as it was)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        lc._kernel.cache_clear()
        yield
        lc._kernel.cache_clear()  # don't leave an interpreted kernel behind for later modules


def _make(shape, k, dtype, seed=0, per_sample=True):
    g = torch.Generator().manual_seed(seed)
    terms = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(k)]
    b = shape[0]
    coeffs = torch.randn((b, k) if per_sample else (k,), generator=g, dtype=torch.float64)
    if per_sample:  # make sure rows really differ
        coeffs = coeffs + torch.arange(b, dtype=torch.float64)[:, None]
    return terms, coeffs


def _naive(terms, coeffs):
    """Python loop over samples and terms, in float64."""
    b = terms[0].shape[0]
    out = torch.zeros(terms[0].shape, dtype=torch.float64)
    for i in range(b):
        for k, t in enumerate(terms):
            c = coeffs[i, k] if coeffs.dim() == 2 else coeffs[k]
            out[i] += float(c) * t[i].double()
    return out


def _assert_within_bound(y, terms, coeffs, dtype):
    """|y - exact| <= accumulation bound + output rounding (see module docstring)."""
    exact = _naive(terms, coeffs)
    c = coeffs.double()
    cb = c.reshape(c.shape + (1,) * (terms[0].dim() - 1)) if c.dim() == 2 else c
    mag = sum((cb[:, k] if c.dim() == 2 else cb[k]).abs() * t.double().abs() for k, t in enumerate(terms))
    k = len(terms)
    bound = (k + 2) * U_ACC[dtype] * mag + U_OUT[dtype] * exact.abs() + 2.0**-24
    err = (y.double() - exact).abs()
    worst = (err - bound).max().item()
    assert worst <= 0, f"{dtype} K={k}: max err {err.max().item():.3g} exceeds bound by {worst:.3g}"


# --- torch reference ------------------------------------------------------------------------

@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_reference_matches_naive_loop(k, dtype):
    terms, coeffs = _make((3, 3, 5, 7), k, dtype, seed=k)
    y = lincomb_reference(terms, coeffs)
    assert y.dtype == dtype and y.shape == terms[0].shape
    _assert_within_bound(y, terms, coeffs, dtype)


def test_reference_float64_is_float64_exact():
    terms, coeffs = _make((4, 50), 5, torch.float64)
    y = lincomb_reference(terms, coeffs)
    torch.testing.assert_close(y, _naive(terms, coeffs), rtol=1e-14, atol=1e-14)


def test_reference_shared_coeffs_equal_expanded():
    terms, _ = _make((3, 2, 4, 4), 4, torch.float32)
    c = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    torch.testing.assert_close(lincomb_reference(terms, c),
                               lincomb_reference(terms, c.expand(3, 4)), rtol=0, atol=0)


def test_auto_on_cpu_uses_reference(monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("Triton path taken for CPU tensors")
    monkeypatch.setattr(lc, "_lincomb_triton", boom)
    terms, coeffs = _make((2, 3, 4, 4), 3, torch.float32)
    torch.testing.assert_close(lincomb(terms, coeffs), lincomb_reference(terms, coeffs), rtol=0, atol=0)
    torch.testing.assert_close(lincomb(terms, coeffs, backend="torch"),
                               lincomb_reference(terms, coeffs), rtol=0, atol=0)


def test_out_may_alias_a_term_reference():
    terms, coeffs = _make((2, 3, 4, 4), 2, torch.float32)
    expect = lincomb_reference(terms, coeffs)
    x = terms[0]
    y = lincomb(terms, coeffs, out=x)  # x <- a x + b m
    assert y is x
    torch.testing.assert_close(x, expect, rtol=0, atol=0)


def test_non_contiguous_terms_reference():
    terms, coeffs = _make((3, 4, 6, 5), 3, torch.float32)
    nc = [t.transpose(-1, -2) for t in terms]
    y = lincomb(nc, coeffs)
    torch.testing.assert_close(y, lincomb_reference([t.contiguous() for t in nc], coeffs), rtol=0, atol=0)


def test_import_does_not_import_triton():
    import subprocess
    import sys
    code = ("import sys, kernels; assert 'triton' not in sys.modules, 'triton imported'; "
            "print(kernels.__all__)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, 7])
def test_bad_k(k):
    terms = [torch.zeros(2, 3) for _ in range(k)]
    with pytest.raises(ValueError, match=f"K={k}"):
        lincomb(terms, torch.zeros(2, max(k, 1)))


@pytest.mark.parametrize("bad, match", [
    (lambda: ([torch.zeros(2, 3), torch.zeros(2, 4)], torch.zeros(2, 2)), r"terms\[1\] has shape \(2, 4\)"),
    (lambda: ([torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)], torch.zeros(2, 2)), "dtype"),
    (lambda: ([torch.zeros(2, 3), torch.zeros(2, 3)], torch.zeros(2, 3)), r"got \(2, 3\)"),
    (lambda: ([torch.zeros(2, 3), torch.zeros(2, 3)], torch.zeros(3, 2)), r"got \(3, 2\)"),
    (lambda: ([torch.zeros(2, 3), torch.zeros(2, 3)], torch.zeros(1, 2, 1)), r"got \(1, 2, 1\)"),
    (lambda: ([torch.zeros(2, 3)], torch.zeros(2, 1, dtype=torch.int64)), "torch.int64"),
    (lambda: ([torch.zeros(2, 3, dtype=torch.int32)], torch.zeros(2, 1)), "torch.int32"),
    (lambda: ([torch.zeros(())], torch.zeros(1)), "batch dimension"),
])
def test_bad_inputs(bad, match):
    terms, coeffs = bad()
    with pytest.raises(ValueError, match=match):
        lincomb(terms, coeffs)


def test_bad_out_and_backend():
    terms, coeffs = _make((2, 5), 2, torch.float32)
    with pytest.raises(ValueError, match="out must match"):
        lincomb(terms, coeffs, out=torch.empty(2, 6))
    with pytest.raises(ValueError, match="out must match"):
        lincomb(terms, coeffs, out=torch.empty(2, 5, dtype=torch.float16))
    with pytest.raises(ValueError, match="'cuda'"):
        lincomb(terms, coeffs, backend="cuda")


# --- Triton kernel under the interpreter ----------------------------------------------------

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed (pip install triton)")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_matches_reference(shape, k, dtype):
    terms, coeffs = _make(shape, k, dtype, seed=100 * k + len(shape))
    y = lincomb(terms, coeffs, backend="triton")
    assert y.dtype == dtype and y.shape == terms[0].shape
    _assert_within_bound(y, terms, coeffs, dtype)
    if dtype == torch.float32:
        torch.testing.assert_close(y, lincomb_reference(terms, coeffs), rtol=1e-6, atol=1e-6)


@needs_triton
def test_triton_per_sample_rows_differ():
    # Same term in every row, distinct coefficient per row: row b must be c[b] * t.
    t = torch.randn(1, 1025).expand(4, 1025).contiguous()
    c = torch.tensor([[1.0], [-2.0], [0.5], [0.0]], dtype=torch.float64)
    y = lincomb([t], c, backend="triton")
    torch.testing.assert_close(y, c.float() * t, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_shared_coeffs(dtype):
    terms, _ = _make((3, 3, 37, 41), 5, dtype)
    c = torch.tensor([1.0, 0.1, -0.2, 0.3, -0.4], dtype=torch.float64)  # e.g. iPNDM x + h*sum beta_k d_k
    y = lincomb(terms, c, backend="triton")
    _assert_within_bound(y, terms, c, dtype)
    torch.testing.assert_close(y, lincomb(terms, c.expand(3, 5), backend="triton"), rtol=0, atol=0)


@needs_triton
def test_triton_out_in_place_and_non_contiguous():
    terms, coeffs = _make((3, 3, 37, 41), 2, torch.float32)
    expect = lincomb_reference(terms, coeffs)
    x = terms[0].clone()
    y = lincomb([x, terms[1]], coeffs, out=x, backend="triton")  # AMED: x <- x + (s - t) d
    assert y is x
    torch.testing.assert_close(x, expect, rtol=1e-6, atol=1e-6)
    nc = [t.transpose(-1, -2) for t in terms]  # non-contiguous inputs and out
    out = torch.empty(3, 3, 37, 41).transpose(-1, -2)  # shape (3, 3, 41, 37), non-contiguous
    lincomb(nc, coeffs, out=out, backend="triton")
    torch.testing.assert_close(out, lincomb_reference(nc, coeffs), rtol=1e-6, atol=1e-6)


@needs_triton
def test_triton_small_block_many_tails():
    terms, coeffs = _make((2, 1025), 3, torch.float16)
    y = lc._lincomb_triton(terms, coeffs, None, block=64)  # 17 blocks per row, tail of 1
    _assert_within_bound(y, terms, coeffs, torch.float16)


@needs_triton
def test_triton_rejects_float64_and_empty_batch_ok():
    terms, coeffs = _make((2, 8), 2, torch.float64)
    with pytest.raises(ValueError, match="torch.float64"):
        lincomb(terms, coeffs, backend="triton")
    empty = [torch.zeros(0, 3, 4), torch.zeros(0, 3, 4)]
    assert lincomb(empty, torch.zeros(0, 2), backend="triton").shape == (0, 3, 4)


@needs_triton
@pytest.mark.parametrize("block,warps", [(256, 2), (2048, 8), (4096, 8)])
def test_triton_launch_configs_agree(block, warps):
    """Every (BLOCK, num_warps) the benchmark sweeps gives the reference result on an awkward row."""
    terms, coeffs = _make((3, 3, 37, 41), 4, torch.float32)
    y = lc._lincomb_triton(terms, coeffs, None, block=block, num_warps=warps)
    torch.testing.assert_close(y, lincomb_reference(terms, coeffs), rtol=1e-6, atol=1e-6)


def test_default_config_by_dtype():
    assert lc.default_config(torch.float32) == (1024, 4)
    for dt in (torch.float16, torch.bfloat16):  # 32 bytes per operand per thread either way
        block, warps = lc.default_config(dt)
        assert block * 2 // (warps * 32) == 1024 * 4 // (4 * 32) == 32


@needs_triton
def test_triton_reads_float64_coefficients_as_they_are():
    terms, coeffs = _make((3, 1025), 3, torch.float32)
    c64 = coeffs.double()
    y = lc._lincomb_triton(terms, c64, None)
    torch.testing.assert_close(y, lincomb_reference(terms, c64), rtol=1e-6, atol=1e-6)


@needs_triton
def test_the_kernel_runs_in_the_interpreter():
    """The fixture's scoping works: the kernel was built under the flag, so CPU launches run interpreted."""
    from triton.runtime.interpreter import InterpretedFunction

    assert os.environ["TRITON_INTERPRET"] == "1"
    assert isinstance(lc._kernel(), InterpretedFunction), type(lc._kernel())
    terms, coeffs = _make((2, 1025), 2, torch.float32)
    torch.testing.assert_close(lincomb(terms, coeffs, backend="triton"), lincomb_reference(terms, coeffs),
                               rtol=1e-6, atol=1e-6)


def test_no_test_module_sets_triton_interpret_at_import():
    """Environment changes live in fixtures: a module-level TRITON_INTERPRET would leak into every later module."""
    bad = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if "TRITON_INTERPRET" in ast.unparse(node) and not isinstance(node, ast.Expr):
                bad.append(f"{path.name}:{node.lineno}")
    assert not bad, f"module-level TRITON_INTERPRET in {bad}"
