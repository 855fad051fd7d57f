"""Training the AMED predictor by trajectory distillation (paper Algorithm 1), and the checks around it.

Per training step, one batch of teacher trajectories on the refined grid (M points inserted per
student interval, Eq. 13), read at the student points, and one of two objectives:

* ``per_interval`` (the authors' Algorithm 1): for each interval n = 0 .. N-2 one student step, the
  loss ||x_{n+1} - y_{n+1}||^2 (squared L2 per sample, mean over the batch; Eq. 14 with d = L2) and
  one Adam update. Single-step students (AMED-Solver, DDIM and DPM-Solver-2 plugins) restart each
  interval from the teacher state; multistep students continue from their own detached state.
* ``end_to_end``: the student rolls out its own trajectory from the noise without detaching, the same
  per-interval losses are summed and backpropagated once per batch, one Adam update per step, so an
  interval's r also answers for what it does to the later intervals (through the state and the base
  solver's history).

Gradients reach phi through the network calls made at points that depend on phi (the mid-point call
always; under ``end_to_end`` also the t_n calls after the first interval); the frozen network is
differentiated with respect to its input and sigma, the bottleneck feature never.

Recipe ``interval_search`` (not the authors'; needs the per-interval r biases, AMEDConfig.interval_bias):
before training, each interval's r bias is set to the best of ``SEARCH_BIASES`` by that interval's loss on
``SEARCH_TRAJECTORIES`` training trajectories, interval after interval, from the start states the
per_interval objective uses. The per-interval L2 of AMED-Solver can have a false minimum at r -> 0 behind a
barrier, and the authors' shared start at r ~ 0.5 falls into it (NOTES.md, 2026-12-01).

The budget is counted in training steps (batches), not in trajectories: by default one epoch over the
training trajectories and at least ``AUTHORS_STEPS`` steps (the authors' 10,000 trajectories at batch
128), more epochs over the same teacher states when there are fewer trajectories. Epoch 0 visits the
batches in order; later epochs in an order drawn from ``train_seed``. With ``holdout`` trajectories the
student's own rollout (the sampler itself) is validated against the teacher during training; the best
of the snapshots, the untrained start and the neutral predictor (r = 0.5, c = 1, a = 1) is kept.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .cache import TeacherCache, cache_meta
from .plugin import (SINGLE_STEP, amed_interval, detach_state, init_state, model_conditioning, model_guidance,
                     run_amed, student_grid, student_solver)
from .gridfile import grid_times, is_grid_path
from .predictor import OBJECTIVES, AMEDConfig, AMEDPredictor
from .calls import TRAIN_SEED_BASE, ModelCall, conditioned, model_sigma_range, randn_seeds
from .driver import integrate
from .sampling import sample_trajectory
from .schedules import default_rho, refine_schedule, teacher_indices
from .errors import AmedValueError, Diverged

__all__ = ["train_predictor", "default_config", "teacher_states", "training_seeds", "build_teacher_cache",
           "AUTHORS_STEPS", "Budget", "plan_budget", "rollout_l2", "TrainingDiverged", "end_to_end_loss",
           "search_interval_bias", "SEARCH_BIASES", "SEARCH_TRAJECTORIES"]

# The authors' budget: 10,000 trajectories at batch 128 = 79 batches, i.e. 79 updates per interval.
AUTHORS_STEPS = 79
SELECT = ("best", "last")
# Recipe "interval_search": the r-logit biases tried per interval (-7 .. 4 in steps of 0.5: r from ~0.001 to
# ~0.98 around a zero logit), on the first 64 training trajectories.
SEARCH_BIASES = tuple(0.5 * k for k in range(-14, 9))
SEARCH_TRAJECTORIES = 64


class TrainingDiverged(Diverged):
    """A non-finite loss or gradient: training stops, nothing is saved."""


def training_seeds(seed: int, count: int) -> list[int]:
    """The noise seeds of a training run: disjoint from evaluation seeds, a function of ``seed`` only."""
    first = TRAIN_SEED_BASE + int(seed) * 10_000_000
    return list(range(first, first + count))


def default_config(solver: str = "amed", nfe: int = 5, **overrides) -> AMEDConfig:
    """The authors' recommended settings (authors-code.md §8.1) unless overridden.

    A plugin's teacher is its base solver and inherits the student's solver options (max_order,
    predict_x0, lower_order_final, ...), as the authors' loss does; ``teacher_options`` overrides them.
    """
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
        base["rho"] = default_rho(overrides["schedule"])
    if "teacher_options" not in overrides and base["teacher"] == solver:
        base["teacher_options"] = dict(base.get("solver_options", {}))  # the authors' loss passes them on
    unknown = sorted(set(base) - set(AMEDConfig.__dataclass_fields__))
    if unknown:
        raise AmedValueError(f"unknown AMED settings {unknown}")
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


def _num_seeds(num_trajectories: int, batch: int, holdout: int) -> int:
    """Seeds a run uses: the training trajectories rounded up to whole batches, then the held-out ones."""
    return math.ceil(num_trajectories / batch) * batch + holdout


def build_teacher_cache(denoiser, root, config: AMEDConfig, shape, num_trajectories: int, seed: int = 0,
                        batch: int = 128, dtype: str = "float32", shard_size: int | None = None,
                        device="cpu", progress: Callable | None = None, holdout: int = 0,
                        replace_mismatched: bool = False) -> TeacherCache:
    """Compute (or resume) the teacher cache for a training run's seeds (training + held-out); returns it.

    ``replace_mismatched``: a cache directory built for other settings is deleted and rebuilt (the
    workflow owns its cache directories); by default it is an error.
    """
    if holdout < 0:
        raise AmedValueError(f"holdout must be >= 0, got {holdout!r}")
    name, sha = _model_identity(denoiser)
    seeds = training_seeds(seed, _num_seeds(num_trajectories, batch, holdout))
    shard_size = shard_size or batch * max(1, 1024 // batch)
    if shard_size % batch:
        raise AmedValueError(f"shard_size ({shard_size}) must be a multiple of the batch ({batch}) so that cached and "
                         f"on-the-fly teachers are computed on the same batches")
    meta = cache_meta(model=name, model_sha256=sha, teacher=config.teacher, teacher_options=config.teacher_options,
                      schedule=config.schedule, rho=config.rho, sigma_min=config.sigma_min,
                      sigma_max=config.sigma_max, num_points=config.num_points, M=config.M,
                      grid=student_grid(config).tolist(), shape=shape, first_seed=seeds[0], num_seeds=len(seeds),
                      dtype=dtype, shard_size=shard_size, guidance=model_guidance(denoiser),
                      conditioning=model_conditioning(denoiser))
    cache = TeacherCache(root, meta, replace_mismatched=replace_mismatched)

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
            raise AmedValueError(f"teacher cache {cache.root} was built for {key}={cache.meta.get(key)!r}, "
                             f"this training run needs {key}={value!r}")
    if cache.meta["num_seeds"] < len(seeds):
        raise AmedValueError(f"teacher cache {cache.root} holds {cache.meta['num_seeds']} trajectories, "
                         f"this run needs {len(seeds)} (training + held-out)")
    if not cache.complete():
        raise AmedValueError(f"teacher cache {cache.root} is incomplete; rerun `amed teacher` to finish it")


# ------------------------------------------------------------------------------------------ budget
@dataclass(frozen=True)
class Budget:
    """How long a run trains: ``steps`` batches over ``batches_per_epoch``, validated every ``validate_every``."""

    steps: int
    batches_per_epoch: int
    validate_every: int

    @property
    def epochs(self) -> float:
        return self.steps / self.batches_per_epoch


def plan_budget(num_trajectories: int, batch: int, steps: int | None = None, epochs: float | None = None,
                validate_every: int | None = None) -> Budget:
    """``steps`` or ``epochs`` (not both); neither: one epoch, and at least the authors' 79 steps."""
    if steps is not None and epochs is not None:
        raise AmedValueError(f"give steps or epochs, not both (got steps={steps!r}, epochs={epochs!r})")
    per_epoch = math.ceil(num_trajectories / batch)
    if steps is None:
        if epochs is None:
            steps = max(per_epoch, AUTHORS_STEPS)
        else:
            if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
                raise AmedValueError(f"epochs must be a positive number, got {epochs!r}")
            steps = max(1, round(epochs * per_epoch))
    if not isinstance(steps, int) or steps < 1:
        raise AmedValueError(f"steps must be a positive integer, got {steps!r}")
    if validate_every is None:  # at least once per epoch, and about 16 points on the training curve
        validate_every = max(1, min(per_epoch, math.ceil(steps / 16)))
    if not isinstance(validate_every, int) or validate_every < 1:
        raise AmedValueError(f"validate_every must be a positive integer, got {validate_every!r}")
    return Budget(steps=steps, batches_per_epoch=per_epoch, validate_every=validate_every)


def _batch_order(budget: Budget, train_seed: int) -> list[int]:
    """Batch index of every step: epoch 0 in order (the authors' single pass), later epochs shuffled."""
    order: list[int] = []
    epoch = 0
    while len(order) < budget.steps:
        idx = list(range(budget.batches_per_epoch))
        if epoch:
            g = torch.Generator().manual_seed(int(train_seed) * 1_000_003 + epoch)
            idx = torch.randperm(budget.batches_per_epoch, generator=g).tolist()
        order += idx
        epoch += 1
    return order[:budget.steps]


# -------------------------------------------------------------------------------------- validation
@torch.no_grad()
def rollout_l2(denoiser, predictor, noise: torch.Tensor, target: torch.Tensor, seeds: list[int],
               batch: int) -> tuple[float, list[float]]:
    """The student's own rollout (Algorithm 2) vs the teacher at the student points: mean over samples of
    the L2 norm at the endpoint, and per point t_1 .. t_{N-1}."""
    norms = []
    for i in range(0, noise.shape[0], batch):
        with conditioned(denoiser, seeds[i:i + batch]):
            traj = run_amed(denoiser, noise[i:i + batch], predictor, keep_trajectory=True)
        diff = (traj[1:] - target[1:, i:i + batch].to(traj)).flatten(2)
        norms.append(diff.double().norm(dim=2))  # [N - 1, b]
    per_point = torch.cat(norms, dim=1).mean(dim=1)
    return float(per_point[-1]), [float(v) for v in per_point]


def _update(opt, params, loss: torch.Tensor, grads, what: str) -> None:
    """One optimizer step with these gradients, after checking that loss and gradients are finite."""
    _finite_or_raise(loss, grads, what)
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()


def _finite_or_raise(loss: torch.Tensor, grads, what: str) -> None:
    if not math.isfinite(loss.item()):
        raise TrainingDiverged(f"training diverged: the loss is {loss.item()} at {what}; nothing was saved "
                               f"(lower --lr, check the teacher cache and the denoiser)")
    for g in grads:
        if g is not None and not bool(torch.isfinite(g).all()):
            raise TrainingDiverged(f"training diverged: a non-finite gradient at {what}; nothing was saved "
                                   f"(lower --lr, check the teacher cache and the denoiser)")


# ---------------------------------------------------------------------------------------- training
def end_to_end_loss(config: AMEDConfig, solver, predictor, model: ModelCall, x: torch.Tensor, target: torch.Tensor,
                    grid: torch.Tensor):
    """The end_to_end objective of one batch: the student rolls out from x = sigma_max * noise without detaching;
    returns (sum of the per-interval losses ||x_{n+1} - y_{n+1}||^2, the per-interval losses, the last (r, c, a))."""
    parts, rca = [], [None]

    def step(x, t_cur, t_next, state, n):
        x, state, rca[0] = amed_interval(config, solver, predictor, x, t_cur, t_next, model, state, grad_first=True)
        parts.append((x - target[n + 1]).square().flatten(1).sum(1).mean())
        return x, state

    integrate(step, x, grid, init_state(config, solver), name=f"amed[{config.solver}]", watch=False)
    return torch.stack(parts).sum(), parts, rca[0]


@torch.no_grad()
def search_interval_bias(config: AMEDConfig, solver, predictor: AMEDPredictor, denoiser, noise: torch.Tensor,
                         target: torch.Tensor, seeds: list[int], batch: int, grid: torch.Tensor) -> dict:
    """Recipe ``interval_search``: set ``predictor.r_bias[n]`` to the best of ``SEARCH_BIASES`` by interval n's loss
    ||x_{n+1} - y_{n+1}||^2 (mean over the given trajectories), for n = 0, 1, ... in turn. Start states as in
    per_interval training: the teacher's for single-step students, for multistep ones the student's own (with
    its history) under the biases already chosen. Returns {"bias": chosen [N-1], "loss": [N-1][candidates]}."""
    if getattr(predictor, "r_bias", None) is None:
        raise AmedValueError("recipe 'interval_search' needs a predictor with per-interval r biases (interval_bias=True)")
    single_step = config.solver in SINGLE_STEP
    chunks = [slice(i, min(i + batch, noise.shape[0])) for i in range(0, noise.shape[0], batch)]
    xs = [noise[k] * float(grid[0]) for k in chunks]
    states = [init_state(config, solver) for _ in chunks]
    chosen, table = [], []
    for n in range(grid.numel() - 1):

        def run(k, bias):
            predictor.r_bias[n] = bias
            x = target[n, chunks[k]] if single_step and n > 0 else xs[k]
            B = x.shape[0]
            model = ModelCall(denoiser, afs=config.afs and n == 0, features=True)
            with conditioned(denoiser, seeds[chunks[k]]):
                return amed_interval(config, solver, predictor, x, grid[n].expand(B), grid[n + 1].expand(B), model,
                                     states[k])

        losses = []
        for bias in SEARCH_BIASES:
            total = sum(float((run(k, bias)[0] - target[n + 1, chunks[k]]).square().flatten(1).sum(1).sum())
                        for k in range(len(chunks)))
            losses.append(total / noise.shape[0])
        best = SEARCH_BIASES[min(range(len(losses)), key=lambda j: (losses[j], j))]
        for k in range(len(chunks)):  # advance with the chosen bias
            xs[k], states[k], _ = run(k, best)
        predictor.r_bias[n] = best
        chosen.append(best)
        table.append(losses)
    return {"bias": chosen, "loss": table}


def train_predictor(denoiser, shape, solver: str = "amed", nfe: int = 5, *, num_trajectories: int = 10_000,
                    batch: int = 128, lr: float = 5e-3, seed: int = 0, cache: TeacherCache | None = None,
                    device="cpu", progress: bool = False, log: Callable[[str], None] | None = None,
                    steps: int | None = None, epochs: float | None = None, train_seed: int | None = None,
                    holdout: int = 0, validate_every: int | None = None, select: str = "best",
                    objective: str = "per_interval", recipe: str = "authors", **config_overrides) -> AMEDPredictor:
    """Train an AMED predictor for ``denoiser`` (Algorithm 1); returns it with its record filled in.

    ``config_overrides`` are AMEDConfig fields (schedule, rho, afs, scale_dir, scale_time, teacher,
    M, solver_options, teacher_options, sigma_min, sigma_max). The teacher starts from the noise of
    ``num_trajectories`` training seeds drawn from ``seed`` (plus ``holdout`` held-out ones); with
    ``cache`` its states are read from a TeacherCache built for the same settings, otherwise computed on
    the fly (again each epoch). ``train_seed`` (default ``seed``) draws the predictor's initialisation and
    the batch order of epochs after the first, so several predictors can train on one cache.
    ``steps``/``epochs``: the budget (see ``plan_budget``). ``objective``: "per_interval" (the authors')
    or "end_to_end". ``recipe``: "authors" (r starts at the random initialisation) or "interval_search"
    (per-interval r biases, each first set by a search over its interval's loss; see the module docstring;
    the record's ``search`` holds the biases chosen). With ``holdout`` > 0 the student's rollout on the held-out trajectories is
    validated every ``validate_every`` steps and, with ``select="best"``, the predictor returned is the
    best of those snapshots, the untrained start and the neutral predictor (``select="last"``: the last
    one, as the authors ship it; the validation is still recorded).
    """
    if num_trajectories < 1 or batch < 1:
        raise AmedValueError(f"need num_trajectories >= 1 and batch >= 1, got {num_trajectories!r}, {batch!r}")
    if not lr > 0:
        raise AmedValueError(f"lr must be positive, got {lr!r}")
    if not isinstance(holdout, int) or holdout < 0:
        raise AmedValueError(f"holdout must be a non-negative integer, got {holdout!r}")
    if objective not in OBJECTIVES:
        raise AmedValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if select not in SELECT:
        raise AmedValueError(f"select must be one of {list(SELECT)}, got {select!r}")
    budget = plan_budget(num_trajectories, batch, steps, epochs, validate_every)
    train_seed = int(seed if train_seed is None else train_seed)
    for k, v in zip(("sigma_min", "sigma_max"), model_sigma_range(denoiser)):  # unset: the model's own range
        if config_overrides.get(k) is None:
            config_overrides[k] = v
    if recipe == "interval_search" and config_overrides.get("interval_bias") is None:
        config_overrides["interval_bias"] = True
    config = default_config(solver, nfe, objective=objective, recipe=recipe, **config_overrides)
    name, sha = _model_identity(denoiser)
    config.model, config.model_sha256, config.shape = name, sha, tuple(shape)
    config.guidance = model_guidance(denoiser)
    config.features = ModelCall(denoiser, features=True).features  # g_phi reads the bottleneck, or zeros
    config.seed, config.train_seed, config.batch, config.lr = int(seed), train_seed, int(batch), float(lr)
    N = config.num_points  # validates NFE vs AFS
    solver_obj = student_solver(config)
    if config.teacher == "amed":
        raise AmedValueError("the teacher must be a baseline solver, got 'amed'")
    predictor = AMEDPredictor(config, seed=train_seed).to(device)
    params = list(predictor.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    seeds_all = training_seeds(seed, _num_seeds(num_trajectories, batch, holdout))
    n_train = len(seeds_all) - holdout
    config.num_trajectories, config.holdout = n_train, holdout
    if cache is not None:
        _check_cache(cache, config, shape, seeds_all, model_conditioning(denoiser))
    grid = student_grid(config).to(device)
    single_step = config.solver in SINGLE_STEP

    def teacher(seeds, noise):
        return cache.read(seeds).to(device) if cache is not None else teacher_states(denoiser, noise, config)

    # Held-out teacher trajectories, read (or computed) once.
    val = None
    if holdout:
        v_seeds = seeds_all[n_train:]
        v_noise = randn_seeds(v_seeds, shape, device=device)
        parts = []
        for i in range(0, holdout, batch):
            with conditioned(denoiser, v_seeds[i:i + batch]):
                parts.append(teacher(v_seeds[i:i + batch], v_noise[i:i + batch]))
        val = (v_seeds, v_noise, torch.cat(parts, dim=1))
    history: list[dict] = []
    candidates: list[tuple[float, str, dict]] = []

    def validate(step: int, updates: int, label: str) -> None:
        endpoint, per_point = rollout_l2(denoiser, predictor.eval(), val[1], val[2], val[0], batch)
        predictor.train()
        history.append({"step": step, "updates": updates, "endpoint_l2": endpoint, "point_l2": per_point})
        candidates.append((endpoint, label, copy.deepcopy(predictor.state_dict())))
        if log is not None:
            log(f"validation step {step}: held-out endpoint L2 {endpoint:.5f}")

    t_search = 0.0
    if config.recipe == "interval_search":  # the searched start is the "init" candidate below
        t0 = time.perf_counter()
        s_seeds = seeds_all[:min(n_train, SEARCH_TRAJECTORIES)]
        s_noise = randn_seeds(s_seeds, shape, device=device)
        s_target = []
        for i in range(0, len(s_seeds), batch):
            with conditioned(denoiser, s_seeds[i:i + batch]):
                s_target.append(teacher(s_seeds[i:i + batch], s_noise[i:i + batch]))
        found = search_interval_bias(config, solver_obj, predictor, denoiser, s_noise, torch.cat(s_target, dim=1),
                                     s_seeds, batch, grid)
        config.search = {"bias": found["bias"], "trajectories": len(s_seeds),
                         "loss": [min(row) for row in found["loss"]]}
        t_search = time.perf_counter() - t0
        if log is not None:
            log(f"interval_search: r biases {found['bias']}, per-interval loss {config.search['loss']}")
    updates = 0
    if val is not None:
        validate(0, 0, "init")
    losses = torch.zeros(N - 1, dtype=torch.float64)
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=budget.steps, unit="step", desc=f"train {config.solver} nfe={nfe}")
    start = time.perf_counter()
    order = _batch_order(budget, train_seed)
    r = c = a = torch.zeros(1)
    for step, b in enumerate(order):
        seeds = seeds_all[b * batch:min((b + 1) * batch, n_train)]
        noise = randn_seeds(seeds, shape, device=device)
        with conditioned(denoiser, seeds):  # class labels / prompts of these seeds for every call below
            target = teacher(seeds, noise)
            model = ModelCall(denoiser, afs=config.afs, features=True)
            x = noise * float(grid[0])  # the exact start (a float16 cache would round it)
            if objective == "per_interval":

                def interval(x, t_cur, t_next, state, n):  # one update per interval, from the teacher's state
                    nonlocal updates, r, c, a
                    x_start = target[n] if single_step and n > 0 else x
                    with torch.enable_grad():
                        x_next, state, (r, c, a) = amed_interval(config, solver_obj, predictor, x_start, t_cur,
                                                                 t_next, model, state)
                        loss = (x_next - target[n + 1]).square().flatten(1).sum(1).mean()
                        grads = torch.autograd.grad(loss, params, allow_unused=True)
                    _update(opt, params, loss, grads, f"step {step + 1} (batch {b}), interval {n}")
                    updates += 1
                    losses[n] = 0.9 * losses[n] + 0.1 * loss.item() if step else loss.item()
                    return x_next.detach(), detach_state(state)

                integrate(interval, x, grid, init_state(config, solver_obj), name=f"amed[{config.solver}]",
                          model=model, nfe=config.nfe, watch=False)
            else:  # end_to_end: the student's own trajectory, one update for the sum of the interval losses
                with torch.enable_grad():
                    loss, parts, (r, c, a) = end_to_end_loss(config, solver_obj, predictor, model, x, target, grid)
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                _update(opt, params, loss, grads, f"step {step + 1} (batch {b})")
                updates += 1
                for n, part in enumerate(parts):
                    losses[n] = 0.9 * losses[n] + 0.1 * part.item() if step else part.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses.sum().item():.4g}", r=f"{r.mean().item():.3f}")
        if log is not None and (step % 10 == 0 or step == budget.steps - 1):
            log(f"step {step + 1}/{budget.steps} (epoch {step // budget.batches_per_epoch}) loss/interval "
                f"{[round(v, 5) for v in losses.tolist()]} r {r.mean().item():.4f} c {c.mean().item():.4f} "
                f"a {a.mean().item():.4f}")
        if val is not None and ((step + 1) % budget.validate_every == 0 or step + 1 == budget.steps):
            validate(step + 1, updates, f"step {step + 1}")
    if bar is not None:
        bar.close()
    selected = "last"
    if val is not None:
        neutral = AMEDPredictor.neutral(config, seed=train_seed).to(device)
        endpoint, per_point = rollout_l2(denoiser, neutral, val[1], val[2], val[0], batch)
        history.append({"step": None, "updates": None, "endpoint_l2": endpoint, "point_l2": per_point,
                        "candidate": "neutral"})
        candidates.append((endpoint, "neutral", neutral.state_dict()))
        if select == "best":  # ties go to the earliest candidate (the init, then training order)
            best = min(range(len(candidates)), key=lambda i: (candidates[i][0], i))
            selected = candidates[best][1]
            predictor.load_state_dict(candidates[best][2])
        else:
            selected = f"step {budget.steps}"
    config.train_seconds = round(time.perf_counter() - start + t_search, 3)
    config.loss_per_step = [float(v) for v in losses]
    config.final_loss = float(losses.sum())
    config.steps, config.updates, config.epochs = budget.steps, updates, round(budget.epochs, 6)
    config.selected, config.validation = selected, history or None
    return predictor.eval()
