"""Training the AMED predictor by trajectory distillation (paper Algorithm 1, as the authors run it).

Per batch of noise seeds: teacher trajectories on the refined grid (M points inserted per student
interval, Eq. 13), read at the student points; then for each interval n = 0 .. N-2 one student
step, the loss ||x_{n+1} - y_{n+1}||^2 (squared L2 per sample, mean over the batch; Eq. 14 with
d = L2) and one Adam update. Gradients reach phi only through the mid-point network evaluation
(the frozen network is differentiated with respect to its input and sigma). Single-step students
(AMED-Solver, DDIM and DPM-Solver-2 plugins) restart each interval from the teacher state;
multistep students continue from their own detached state and history.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from .cache import TeacherCache, cache_meta
from .plugin import (SINGLE_STEP, amed_interval, detach_state, init_state, model_conditioning, model_guidance,
                     student_grid, student_solver)
from .gridfile import grid_times, is_grid_path
from .predictor import AMEDConfig, AMEDPredictor
from .sampling import ModelCall, conditioned, randn_seeds, sample_trajectory
from .schedules import refine_schedule, teacher_indices

__all__ = ["train_predictor", "default_config", "teacher_states", "training_seeds", "build_teacher_cache"]

# Noise seeds for training live far from the evaluation seeds 0..49,999.
TRAIN_SEED_BASE = 1_000_000_000


def training_seeds(seed: int, count: int) -> list[int]:
    """The noise seeds of a training run: disjoint from evaluation seeds, a function of ``seed`` only."""
    first = TRAIN_SEED_BASE + int(seed) * 10_000_000
    return list(range(first, first + count))


def default_config(solver: str = "amed", nfe: int = 5, **overrides) -> AMEDConfig:
    """The authors' recommended settings (authors-code.md §8.1) unless overridden."""
    if solver == "amed":
        base = dict(schedule="time_uniform", rho=1.0, teacher="heun", M=1)
    elif solver == "dpm2":
        base = dict(schedule="polynomial", rho=7.0, teacher="dpm2", M=1)
    elif solver in ("dpmpp2m", "dpmpp3m", "unipc"):
        base = dict(schedule="logsnr", rho=None, teacher=solver, M=2)
    else:
        base = dict(schedule="polynomial", rho=7.0, teacher=solver, M=2)
    if solver == "ipndm":
        base["solver_options"] = {"max_order": 4}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    sched = overrides.get("schedule")
    if sched is not None and (not isinstance(sched, str) or is_grid_path(sched)):  # a grid file, record or times
        afs = overrides.get("afs", AMEDConfig.__dataclass_fields__["afs"].default)
        overrides.update(schedule="explicit", grid=grid_times(sched, amed=(solver, nfe, afs)))
    base.update(overrides)
    if "schedule" in overrides and "rho" not in overrides:
        base["rho"] = {"polynomial": 7.0, "time_uniform": 1.0, "discrete": 1.0}.get(overrides["schedule"])
    unknown = sorted(set(base) - set(AMEDConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown AMED settings {unknown}")
    return AMEDConfig(solver=solver, nfe=nfe, **base)


def teacher_grid(config: AMEDConfig) -> torch.Tensor:
    """The student grid refined with M teacher points per interval (an explicit grid: uniformly in log t)."""
    if config.schedule == "explicit":
        return refine_schedule(student_grid(config), config.num_points, config.M)
    return refine_schedule(config.schedule, config.num_points, config.M, config.sigma_min, config.sigma_max,
                           config.rho)


@torch.no_grad()
def teacher_states(denoiser, noise: torch.Tensor, config: AMEDConfig) -> torch.Tensor:
    """Teacher states at the student grid points, [N, B, ...] (teachers never use AFS)."""
    grid = teacher_grid(config)
    traj = sample_trajectory(denoiser, noise, solver=config.teacher, nfe=None, schedule=grid, afs=False,
                             solver_options=dict(config.teacher_options))
    return traj[teacher_indices(config.num_points, config.M)]


def _model_identity(denoiser) -> tuple[str, str | None]:
    info = getattr(denoiser, "info", None)
    return (getattr(info, "name", "") or type(denoiser).__name__), getattr(info, "sha256", None)


def build_teacher_cache(denoiser, root, config: AMEDConfig, shape, num_trajectories: int, seed: int = 0,
                        batch: int = 128, dtype: str = "float32", shard_size: int | None = None,
                        device="cpu", progress: Callable | None = None) -> TeacherCache:
    """Compute (or resume) the teacher cache for a training run's seeds; returns it ready to read."""
    name, sha = _model_identity(denoiser)
    num_batches = math.ceil(num_trajectories / batch)
    seeds = training_seeds(seed, num_batches * batch)
    shard_size = shard_size or batch * max(1, 1024 // batch)
    if shard_size % batch:
        raise ValueError(f"shard_size ({shard_size}) must be a multiple of the batch ({batch}) so that cached and "
                         f"on-the-fly teachers are computed on the same batches")
    meta = cache_meta(model=name, model_sha256=sha, teacher=config.teacher, teacher_options=config.teacher_options,
                      schedule=config.schedule, rho=config.rho, sigma_min=config.sigma_min,
                      sigma_max=config.sigma_max, num_points=config.num_points, M=config.M,
                      grid=student_grid(config).tolist(), shape=shape, first_seed=seeds[0], num_seeds=len(seeds),
                      dtype=dtype, shard_size=shard_size, guidance=model_guidance(denoiser),
                      conditioning=model_conditioning(denoiser))
    cache = TeacherCache(root, meta)
    def compute(s):
        with conditioned(denoiser, s):
            return teacher_states(denoiser, randn_seeds(s, shape, device=device), config)

    cache.build(compute, chunk=batch, progress=progress)
    return cache


def _check_cache(cache: TeacherCache, config: AMEDConfig, shape, seeds: list[int],
                 conditioning: str | None = None) -> None:
    """A cache must hold exactly this run's teacher: same model, teacher, grid and seeds."""
    want = cache_meta(model=config.model, model_sha256=config.model_sha256, teacher=config.teacher,
                      teacher_options=config.teacher_options, schedule=config.schedule, rho=config.rho,
                      sigma_min=config.sigma_min, sigma_max=config.sigma_max, num_points=config.num_points,
                      M=config.M, grid=student_grid(config).tolist(), shape=shape, first_seed=seeds[0],
                      num_seeds=len(seeds), dtype="float32", shard_size=1, guidance=config.guidance,
                      conditioning=conditioning)
    for key, value in want.items():
        if key in ("num_seeds", "dtype", "shard_size"):
            continue
        if cache.meta.get(key) != value:
            raise ValueError(f"teacher cache {cache.root} was built for {key}={cache.meta.get(key)!r}, "
                             f"this training run needs {key}={value!r}")
    if cache.meta["num_seeds"] < len(seeds):
        raise ValueError(f"teacher cache {cache.root} holds {cache.meta['num_seeds']} trajectories, "
                         f"this run needs {len(seeds)}")
    if not cache.complete():
        raise ValueError(f"teacher cache {cache.root} is incomplete; rerun `amed teacher` to finish it")


def train_predictor(denoiser, shape, solver: str = "amed", nfe: int = 5, *, num_trajectories: int = 10_000,
                    batch: int = 128, lr: float = 5e-3, seed: int = 0, cache: TeacherCache | None = None,
                    device="cpu", progress: bool = False, log: Callable[[str], None] | None = None,
                    **config_overrides) -> AMEDPredictor:
    """Train an AMED predictor for ``denoiser`` (Algorithm 1); returns it with its record filled in.

    ``config_overrides`` are AMEDConfig fields (schedule, rho, afs, scale_dir, scale_time, teacher,
    M, solver_options, teacher_options, sigma_min, sigma_max). With ``cache`` the teacher states are
    read from a TeacherCache built for the same settings; otherwise they are computed on the fly.
    """
    if num_trajectories < 1 or batch < 1:
        raise ValueError(f"need num_trajectories >= 1 and batch >= 1, got {num_trajectories!r}, {batch!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    info = getattr(denoiser, "info", None)
    for k in ("sigma_min", "sigma_max"):  # unset: the model's own range (as amed.sample)
        if config_overrides.get(k) is None and isinstance(getattr(info, k, None), (int, float)):
            config_overrides[k] = float(getattr(info, k))
    config = default_config(solver, nfe, **config_overrides)
    name, sha = _model_identity(denoiser)
    config.model, config.model_sha256, config.shape = name, sha, tuple(shape)
    config.guidance = model_guidance(denoiser)
    config.seed, config.batch, config.lr = int(seed), int(batch), float(lr)
    N = config.num_points  # validates NFE vs AFS
    solver_obj = student_solver(config)
    if config.teacher == "amed":
        raise ValueError("the teacher must be a baseline solver, got 'amed'")
    predictor = AMEDPredictor(config, seed=seed).to(device)
    params = [p for p in predictor.parameters()]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    num_batches = math.ceil(num_trajectories / batch)
    seeds_all = training_seeds(seed, num_batches * batch)
    config.num_trajectories = len(seeds_all)
    if cache is not None:
        _check_cache(cache, config, shape, seeds_all, model_conditioning(denoiser))
    grid = student_grid(config).to(device)
    single_step = config.solver in SINGLE_STEP
    losses = torch.zeros(N - 1, dtype=torch.float64)
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=config.num_trajectories, unit="traj", desc=f"train {config.solver} nfe={nfe}")
    start = time.perf_counter()
    for b in range(num_batches):
        seeds = seeds_all[b * batch:(b + 1) * batch]
        noise = randn_seeds(seeds, shape, device=device)
        with conditioned(denoiser, seeds):  # class labels / prompts of these seeds for every call below
            target = cache.read(seeds).to(device) if cache is not None else teacher_states(denoiser, noise, config)
            model = ModelCall(denoiser, afs=config.afs, features=True)
            state = init_state(config, solver_obj)
            x = noise * float(grid[0])  # the exact start (a float16 cache would round it)
            B = x.shape[0]
            for n in range(N - 1):
                x_start = target[n] if single_step and n > 0 else x
                with torch.enable_grad():
                    x_next, state, (r, c, a) = amed_interval(config, solver_obj, predictor, x_start,
                                                             grid[n].expand(B), grid[n + 1].expand(B), model, state)
                    loss = (x_next - target[n + 1]).square().flatten(1).sum(1).mean()
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                for p, g in zip(params, grads):
                    p.grad = None if g is None else torch.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5)
                opt.step()
                losses[n] = 0.9 * losses[n] + 0.1 * loss.item() if b else loss.item()
                x, state = x_next.detach(), detach_state(state)
        if bar is not None:
            bar.update(len(seeds))
            bar.set_postfix(loss=f"{losses.sum().item():.4g}", r=f"{r.mean().item():.3f}")
        if log is not None and (b % 10 == 0 or b == num_batches - 1):
            log(f"batch {b + 1}/{num_batches} loss/step {[round(v, 5) for v in losses.tolist()]} "
                f"r {r.mean().item():.4f}+-{r.std().item() if B > 1 else 0:.4f} c {c.mean().item():.4f} "
                f"a {a.mean().item():.4f}")
    if bar is not None:
        bar.close()
    config.train_seconds = round(time.perf_counter() - start, 3)
    config.loss_per_step = [float(v) for v in losses]
    config.final_loss = float(losses.sum())
    return predictor.eval()
