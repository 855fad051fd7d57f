"""The baseline ODE solvers of the paper's Table 2, as small step functions with explicit state.

The probability-flow ODE in the EDM parameterisation is dx/dt = d(x, t) = (x - D(x, t)) / t
(paper Eq. 6 with eps = d). A solver step is split in two pure functions:

* ``evaluate(x, t, denoise, state) -> state``: the network call at the current point; its output
  (d, D or a thresholded D, whatever the solver stores) is appended to ``state.hist``.
* ``update(x, t, t_next, denoise, state, c=None) -> (x_next, state)``: the update, which only
  calls the network where the method itself needs a second stage (Heun, DPM-Solver-2) or a
  corrector (UniPC). ``c`` scales the increment (AMED's direction scale c_n; 1 for the baselines).

``step`` is the two in sequence. Times are float64 tensors of shape [B] (AMED's intermediate
times differ per sample); update arithmetic is done on them in float64 and cast at the tensor
boundary. The update formulas follow the authors' diff-sampler code (see
``shared/reference/authors-code.md`` section 4), which produced the paper's numbers, with one
deliberate default: the authors apply dynamic thresholding to every DPM-Solver++/UniPC data prediction;
here it is an option (``thresholding=True``, set in config/paper.yaml for pixel models), off by
default, since it is wrong for latent and centred models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .ops import bcast, lincomb
from .errors import AmedValueError

__all__ = ["State", "Solver", "SOLVERS", "make_solver", "model_eval", "dynamic_threshold", "multistep_orders",
           "reachable_nfe", "nfe_options", "steps_for_nfe"]

Tensor = torch.Tensor
Denoise = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class State:
    """Explicit solver memory, replaced (never mutated) by every step."""

    hist: tuple[tuple[Tensor, Tensor], ...] = ()  # (t [B], model output) pairs, oldest first
    index: int = 0  # (sub-)steps taken so far
    orders: tuple[int, ...] = ()  # per-step order of the multistep methods
    fresh: bool = False  # hist[-1] already holds the model output at the current point (UniPC)
    extra: dict = field(default_factory=dict)


def model_eval(denoise: Denoise, x: Tensor, t: Tensor) -> Tensor:
    """D(x; t), with t given to the network as a [B] tensor in x's dtype."""
    return denoise(x, t.to(dtype=x.dtype, device=x.device))


def _d(x: Tensor, D: Tensor, t: Tensor) -> Tensor:
    """The ODE direction d = (x - D) / t (paper Eq. 4)."""
    return (x - D) / bcast(t, x)


def dynamic_threshold(D: Tensor, p: float = 0.995, max_val: float = 1.0) -> Tensor:
    """Imagen dynamic thresholding of a data prediction, as diff-sampler applies it (s >= max_val)."""
    flat = D.detach().abs().reshape(D.shape[0], -1).float()
    # torch.quantile's linear interpolation, from the top-k values (k small) instead of a full sort.
    pos = p * (flat.shape[1] - 1)
    lo = int(math.floor(pos))
    top = torch.topk(flat, flat.shape[1] - lo, dim=1, sorted=True).values  # descending; top[:, -1] is rank lo
    v_lo, v_hi = top[:, -1], top[:, -2] if top.shape[1] > 1 else top[:, -1]
    s = (v_lo + (pos - lo) * (v_hi - v_lo)).clamp_min(max_val)
    s = bcast(s.to(torch.float64), D)
    return torch.maximum(torch.minimum(D, s), -s) / s


def multistep_orders(num_steps: int, max_order: int, lower_order_final: bool) -> tuple[int, ...]:
    """Per-step orders of DPM-Solver++/UniPC warm-up and ``lower_order_final`` (diff-sampler's rule).

    With k the 1-based step and P = num_steps + 1 grid points: k if k < max_order, else
    min(max_order, P - k) (the final step is first order). Without it: min(max_order, k).
    """
    P = num_steps + 1
    if lower_order_final:
        return tuple(k if k < max_order else min(max_order, P - k) for k in range(1, num_steps + 1))
    return tuple(min(max_order, k) for k in range(1, num_steps + 1))


def reachable_nfe(evals_per_step: int, afs: bool, nfe: int) -> bool:
    """Whether ``nfe`` network calls fill whole steps: NFE = steps * evals_per_step - [AFS], steps >= 1, NFE >= 1
    (AFS reuses the first step's call; AMED spends 2 NFE per interval). The one home of this rule."""
    total = nfe + int(afs)
    return nfe >= 1 and total % evals_per_step == 0


def nfe_options(evals_per_step: int, afs: bool, candidates) -> list[int]:
    """The NFE among ``candidates`` that `reachable_nfe` accepts (what an error message offers instead)."""
    return [n for n in candidates if reachable_nfe(evals_per_step, afs, n)]


def steps_for_nfe(solver_key: str, evals_per_step: int, nfe: int, afs: bool) -> int:
    """The steps that spend ``nfe`` network calls; an unreachable NFE is a ValueError offering nearby ones."""
    if int(nfe) != nfe or nfe < 1:
        raise AmedValueError(f"NFE must be a positive integer, got {nfe!r}")
    if not reachable_nfe(evals_per_step, afs, nfe):
        ok = nfe_options(evals_per_step, afs, range(max(1, nfe - 2), nfe + 3))
        raise AmedValueError(
            f"{solver_key} spends {evals_per_step} NFE per step, so NFE={nfe} is unreachable with afs={afs}; "
            f"use afs={not afs} or NFE in {ok} with afs={afs}")
    return (nfe + int(afs)) // evals_per_step


class Solver:
    """Base class: ``evaluate`` stores d; subclasses define ``update``."""

    key: str = ""
    evals_per_step: int = 1  # network evaluations per step (AFS saves one in the first step)
    multistep: bool = False
    keep: int = 1  # history entries kept

    def init_state(self, num_steps: int) -> State:
        """Fresh state for a run of ``num_steps`` (sub-)steps."""
        return State()

    def output(self, x: Tensor, D: Tensor, t: Tensor) -> Tensor:
        """What the solver stores per evaluation (default: the direction d)."""
        return _d(x, D, t)

    def evaluate(self, x: Tensor, t: Tensor, denoise: Denoise, state: State) -> State:
        """The network call at the current point, stored in the history."""
        if state.fresh:
            return state
        m = self.output(x, model_eval(denoise, x, t), t)
        return replace(state, hist=(state.hist + ((t, m),))[-self.keep:], fresh=True)

    def update(self, x: Tensor, t: Tensor, t_next: Tensor, denoise: Denoise, state: State,
               c: Tensor | None = None) -> tuple[Tensor, State]:
        raise TypeError(f"{type(self).__name__} does not define update()")

    def step(self, x: Tensor, t: Tensor, t_next: Tensor, denoise: Denoise, state: State) -> tuple[Tensor, State]:
        """One step t -> t_next: evaluate, then update."""
        return self.update(x, t, t_next, denoise, self.evaluate(x, t, denoise, state))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


def _scale(c: Tensor | None, like: Tensor) -> Tensor:
    return torch.ones_like(like) if c is None else c.to(like)


class DDIM(Solver):
    """DDIM = Euler on the PF-ODE: x' = x + (t' - t) d(x, t) (Song et al.; paper Tab. 1)."""

    key = "ddim"

    def update(self, x, t, t_next, denoise, state, c=None):
        d = state.hist[-1][1]
        x_next = lincomb([x, d], [1.0, _scale(c, t) * (t_next - t)])
        return x_next, replace(state, index=state.index + 1, fresh=False)


class Heun(Solver):
    """EDM's 2nd-order Heun step; the correction also runs on the last step (sigma_min > 0)."""

    key = "heun"
    evals_per_step = 2

    def update(self, x, t, t_next, denoise, state, c=None):
        d = state.hist[-1][1]
        h = _scale(c, t) * (t_next - t)
        # Euler step.
        x_e = lincomb([x, d], [1.0, t_next - t])
        # Apply 2nd order correction.
        d_e = _d(x_e, model_eval(denoise, x_e, t_next), t_next)
        x_next = lincomb([x, d, d_e], [1.0, 0.5 * h, 0.5 * h])
        return x_next, replace(state, index=state.index + 1, fresh=False)


class DPM2(Solver):
    """Generalised DPM-Solver-2 (paper Tab. 1): s = t'^r t^(1-r); x' = x + (t'-t)[d_s/(2r) + (1-1/(2r)) d].

    ``two_stage`` also serves AMED-Solver (weight 1 on d_s) and the AMED-Plugin on DPM-Solver-2,
    with per-sample r, c and a time scale a (the network sees a*s; the direction divides by s).
    """

    key = "dpm2"
    evals_per_step = 2

    def __init__(self, r: float = 0.5):
        if not 0.0 < r <= 1.0:
            raise AmedValueError(f"dpm2: r must lie in (0, 1], got {r!r}")
        self.r = float(r)

    def update(self, x, t, t_next, denoise, state, c=None):
        r = torch.full_like(t, self.r)
        return self.two_stage(x, t, t_next, denoise, state, r=r, c=c, weight=1.0 / (2.0 * r))

    @staticmethod
    def two_stage(x, t, t_next, denoise, state, r, c=None, a=None, weight=None):
        """Euler step to s = t_next^r t^(1-r), then x' = x + c (t'-t) [w d_s + (1-w) d]."""
        d = state.hist[-1][1]
        s = t_next**r * t ** (1.0 - r)
        # Euler step to the intermediate time.
        x_s = lincomb([x, d], [1.0, s - t])
        sigma_eval = s if a is None else a * s
        d_s = _d(x_s, model_eval(denoise, x_s, sigma_eval), s)
        h = _scale(c, t) * (t_next - t)
        if weight is None:  # AMED-Solver: the whole step along d_s (paper Eq. 9)
            x_next = lincomb([x, d_s], [1.0, h])
        else:
            x_next = lincomb([x, d_s, d], [1.0, h * weight, h * (1.0 - weight)])
        return x_next, replace(state, index=state.index + 1, fresh=False)


_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


class IPNDM(Solver):
    """iPNDM: fixed-step Adams-Bashforth on any grid, lower-order warm start (Zhang & Chen, DEIS)."""

    key = "ipndm"
    multistep = True

    def __init__(self, max_order: int = 4):
        if max_order not in _AB:
            raise AmedValueError(f"ipndm: max_order must be 1..4, got {max_order!r}")
        self.max_order = int(max_order)
        self.keep = self.max_order

    def update(self, x, t, t_next, denoise, state, c=None):
        order = min(self.max_order, len(state.hist))
        h = _scale(c, t) * (t_next - t)
        ds = [m for _, m in reversed(state.hist[-order:])]  # d_cur, d_{-1}, ...
        x_next = lincomb([x, *ds], [1.0, *(h * b for b in _AB[order])])
        return x_next, replace(state, index=state.index + 1, fresh=False)


class _DataPredictionMultistep(Solver):
    """Shared by DPM-Solver++ and UniPC: order <= 3 with lower_order_final, and what each evaluation
    stores, an (optionally thresholded) data prediction or, with predict_x0=False, the direction d."""

    multistep = True

    def __init__(self, max_order: int = 3, predict_x0: bool = True, lower_order_final: bool = True,
                 thresholding: bool = False, threshold_p: float = 0.995, threshold_max: float = 1.0):
        if max_order not in (1, 2, 3):
            raise AmedValueError(f"{self.key}: max_order must be 1..3, got {max_order!r}")
        self.max_order = int(max_order)
        self.predict_x0 = bool(predict_x0)
        self.lower_order_final = bool(lower_order_final)
        self.thresholding = bool(thresholding)
        self.threshold_p = float(threshold_p)
        self.threshold_max = float(threshold_max)

    def orders(self, num_steps: int) -> tuple[int, ...]:
        return multistep_orders(num_steps, self.max_order, self.lower_order_final)

    def output(self, x, D, t):
        if not self.predict_x0:
            return _d(x, D, t)
        return dynamic_threshold(D, self.threshold_p, self.threshold_max) if self.thresholding else D


class DPMSolverPP(_DataPredictionMultistep):
    """Multistep DPM-Solver++ (Lu et al. 2022) in the VE form alpha = 1, sigma = t, lambda = -log t.

    ``predict_x0`` stores (optionally thresholded) data predictions; otherwise noise predictions d.
    """

    key = "dpmpp"
    keep = 3

    def __init__(self, max_order: int = 3, exact_d2: bool = False, **kw):
        super().__init__(max_order=max_order, **kw)
        # The published third-order multistep update (official DPM-Solver, diffusers, k-diffusion and
        # the authors' code) weights D2 = (D1_0 - D1_1)/(r0 + r1) ~ h^2 D''/2 by phi3, where the
        # Taylor expansion needs 2 phi3: it is second order asymptotically (measured in
        # tests/test_convergence.py). exact_d2=True uses the Taylor weight (third order); the default
        # keeps the published update, which produced the paper's numbers.
        self.exact_d2 = bool(exact_d2)

    def init_state(self, num_steps: int) -> State:
        return State(orders=self.orders(num_steps))

    def update(self, x, t, t_next, denoise, state, c=None):
        order = min(state.orders[state.index] if state.orders else self.max_order, len(state.hist))
        c = _scale(c, t)
        (t0, m0) = state.hist[-1]
        h = torch.log(t0 / t_next)
        ones = torch.ones_like(t)
        terms, coef = [x], [1.0 if not self.predict_x0 else t_next / t0]
        if self.predict_x0:
            phi1 = torch.expm1(-h)
            phi2 = phi1 / h + 1.0
            phi3 = phi2 / h - 0.5
            sign, base = -1.0, ones  # x' = (t'/t0) x - c * [...]
        else:
            phi1 = torch.expm1(h)
            phi2 = phi1 / h - 1.0
            phi3 = phi2 / h - 0.5
            sign, base = -1.0, t_next  # x' = x - c t' [...]
        k = sign * c * base
        if order == 1:
            terms += [m0]
            coef += [k * phi1]
        else:
            (t1, m1) = state.hist[-2]
            r0 = torch.log(t1 / t0) / h
            if order == 2:
                # m0 + 0.5 * (m0 - m1) / r0
                terms += [m0, m1]
                coef += [k * phi1 * (1.0 + 0.5 / r0), k * phi1 * (-0.5 / r0)]
            else:
                (t2, m2) = state.hist[-3]
                r1 = torch.log(t2 / t1) / h
                # D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1,
                # D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0+r1).
                a0, a1 = 1.0 / r0, 1.0 / r1  # D1_0 = a0 (m0 - m1); D1_1 = a1 (m1 - m2)
                w = r0 / (r0 + r1)
                # D1 = (1+w) D1_0 - w D1_1 ; D2 = (D1_0 - D1_1)/(r0+r1)
                d1 = ((1 + w) * a0, -(1 + w) * a0 - w * a1, w * a1)  # coefficients on m0, m1, m2
                f2 = 2.0 if self.exact_d2 else 1.0
                d2 = (f2 * a0 / (r0 + r1), f2 * (-a0 - a1) / (r0 + r1), f2 * a1 / (r0 + r1))
                if self.predict_x0:
                    # x' = (t'/t0) x - c (phi1 m0 - phi2 D1 + phi3 D2)
                    cm = [phi1 - phi2 * d1[0] + phi3 * d2[0], -phi2 * d1[1] + phi3 * d2[1], -phi2 * d1[2] + phi3 * d2[2]]
                else:
                    # x' = x - c t' (phi1 m0 + phi2 D1 + phi3 D2)
                    cm = [phi1 + phi2 * d1[0] + phi3 * d2[0], phi2 * d1[1] + phi3 * d2[1], phi2 * d1[2] + phi3 * d2[2]]
                terms += [m0, m1, m2]
                coef += [k * cm[0], k * cm[1], k * cm[2]]
        x_next = lincomb(terms, coef)
        return x_next, replace(state, index=state.index + 1, fresh=False)


class DPMSolverPP2M(DPMSolverPP):
    key = "dpmpp2m"

    def __init__(self, max_order: int = 2, **kw):
        super().__init__(max_order=max_order, **kw)


class DPMSolverPP3M(DPMSolverPP):
    key = "dpmpp3m"

    def __init__(self, max_order: int = 3, **kw):
        super().__init__(max_order=max_order, **kw)


class UniPC(_DataPredictionMultistep):
    """UniPC (Zhao et al. 2023): UniP-p predictor + UniC corrector, B(h) variants bh1/bh2.

    The corrector's network call at t_next becomes the next step's model output (no extra NFE) and
    is skipped on the final step, as in the official code.
    """

    key = "unipc"

    def __init__(self, max_order: int = 3, variant: str = "bh2", **kw):
        super().__init__(max_order=max_order, **kw)
        if variant not in ("bh1", "bh2"):
            raise AmedValueError(f"unipc: variant must be 'bh1' or 'bh2', got {variant!r}")
        self.variant = variant
        self.keep = self.max_order

    def init_state(self, num_steps: int) -> State:
        return State(orders=self.orders(num_steps), extra={"num_steps": num_steps})

    def _coefficients(self, hist, t_next, order):
        """rho_p, rho_c, B(h), h_phi_1 and the D1 differences' reference coefficients (Alg. of UniPC)."""
        t0 = hist[-1][0]
        h = torch.log(t0 / t_next)  # lambda(t') - lambda(t0), lambda = -log t
        hh = -h if self.predict_x0 else h
        h_phi_1 = torch.expm1(hh)
        B_h = hh if self.variant == "bh1" else h_phi_1
        rks = [torch.log(t0 / hist[-1 - k][0]) / h for k in range(1, order)] + [torch.ones_like(h)]
        R = torch.stack([torch.stack([rk ** (i - 1) for rk in rks], -1) for i in range(1, order + 1)], -2)
        b, h_phi_k, fact = [], h_phi_1 / hh - 1.0, 1.0
        for i in range(1, order + 1):
            b.append(h_phi_k * fact / B_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        b = torch.stack(b, -1)  # [B, order]
        if order == 1:
            rho_p = None
        elif order == 2:
            rho_p = torch.full_like(h, 0.5)[:, None]
        else:
            rho_p = torch.linalg.solve(R[:, :-1, :-1], b[:, :-1])
        rho_c = torch.full_like(h, 0.5)[:, None] if order == 1 else torch.linalg.solve(R, b)
        return rks, rho_p, rho_c, B_h, h_phi_1

    def update(self, x, t, t_next, denoise, state, c=None):
        order = min(state.orders[state.index] if state.orders else self.max_order, len(state.hist))
        c = _scale(c, t)
        hist = state.hist
        t0, m0 = hist[-1]
        rks, rho_p, rho_c, B_h, h_phi_1 = self._coefficients(hist, t_next, order)
        ones = torch.ones_like(t)
        k = c * (ones if self.predict_x0 else t_next)  # noise mode multiplies the increment by t'
        lead = t_next / t0 if self.predict_x0 else 1.0
        # D1s_k = (m_{-k} - m0) / r_k, k = 1..order-1
        prev = [hist[-1 - j][1] for j in range(1, order)]


        def d1_weights(rho):
            """-k B_h sum_j rho_j D1s_j as weights on m_{-j}, and their negated sum on m0."""
            w = [-k * B_h * rho[:, j] / rks[j] for j in range(order - 1)]
            return w, -sum(w) if w else torch.zeros_like(t)

        # Predictor: x_ = lead x - k h_phi_1 m0 - k B_h sum rho_p D1s.
        w_prev, w_m0 = d1_weights(rho_p) if rho_p is not None else ([], torch.zeros_like(t))
        x_pred = lincomb([x, m0, *prev], [lead, -k * h_phi_1 + w_m0, *w_prev])
        last = state.index + 1 >= state.extra.get("num_steps", math.inf)
        if last:
            return x_pred, replace(state, index=state.index + 1, fresh=False)
        # Corrector (UniC): evaluate at the predicted point, reuse it as the next model output.
        m_t = self.output(x_pred, model_eval(denoise, x_pred, t_next), t_next)
        w_prev, w_m0 = d1_weights(rho_c)
        wt = -k * B_h * rho_c[:, -1]  # on (m_t - m0)
        x_next = lincomb([x, m0, m_t, *prev], [lead, -k * h_phi_1 + w_m0 - wt, wt, *w_prev])
        hist = (hist + ((t_next, m_t),))[-self.keep:]
        return x_next, replace(state, hist=hist, index=state.index + 1, fresh=True)


SOLVERS: dict[str, type[Solver]] = {cls.key: cls for cls in (DDIM, Heun, DPM2, DPMSolverPP2M, DPMSolverPP3M, UniPC, IPNDM)}


def make_solver(key: str, **options) -> Solver:
    """The solver registered as ``key``, configured with ``options`` (a ValueError names bad ones)."""
    if key not in SOLVERS:
        raise AmedValueError(f"unknown solver {key!r}; choose one of {sorted(SOLVERS)}")
    try:
        return SOLVERS[key](**options)
    except TypeError as e:
        raise AmedValueError(f"solver {key!r} does not take options {sorted(options)}: {e}") from None
