"""torch.compile for a Denoiser: the plain path and the AMED feature path, each compiled once.

    from amed.compile import compile_denoiser, should_compile
    model = amed.load_model("digits-8")
    if should_compile("cpu"):
        model = compile_denoiser(model, example_batch=256)   # compiles and checks against eager now

The feature path cannot use ``Denoiser.with_feature`` as is: it registers a forward hook for one
call, and a hook added after compilation is silently not called by the compiled graph (measured,
torch 2.13 CPU). ``compile_denoiser`` therefore registers ONE permanent hook on
``feature_module()`` before compiling. The hook is armed only inside the compiled feature function
(``_Capture.armed``), so eager calls of the wrapped adapter do nothing extra and hold no tensor.

Shapes are static (``dynamic=False``): a new batch size, dtype or grad mode compiles a new graph
(9-40 s on CPU). Keep the batch fixed; ``amed.sample`` calls the network under ``torch.no_grad`` with
a float32 x and a float32 [B] sigma at every step (sigma is cast to x's dtype at the boundary, since a
dtype change would recompile), so a sampling loop makes no recompilation (tests/test_compile.py counts
them). Training calls the network under grad mode: that is another graph.

Decision (``should_compile``): on for CUDA, off for CPU. Measured by benchmarks/bench_sampling.py on
the embedded digits-8 U-Net (1.4 M parameters, 1x8x8), NFE 5, torch 2.13 CPU, inductor, triton 3.7.1,
1 thread on 2 shared cores, eager and compiled alternated in one process:

* batch 256, cold cache (``--cold``): compiled/eager throughput 1.18-1.22x for every solver (ipndm
  382 -> 459 images/s); cold compile 22.7 s (plain path) + 13.9 s (feature path); with a warm
  inductor cache 1-6 s per path. Other runs under heavier load: 1.1-1.3x, cold compile up to 75 s.
* batch 64: 1.17-1.21x; batch 1: 1.08-1.14x (one compile per batch size, static shapes).

Saving ~0.44 ms per image against a 37 s cold compile breaks even only after ~80,000 images (5-15
thousand with a warm cache), more than a CPU run of this project samples, so CPU stays eager unless
the caller asks for ``compile_denoiser`` explicitly.

GPU options (``mode="reduce-overhead"`` for CUDA graphs, ``channels_last``, ``autocast`` with
bf16/fp16): the CUDA tests in tests/test_compile.py passed once on one H200 (torch 2.11+cu130; fp16
and real models untested), and CI has no GPU. There digits-8 at batch 256 sampled 1.6-1.9x faster
compiled (default mode) and 3.2-4.6x with reduce-overhead (the net is launch-bound). CUDA-graph outputs are
cloned before they are returned (a replay overwrites them, and the multistep solvers keep earlier
D's), channels_last converts the module and the input and returns a contiguous NCHW tensor, and
autocast runs the network in the low precision and casts D back to x's dtype (h is float32, as
eager). Compiling an adapter twice leaves a second, inert hook: ``release()`` removes one. The check
tolerance is 1e-3 on CUDA (TF32 convolutions) and 3e-2 under autocast.
"""

from __future__ import annotations

import contextlib
import time

import torch

from .models.base import Denoiser, _as_batch_sigma, channel_mean_feature
from .errors import AmedError, AmedValueError

__all__ = ["compile_denoiser", "compile_setting", "should_compile", "CompiledDenoiser", "CompileMismatch",
           "CompileFailed", "recompile_count",
           "FP32_TOL", "CUDA_TOL", "AUTOCAST_TOL"]

FP32_TOL = 1e-4  # max|compiled - eager| <= tol * max(1, max|eager|), for D and for h (CPU, float32)
CUDA_TOL = 1e-3  # CUDA float32: eager cuDNN convolutions use TF32 by default (measured 1.2e-4 on an H200)
AUTOCAST_TOL = 3e-2


class CompileMismatch(AmedError, RuntimeError):
    """Compiled and eager outputs differ beyond the stated tolerance."""


class CompileFailed(AmedError, RuntimeError):
    """torch.compile could not build or run the network (no C++ compiler, no Triton, an unsupported op ...)."""


def should_compile(device) -> bool:
    """Default policy: compile on CUDA; stay eager on CPU (1.1-1.2x does not repay a 37 s cold compile)."""
    return torch.device(device).type == "cuda"


def recompile_count() -> int:
    """Graphs compiled by dynamo in this process so far (frames compiled; a recompile adds one)."""
    from torch._dynamo.utils import counters  # noqa: PLC0415 (no compiler import at package import)

    return int(sum(counters["stats"].get(k, 0) for k in ("unique_graphs",)))


class _Capture:
    """Where the permanent hook puts the bottleneck activation while a compiled call is armed."""

    def __init__(self):
        self.armed = False
        self.out: torch.Tensor | None = None

    def hook(self, _module, _inputs, out):
        if self.armed:
            self.out = out


class CompiledDenoiser(Denoiser):
    """The adapter ``inner`` with ``denoise`` and ``with_feature`` replaced by compiled functions.

    ``info``, ``decode``, ``images``, ``condition`` and ``select_feature`` are the inner adapter's.
    """

    def __init__(self, inner: Denoiser, *, mode: str | None = None, backend: str = "inductor", check: bool = True,
                 channels_last: bool = False, autocast: torch.dtype | None = None, tol: float | None = None,
                 fallback: bool = False):
        super().__init__()
        if isinstance(inner, CompiledDenoiser):
            raise AmedValueError("the denoiser is already compiled")
        if autocast not in (None, torch.bfloat16, torch.float16):
            raise AmedValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}")
        self.inner = inner
        self.info = inner.info
        self.mode, self.backend, self.check = mode, backend, bool(check)
        self.fallback, self.fell_back = bool(fallback), None  # fell_back: the reason, once eager took over
        self.channels_last, self.autocast = bool(channels_last), autocast
        self.tol = float(tol) if tol is not None else (AUTOCAST_TOL if autocast is not None else None)
        self.compile_seconds = {"plain": 0.0, "feature": 0.0}
        self._checked = {"plain": False, "feature": False}
        self._cudagraphs = mode in ("reduce-overhead", "max-autotune")  # the modes that use CUDA graphs
        if self.channels_last:
            inner.to(memory_format=torch.channels_last)
        module = inner.feature_module()
        self._capture = _Capture()
        # Registered BEFORE compiling: a hook added after compilation is not called by the graph.
        self._handle = module.register_forward_hook(self._capture.hook) if module is not None else None
        self._has_feature = module is not None
        kw = dict(backend=backend, mode=mode, dynamic=False, fullgraph=False)
        self._plain = torch.compile(self._plain_impl, **kw)
        self._feature = torch.compile(self._feature_impl, **kw)

    # -- traced bodies ---------------------------------------------------------------------------

    def _net(self, x, sigma):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        low = self.autocast is not None
        with torch.autocast(x.device.type, dtype=self.autocast) if low else contextlib.nullcontext():
            D = self.inner.denoise(x, sigma)
        return D.to(x.dtype).contiguous()

    def _plain_impl(self, x, sigma):
        return self._net(x, sigma)

    def _feature_impl(self, x, sigma):
        cap = self._capture
        cap.armed = True
        D = self._net(x, sigma)
        raw = cap.out
        cap.out = None
        cap.armed = False
        if raw is None:
            raise RuntimeError(f"{type(self.inner).__name__}: the feature hook did not fire")
        h = channel_mean_feature(self.inner.select_feature(raw, x.shape[0]))
        return D, h

    # -- calls -------------------------------------------------------------------------------------

    def _run(self, which: str, x, sigma):
        if self.fell_back is not None:
            return self.inner.denoise(x, sigma) if which == "plain" else self.inner.with_feature(x, sigma)
        if not self.fallback:
            return self._run_compiled(which, x, sigma)
        try:
            return self._run_compiled(which, x, sigma)
        except (CompileFailed, CompileMismatch) as e:  # first call only: later calls cannot raise these
            import warnings  # noqa: PLC0415

            self.fell_back = str(e)
            warnings.warn(f"{e}; continuing with the eager network", RuntimeWarning, stacklevel=3)
            return self._run(which, x, sigma)

    @property
    def guidance_scale(self):
        """The inner adapter's classifier-free guidance scale (text-to-image adapters), else None."""
        return getattr(self.inner, "guidance_scale", None)

    @property
    def conditioning_id(self):
        return getattr(self.inner, "conditioning_id", None)

    def _run_compiled(self, which: str, x, sigma):
        # One graph for float32/float64 and for expanded (stride 0) sigmas: dtype and strides are guarded.
        sigma = sigma.to(x.dtype if x.dtype.is_floating_point else sigma.dtype).clone(
            memory_format=torch.contiguous_format)
        x = x.contiguous()
        fn = self._plain if which == "plain" else self._feature
        first = not self._checked[which]
        t = time.perf_counter()
        if first:
            try:
                out = fn(x, sigma)
            except ValueError:  # the adapter's own complaint (e.g. no prompts bound): not a compiler failure
                raise
            except Exception as e:  # no C++ compiler, no Triton, an unsupported op ...
                raise CompileFailed(
                    f"torch.compile (backend={self.backend!r}, mode={self.mode!r}) failed on the first {which} call "
                    f"of {type(self.inner).__name__}: {type(e).__name__}: {e}; use the eager adapter "
                    f"(amed.compile.should_compile) or backend='aot_eager'") from e
        else:
            out = fn(x, sigma)
        if first:
            self.compile_seconds[which] = time.perf_counter() - t
        if self._cudagraphs:  # a CUDA-graph replay overwrites its outputs; solvers keep earlier D's
            out = tuple(o.clone() for o in out) if isinstance(out, tuple) else out.clone()
        if first:
            self._checked[which] = True
            if self.check:
                self._compare(which, x, sigma, out)
        return out

    def denoise(self, x, sigma):
        return self._run("plain", x, sigma)

    def with_feature(self, x, sigma):
        sigma = _as_batch_sigma(sigma, x)
        if not self._has_feature:
            return self.denoise(x, sigma), torch.zeros(x.shape[0], 8, 8, device=x.device)
        return self._run("feature", x, sigma)

    def warmup(self, x: torch.Tensor, sigma: torch.Tensor, features: bool = True) -> dict:
        """Compile (and check) both paths on this batch under ``torch.no_grad``; returns seconds per path."""
        sigma = _as_batch_sigma(sigma, x)
        with torch.no_grad():
            self.denoise(x, sigma)
            if features and self._has_feature:
                self.with_feature(x, sigma)
        return dict(self.compile_seconds)

    def _compare(self, which, x, sigma, out):
        with torch.no_grad():  # the eager reference runs in full precision; the tolerance covers autocast
            if which == "plain":
                ref, got = (self.inner.denoise(x, sigma),), (out,)
            else:
                ref, got = self.inner.with_feature(x, sigma), out
        tol = self.tol if self.tol is not None else (CUDA_TOL if x.device.type == "cuda" else FP32_TOL)
        for name, r, g in zip(("D", "h"), ref, got):
            r, g = r.float(), g.float()
            err = (g - r).abs().max().item() if r.numel() else 0.0
            bound = tol * max(1.0, r.abs().max().item() if r.numel() else 0.0)
            if not err <= bound:  # also catches NaN
                raise CompileMismatch(
                    f"compiled {type(self.inner).__name__} ({which} path, mode={self.mode!r}, backend="
                    f"{self.backend!r}) differs from eager: max|{name} diff| = {err:.3g} > {bound:.3g} "
                    f"(tol {tol:g} x max(1, max|eager|)); pass check=False to skip this check "
                    f"(the amed command: --compile off)")

    # -- the rest of the adapter contract ----------------------------------------------------------

    def feature_module(self):
        return self.inner.feature_module()

    def select_feature(self, h, batch):
        return self.inner.select_feature(h, batch)

    def decode(self, x):
        return self.inner.decode(x)

    def condition(self, seeds):
        return self.inner.condition(seeds)

    def release(self) -> Denoiser:
        """Remove the permanent feature hook and return the eager adapter."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        return self.inner


def compile_denoiser(model: Denoiser, *, mode: str | None = None, backend: str = "inductor", check: bool = True,
                     example_batch=None, channels_last: bool = False, autocast: torch.dtype | None = None,
                     tol: float | None = None, fallback: bool = False) -> CompiledDenoiser:
    """``model`` with its network calls compiled once for a static shape (plain and feature paths).

    ``example_batch``: None (compile lazily on the first call of each path), an int B (a seeded
    normal batch of ``model.info.shape`` at sigma spread over [0.002, 80]), or a tuple (x, sigma);
    when given, both paths are compiled (and, with ``check``, compared with eager) here. With
    ``check`` the first call of each path compares compiled vs eager D (and h) and raises
    CompileMismatch beyond ``tol`` x max(1, max|eager|) (default FP32_TOL = 1e-4 on CPU, CUDA_TOL = 1e-3
    on CUDA where eager convolutions use TF32, AUTOCAST_TOL = 3e-2 under autocast).
    With ``fallback`` a failed compile or a failed check on the first call of a path warns and leaves
    every later call to the eager adapter (``fell_back`` says why) instead of raising.
    """
    if not isinstance(model, Denoiser):
        raise AmedValueError(f"compile_denoiser needs an amed Denoiser adapter, got {type(model).__name__}")
    compiled = CompiledDenoiser(model, mode=mode, backend=backend, check=check, channels_last=channels_last,
                                autocast=autocast, tol=tol, fallback=fallback)
    if example_batch is not None:
        x, sigma = _example(model, example_batch)
        compiled.warmup(x, sigma)
    return compiled


def _example(model: Denoiser, example_batch):
    if isinstance(example_batch, int):
        if example_batch < 1:
            raise AmedValueError(f"example_batch must be a positive int or (x, sigma), got {example_batch!r}")
        try:
            p = next(model.parameters())
            device = p.device
        except StopIteration:
            device = torch.device("cpu")
        g = torch.Generator().manual_seed(0)
        x = torch.randn(example_batch, *model.info.shape, generator=g).to(device)
        lo, hi = torch.tensor([model.info.sigma_min, model.info.sigma_max], dtype=torch.float64).log()
        sigma = torch.linspace(float(hi), float(lo), example_batch, dtype=torch.float64).exp().to(device)
        return x * sigma.to(x.dtype).view(-1, *[1] * (x.ndim - 1)), sigma
    if isinstance(example_batch, (tuple, list)) and len(example_batch) == 2:
        return example_batch[0], example_batch[1]
    raise AmedValueError(f"example_batch must be None, an int or (x, sigma), got {type(example_batch).__name__}")


def compile_setting(model, setting: str, device, text_to_image: bool = False):
    """The model under a compile setting (``--compile``, a cell's ``compile``): auto, on, off, or reduce-overhead
    (CUDA graphs).

    auto compiles on CUDA only (``should_compile``; on the CPU 1.2x does not repay the compile), and not
    text-to-image models (compiled Stable Diffusion is untested here, and CFG amplifies compiled-vs-eager
    differences); if compiling or the first-call check against eager fails, auto warns and stays eager. on /
    reduce-overhead compile whatever the device and make such a failure an error. Compilation is lazy, once per
    batch shape.
    """
    auto = setting == "auto"
    if setting == "off" or (auto and (not should_compile(device) or text_to_image)):
        return model
    if not isinstance(model, Denoiser):
        if auto:
            return model
        raise AmedValueError(f"--compile {setting} needs an amed Denoiser adapter, got {type(model).__name__}")
    if setting == "reduce-overhead" and device.type != "cuda":
        raise AmedValueError(f"--compile reduce-overhead (CUDA graphs) needs --device cuda, got {device}")
    return compile_denoiser(model, mode="reduce-overhead" if setting == "reduce-overhead" else None, fallback=auto)
