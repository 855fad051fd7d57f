"""AMED-Solver and AMED-Plugin: one interval of Algorithm 2, shared by sampling and training.

Per interval [t_n -> t_{n+1}] (authors-code.md §4.2-4.3):
1. the base solver evaluates the network at (x_n, t_n); the adapter's hook gives h_n (zeros under AFS);
2. g_phi(h_n, t_n, t_{n+1}) -> r_n, c_n, a_n and s_n = t_{n+1}^r t_n^(1-r) (geometric interpolation);
3. AMED-Solver: Euler step to s_n, network at (x_s, a_n s_n), x_{n+1} = x_n + c_n (t_{n+1} - t_n) d_s
   (paper Eq. 9; the direction divides by s_n, a_n only scales the network's sigma input).
   AMED-Plugin on DPM-Solver-2: the same two stages with the learned r_n in the generalised
   DPM-Solver-2 combination. AMED-Plugin on a one-evaluation solver (ddim, ipndm, dpmpp*, unipc):
   two sub-steps of the base solver, t_n -> s_n and s_n -> t_{n+1}, the mid-point evaluation
   entering the base solver's history at time s_n, c_n scaling the second sub-step.
   iPNDM keeps its equal-step coefficients on the unequal sub-steps, as the authors do.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .predictor import AMEDConfig, AMEDPredictor
from .calls import ModelCall, check_noise, time_scaled
from .driver import integrate
from .schedules import get_schedule
from .solvers import DPM2, Solver, State, UniPC, make_solver
from .errors import AmedValueError

__all__ = ["PLUGIN_BASES", "SINGLE_STEP", "student_solver", "student_grid", "init_state", "amed_interval", "run_amed", "amed_coefficients",
           "detach_state", "check_features", "trained_on_features"]

PLUGIN_BASES = ("ddim", "dpm2", "ipndm", "dpmpp2m", "dpmpp3m", "unipc")
# Students that restart every training interval from the teacher's state (authors: "slightly better").
SINGLE_STEP = ("amed", "ddim", "dpm2")


def student_solver(config: AMEDConfig) -> Solver:
    """The solver object an AMED run drives (DPM2's two-stage form for AMED-Solver)."""
    if config.solver == "amed":
        return DPM2()
    if config.solver not in PLUGIN_BASES:
        raise AmedValueError(f"AMED-Plugin supports base solvers {list(PLUGIN_BASES)}, got {config.solver!r}")
    return make_solver(config.solver, **config.solver_options)


def student_grid(config: AMEDConfig) -> torch.Tensor:
    """The student time grid t_0 > ... > t_{N-1} of a predictor's record."""
    if config.schedule == "explicit":
        return torch.tensor(config.grid, dtype=torch.float64)
    return get_schedule(config.schedule, config.num_points, config.sigma_min, config.sigma_max, config.rho)


def init_state(config: AMEDConfig, solver: Solver) -> State:
    """Base-solver state: a plugin takes two sub-steps per interval (2N - 1 points for the order rules)."""
    intervals = config.num_points - 1
    return solver.init_state(intervals if config.solver in ("amed", "dpm2") else 2 * intervals)


def amed_interval(config: AMEDConfig, solver: Solver, predictor: AMEDPredictor, x: torch.Tensor,
                  t_cur: torch.Tensor, t_next: torch.Tensor, model: ModelCall, state: State,
                  grad_first: bool = False):
    """One interval t_cur -> t_next; returns (x_next, state, (r, c, a)).

    ``grad_first``: differentiate the (x_n, t_n) call too (end-to-end training, where x_n depends on phi
    through the earlier intervals); by default it runs without a graph, as the authors' Algorithm 1 does.
    """
    B = x.shape[0]
    # Evaluate at (x_n, t_n) through the hooked call and read the bottleneck recorded there; the feature
    # never carries gradient. Only that call is hooked (the authors never hook the mid-point), except under
    # UniPC, whose model output at t_n comes from the previous interval's corrector call: every call is.
    with torch.set_grad_enabled(grad_first and torch.is_grad_enabled()):
        state = solver.evaluate(x, t_cur, model.hooked, state)
        h = model.last_feature(B, x.device).detach()
    call = model.hooked if isinstance(solver, UniPC) else model
    r, c, a = predictor(h, t_cur, t_next)
    a_or_none = a if config.scale_time > 0 else None
    if config.solver == "amed":
        x_next, state = DPM2.two_stage(x, t_cur, t_next, call, state, r=r, c=c, a=a_or_none, weight=None)
    elif config.solver == "dpm2":
        x_next, state = DPM2.two_stage(x, t_cur, t_next, call, state, r=r, c=c, a=a_or_none, weight=0.5 / r)
    else:
        s = t_next**r * t_cur ** (1.0 - r)
        mid = time_scaled(call, a_or_none)
        x_s, state = solver.update(x, t_cur, s, mid, state)
        state = solver.evaluate(x_s, s, mid, state)
        x_next, state = solver.update(x_s, s, t_next, call, state, c=c)
    return x_next, state, (r, c, a)


def detach_state(state: State) -> State:
    """Cut the graph between intervals (multistep students continue from their own detached state)."""
    return replace(state, hist=tuple((t.detach(), m.detach()) for t, m in state.hist))


def model_guidance(denoiser) -> float | None:
    """The classifier-free guidance scale a denoiser applies (text-to-image adapters), else None."""
    w = getattr(denoiser, "guidance_scale", None)
    if w is None:
        w = (getattr(getattr(denoiser, "info", None), "extra", None) or {}).get("guidance_scale")
    return None if w is None else float(w)


def model_conditioning(denoiser) -> str | None:
    """An id of the per-seed conditioning a denoiser binds (the SD adapter: its captions list), else None."""
    return getattr(denoiser, "conditioning_id", None)


def check_model(config: AMEDConfig, denoiser, noise: torch.Tensor) -> None:
    """A predictor trained for one model, shape and guidance scale refuses another."""
    if config.shape is not None and tuple(noise.shape[1:]) != tuple(config.shape):
        raise AmedValueError(f"predictor was trained for samples of shape {tuple(config.shape)}, "
                         f"got noise of shape {tuple(noise.shape[1:])}")
    info = getattr(denoiser, "info", None)
    if info is not None and config.model and getattr(info, "name", None) and info.name != config.model:
        raise AmedValueError(f"predictor was trained for model {config.model!r}, got model {info.name!r}")
    sha = getattr(info, "sha256", None) if info is not None else None
    if sha and config.model_sha256 and sha != config.model_sha256:
        raise AmedValueError(f"predictor was trained for model {config.model!r} with sha256 {config.model_sha256[:12]}..., "
                         f"but the model given has sha256 {sha[:12]}...")
    w = model_guidance(denoiser)
    if config.guidance is not None and w != config.guidance:
        raise AmedValueError(f"predictor was trained with guidance scale {config.guidance:g}, the model applies "
                         f"{'none' if w is None else format(w, 'g')} (set --guidance {config.guidance:g})")


def trained_on_features(config: AMEDConfig) -> bool:
    """Whether g_phi was trained on a network's bottleneck feature (not zeros)."""
    if config.features is not None:
        return bool(config.features)
    # Not recorded (format 1 records): every registered adapter supplies the bottleneck, so a record naming
    # one was trained on it; of any other model nothing is known.
    from .models.registry import is_registered  # noqa: PLC0415

    return is_registered(config.model)


def check_features(config: AMEDConfig, predictor, denoiser, model: ModelCall) -> None:
    """A predictor trained on bottleneck features refuses a denoiser that cannot supply them (g_phi would
    see zeros and pick other step sizes)."""
    if getattr(predictor, "reads_features", True) and not model.features and trained_on_features(config):
        raise AmedValueError(
            f"the predictor was trained on the bottleneck feature of model {config.model or '(unnamed)'!r}, but the "
            f"denoiser given ({type(denoiser).__name__}) supplies none, so g_phi would see zeros; pass the model's "
            f"adapter (amed.load_model), or give your denoiser with_feature(x, sigma) -> (D, feature [B, 8, 8]), "
            f"e.g. amed.models.base.HookedDenoiser (README: bring your own denoiser)")


@torch.no_grad()
def run_amed(denoiser, noise: torch.Tensor, predictor: AMEDPredictor, keep_trajectory: bool = False,
             coefficients: list | None = None) -> torch.Tensor:
    """Algorithm 2: sample with a trained predictor under the settings of its record."""
    config = predictor.config
    check_noise(denoiser, noise)
    check_model(config, denoiser, noise)
    solver = student_solver(config)
    grid = student_grid(config)
    model = ModelCall(denoiser, afs=config.afs, features=True)
    check_features(config, predictor, denoiser, model)
    predictor = predictor.to(noise.device)

    def step(x, t_cur, t_next, state, n):
        x_next, state, rca = amed_interval(config, solver, predictor, x, t_cur, t_next, model, state)
        if coefficients is not None:
            coefficients.append(tuple(v.detach().cpu() for v in rca))
        return x_next, state

    out, _ = integrate(step, noise * float(grid[0]), grid, init_state(config, solver), name=f"amed[{config.solver}]",
                       model=model, nfe=config.nfe, keep_trajectory=keep_trajectory)
    return out


@torch.no_grad()
def amed_coefficients(denoiser, noise: torch.Tensor, predictor: AMEDPredictor) -> dict[str, torch.Tensor]:
    """The learned r_n, c_n, a_n and s_n per interval and sample (paper Fig. 7), each [N-1, B]."""
    rca: list = []
    run_amed(denoiser, noise, predictor, coefficients=rca)
    grid = student_grid(predictor.config)
    r = torch.stack([v[0] for v in rca])
    out = {"r": r, "c": torch.stack([v[1] for v in rca]), "a": torch.stack([v[2] for v in rca])}
    t_cur, t_next = grid[:-1, None], grid[1:, None]
    out["s"] = t_next**r * t_cur ** (1.0 - r)
    out["t"] = grid
    return out
