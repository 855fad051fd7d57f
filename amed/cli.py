"""The ``amed`` command: models, solvers, sample, gits, teacher, train, fid, fid-ref.

Every subcommand writes its output atomically and prints one summary line; a user mistake is a
one-line message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

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
            raise ValueError(f"solver options are key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _device(name: str):
    from .sampling import resolve_device  # noqa: PLC0415

    return resolve_device(name)


def _load_model(args, device):
    """The model of --model, with --guidance/--prompts bound (text-to-image models only)."""
    import math  # noqa: PLC0415

    from .models.embedded import DEFAULT  # noqa: PLC0415
    from .models.registry import is_text_to_image, load_model  # noqa: PLC0415

    name = args.model or DEFAULT
    guidance, prompts = getattr(args, "guidance", None), getattr(args, "prompts", None)
    kwargs = {}
    if guidance is not None or prompts is not None:
        given = " and ".join(f for f, v in (("--guidance", guidance), ("--prompts", prompts)) if v is not None)
        if not is_text_to_image(name):
            raise ValueError(f"{given} apply to text-to-image (diffusers) models only; model {name!r} is not one")
        if guidance is not None:
            if not math.isfinite(guidance):
                raise ValueError(f"--guidance must be a finite number, got {guidance!r}")
            kwargs["guidance_scale"] = guidance
        if prompts is not None:
            from .models.sd import read_captions  # noqa: PLC0415

            kwargs["captions"] = read_captions(prompts)
    model = load_model(name, **kwargs)
    if hasattr(model, "to"):
        model = model.to(device)
    if hasattr(model, "eval"):
        model.eval()
    return model


def _maybe_compile(model, setting: str, device, text_to_image: bool = False):
    """--compile: auto, on, off, or reduce-overhead (CUDA graphs).

    auto compiles on CUDA only (amed.compile.should_compile; on the CPU 1.2x does not repay the compile),
    and not text-to-image models (compiled Stable Diffusion is untested here, and CFG amplifies compiled-vs-
    eager differences); if compiling or the first-call check against eager fails, auto warns and stays
    eager. on / reduce-overhead compile whatever the device and make such a failure an error. Compilation
    is lazy, once per batch shape.
    """
    from .compile import compile_denoiser, should_compile  # noqa: PLC0415
    from .models.base import Denoiser  # noqa: PLC0415

    auto = setting == "auto"
    if setting == "off" or (auto and (not should_compile(device) or text_to_image)):
        return model
    if not isinstance(model, Denoiser):
        if auto:
            return model
        raise ValueError(f"--compile {setting} needs an amed Denoiser adapter, got {type(model).__name__}")
    if setting == "reduce-overhead" and device.type != "cuda":
        raise ValueError(f"--compile reduce-overhead (CUDA graphs) needs --device cuda, got {device}")
    return compile_denoiser(model, mode="reduce-overhead" if setting == "reduce-overhead" else None, fallback=auto)


def _shape(model) -> tuple:
    info = getattr(model, "info", None)
    if info is None:
        raise ValueError("the model has no ModelInfo; cannot infer the sample shape")
    return tuple(info.shape)


def _text_to_image(args) -> bool:
    from .models.embedded import DEFAULT  # noqa: PLC0415
    from .models.registry import is_text_to_image  # noqa: PLC0415

    return is_text_to_image(args.model or DEFAULT)


def _sigma_range(model) -> tuple[float, float]:
    """The model's own noise range (0.002..80 for EDM-style models, the discrete table's ends for SD)."""
    info = getattr(model, "info", None)
    return (float(getattr(info, "sigma_min", 0.002)), float(getattr(info, "sigma_max", 80.0)))


def _save_npz(path: Path, **arrays) -> None:
    import numpy as np  # noqa: PLC0415

    from .predictor import atomic_write_bytes  # noqa: PLC0415

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


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
    import numpy as np  # noqa: PLC0415

    from . import load_predictor, parse_seeds, randn_seeds, sample  # noqa: PLC0415
    from .gridfile import is_grid_path, load_grid  # noqa: PLC0415
    from .plugin import model_guidance  # noqa: PLC0415
    from .sampling import conditioned  # noqa: PLC0415

    device = _device(args.device)
    model = _maybe_compile(_load_model(args, device), args.compile, device, _text_to_image(args))
    shape = _shape(model)
    seeds = parse_seeds(args.seeds)
    predictor = load_predictor(args.predictor) if args.predictor else None
    given = dict(solver=args.solver, nfe=args.nfe, schedule=args.schedule, afs=args.afs, sigma_min=args.sigma_min,
                 sigma_max=args.sigma_max, rho=args.rho, solver_options=_options(args.opt) or None)
    grid_file = None
    if predictor is None and args.schedule is not None and is_grid_path(args.schedule):
        # A grid file (`amed gits`): the settings not given come from its record; given ones must agree.
        grid_file = load_grid(args.schedule)
        kw = {k: v for k, v in given.items() if v is not None and k != "schedule"}
        kw["schedule"] = grid_file
    elif predictor is None:
        lo, hi = _sigma_range(model)
        defaults = dict(solver="ipndm", nfe=5, schedule="polynomial", afs=False, sigma_min=lo, sigma_max=hi)
        kw = {k: (defaults.get(k) if v is None else v) for k, v in given.items()}
    else:  # only what the user set; a disagreement with the predictor's record is an error
        kw = {k: v for k, v in given.items() if v is not None}
    out = Path(args.out)
    images, t0 = [], time.perf_counter()
    label = "amed" if predictor is not None else kw.get("solver", grid_file.solver if grid_file else "ipndm")
    bar = _bar(len(seeds), f"sample {label}", args.quiet)
    for i in range(0, len(seeds), args.batch):
        chunk = seeds[i:i + args.batch]
        noise = randn_seeds(chunk, shape, device=device)
        with conditioned(model, chunk):
            x = sample(model, noise, predictor=predictor, **kw)
        images.append(model.images(x).numpy() if hasattr(model, "images") else _uint8(x))
        bar(len(chunk))
    imgs = np.concatenate(images)
    meta = {"model": getattr(getattr(model, "info", None), "name", args.model), "predictor": args.predictor,
            "compiled": type(model).__name__ == "CompiledDenoiser",
            "guidance": model_guidance(model), "prompts": args.prompts,
            **(kw if predictor is None else {"record": predictor.config.to_json()})}
    if grid_file is not None:
        meta.update(schedule=args.schedule, grid_record=grid_file.to_json())
    _save_npz(out, images=imgs, seeds=np.asarray(seeds, dtype=np.int64), meta=np.asarray(json.dumps(meta, default=str)))
    dt = time.perf_counter() - t0
    print(f"sampled {len(seeds)} images {tuple(imgs.shape[1:])} in {dt:.1f} s ({len(seeds) / dt:.1f} img/s) -> {out}")
    return 0


def _uint8(x):
    from .models.base import to_uint8  # noqa: PLC0415

    return to_uint8(x).numpy()


def _bar(total, desc, quiet):
    if quiet:
        return lambda n: None
    from tqdm import tqdm  # noqa: PLC0415

    b = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)
    return b.update


def _amed_settings(args, model) -> dict:
    lo, hi = _sigma_range(model)  # unset --sigma-min/--sigma-max: the model's range
    kw = dict(schedule=args.schedule, rho=args.rho, afs=args.afs, scale_dir=args.scale_dir, scale_time=args.scale_time,
              teacher=args.teacher, M=args.M, sigma_min=lo if args.sigma_min is None else args.sigma_min,
              sigma_max=hi if args.sigma_max is None else args.sigma_max)
    if args.opt:
        kw["solver_options"] = _options(args.opt)
    if args.teacher_opt:
        kw["teacher_options"] = _options(args.teacher_opt)
    return {k: v for k, v in kw.items() if v is not None}


def cmd_gits(args) -> int:
    from .gits import search_schedule  # noqa: PLC0415

    device = _device(args.device)
    model = _maybe_compile(_load_model(args, device), args.compile, device, _text_to_image(args))
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    rec = search_schedule(model, _shape(model), solver=args.solver, nfe=args.nfe, afs=args.afs,
                          amed=True if args.amed else None, solver_options=_options(args.opt),
                          num_fine=args.num_fine, num_warmup=args.warmup, coeff=args.coeff, metric=args.metric,
                          jump=args.jump, teacher=args.teacher, teacher_options=_options(args.teacher_opt) or None,
                          fine_schedule=args.fine_schedule, rho=args.rho, sigma_min=args.sigma_min,
                          sigma_max=args.sigma_max, seed=args.seed, batch=args.batch, device=device, log=log)
    path = rec.save(args.out)
    kind = "AMED " if rec.amed else ""
    print(f"GITS grid for {kind}{rec.solver} NFE={rec.nfe} (afs={rec.afs}) on {rec.record['model']}: "
          f"{[round(t, 4) for t in rec.grid.tolist()]} in {rec.record['search']['wall_seconds']:.1f} s -> {path}")
    return 0


def cmd_teacher(args) -> int:
    from .training import build_teacher_cache, default_config  # noqa: PLC0415

    device = _device(args.device)
    model = _maybe_compile(_load_model(args, device), args.compile, device, _text_to_image(args))
    cfg = default_config(args.solver, args.nfe, **_amed_settings(args, model))
    t0 = time.perf_counter()
    bar = _bar(args.trajectories, f"teacher {cfg.teacher} M={cfg.M}", args.quiet)
    cache = build_teacher_cache(model, args.out, cfg, _shape(model), args.trajectories, seed=args.seed,
                                batch=args.batch, dtype=args.cache_dtype, device=device, progress=bar)
    print(f"teacher cache {cfg.teacher} (M={cfg.M}, {cfg.num_points} student points, {cache.meta['num_seeds']} "
          f"trajectories, {cache.meta['dtype']}) in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def cmd_train(args) -> int:
    from . import train_predictor  # noqa: PLC0415
    from .cache import TeacherCache  # noqa: PLC0415

    device = _device(args.device)
    model = _load_model(args, device)
    cache = None
    if args.cache:
        meta_path = Path(args.cache) / "meta.json"
        if not meta_path.exists():
            raise ValueError(f"no teacher cache at {args.cache} (run `amed teacher` first)")
        meta = json.loads(meta_path.read_text())
        meta.pop("shard_sha256", None)
        cache = TeacherCache(args.cache, meta)  # checked against this run's settings in train_predictor
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    pred = train_predictor(model, _shape(model), solver=args.solver, nfe=args.nfe, num_trajectories=args.trajectories,
                           batch=args.batch, lr=args.lr, seed=args.seed, cache=cache, device=device,
                           progress=not args.quiet, log=log, **_amed_settings(args, model))
    path = pred.save(args.out)
    c = pred.config
    print(f"trained {c.solver} NFE={c.nfe} on {c.model} ({c.num_trajectories} trajectories, teacher {c.teacher} "
          f"M={c.M}) in {c.train_seconds:.1f} s, final loss {c.final_loss:.5g} -> {path}")
    return 0


def _npz_images_count(path) -> int:
    """Number of images in a sample .npz, read from the array header (the pixels are not loaded)."""
    import zipfile  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    try:
        with zipfile.ZipFile(path) as z:
            if "images.npy" not in z.namelist():
                keys = sorted(n[:-4] for n in z.namelist() if n.endswith(".npy"))
                raise ValueError(f"{path} holds no 'images' array (keys {keys}); give `amed sample` outputs")
            with z.open("images.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                return int(read(f)[0][0])
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a sample .npz (not a zip archive)") from None


def _metric_features(images, metric: str):
    if metric == "fd-digits":
        import torch  # noqa: PLC0415

        from .features import digit_features  # noqa: PLC0415

        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return digit_features(x).numpy()
    from .fid import inception_features  # noqa: PLC0415

    return inception_features(images)  # uint8 at native resolution (e.g. 512x512): Inception resizes inside


def cmd_fid(args) -> int:
    import numpy as np  # noqa: PLC0415

    from .fid import INCEPTION_DIM, FeatureMoments, frechet_distance, load_stats  # noqa: PLC0415

    counts = [_npz_images_count(p) for p in args.images]
    total = sum(counts) if args.num is None else args.num
    if sum(counts) < total:
        raise ValueError(f"need {args.num} images for the metric, the inputs hold {sum(counts)}")
    mu_r, sigma_r = load_stats(args.ref)

    def mismatch(dim):
        return ValueError(f"reference statistics {str(args.ref)!r} are {mu_r.shape[0]}-d but --metric {args.metric} "
                          f"gives {dim}-d features: build the reference with the same metric")

    if args.metric == "inception" and mu_r.shape[0] != INCEPTION_DIM:
        raise mismatch(INCEPTION_DIM)
    # One shard in memory at a time (30k SD images at 512x512 would be 24 GB); float64 moments of the features.
    moments, left = FeatureMoments(), total
    for p in args.images:
        if left == 0:
            break
        with np.load(p) as f:
            images = f["images"][:left]
        if len(images):
            moments.add(_metric_features(images, args.metric))
        left -= len(images)
    mu, sigma = moments.stats()
    if mu.shape != mu_r.shape:
        raise mismatch(mu.shape[0])
    value = frechet_distance(mu, sigma, mu_r, sigma_r)
    rec = {"metric": args.metric, "value": value, "num_images": int(moments.n), "ref": str(args.ref)}
    if args.out:
        from .predictor import atomic_write_bytes  # noqa: PLC0415

        atomic_write_bytes(args.out, (json.dumps(rec) + "\n").encode())
    print(f"{args.metric} = {value:.4f} over {moments.n} images (ref {args.ref})")
    return 0


def cmd_fid_ref(args) -> int:
    from .fid import feature_stats, save_stats  # noqa: PLC0415
    from .features import digit_features  # noqa: PLC0415
    from .models.train_embedded import load_dataset  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from .models.base import to_uint8  # noqa: PLC0415

    if args.data == "coco-val2014":
        import numpy as np  # noqa: PLC0415

        from .fid import coco_reference_stats  # noqa: PLC0415

        out = coco_reference_stats(args.out, args.resolution, images=args.coco_images, captions=args.captions,
                                   progress=_bar(None, "coco-val2014", args.quiet))
        with np.load(out) as z:
            count = int(z["count"])
        print(f"reference statistics of coco-val2014 ({count} images, {args.resolution}x{args.resolution}, "
              f"inception features) -> {out}")
        return 0
    if args.data != "digits":
        raise ValueError(f"reference statistics exist for 'digits' (fd-digits) and 'coco-val2014' (inception), "
                         f"got {args.data!r}")
    # Quantise the data exactly as samples are (uint8), so both sides see the same pixel grid.
    data = to_uint8(torch.from_numpy(load_dataset(args.data)))
    x = data.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    mu, sigma = feature_stats(digit_features(x).numpy())
    save_stats(args.out, mu, sigma)
    print(f"reference statistics of {args.data} ({len(data)} images, fd-digits features) -> {args.out}")
    return 0


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
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


def _compile_arg(p):
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off", "reduce-overhead"],
                   help="torch.compile the network: auto = on for CUDA (eager if it fails; not text-to-image "
                        "models), off for CPU (1.2x there, after a ~40 s compile); reduce-overhead adds CUDA graphs")


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
    p.add_argument("--predictor", default=None, help="trained AMED predictor (.safetensors/.json); settings come from it")
    p.add_argument("--seeds", default="0-63", help="e.g. 0-999 or 0,5,7-9")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", required=True, help="output .npz (uint8 images NHWC + seeds)")
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
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (text-to-image)")
    p.add_argument("--prompts", default=None, metavar="FILE", help="captions CSV (text-to-image models)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.add_argument("--out", required=True, help="output grid file (.json)")
    _compile_arg(p)
    p.set_defaults(fn=cmd_gits)
    p = sub.add_parser("teacher", help="build (or resume) a teacher-trajectory cache")
    _solver_args(p, amed=True)
    _amed_args(p)
    p.add_argument("--cache-dtype", default="float32", choices=["float16", "float32"])
    _compile_arg(p)
    p.add_argument("--out", required=True, help="cache directory")
    p.set_defaults(fn=cmd_teacher)
    p = sub.add_parser("train", help="train an AMED predictor (Algorithm 1)")
    _solver_args(p, amed=True)
    _amed_args(p)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--cache", default=None, help="teacher cache directory (default: teachers on the fly)")
    p.add_argument("--out", required=True, help="output path stem: writes <out>.safetensors and <out>.json")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("fid", help="Frechet distance of sampled images against reference statistics")
    p.add_argument("--images", nargs="+", required=True, help="sample .npz files")
    p.add_argument("--ref", required=True, help="reference statistics .npz (mu, sigma)")
    p.add_argument("--metric", default="fd-digits", choices=["fd-digits", "inception"])
    p.add_argument("--num", type=int, default=None, help="use exactly this many images (error if fewer)")
    p.add_argument("--out", default=None, help="write the result as JSON")
    p.set_defaults(fn=cmd_fid)
    p = sub.add_parser("fid-ref", help="reference statistics: the embedded data set, or MS-COCO val2014 (Table 3)")
    p.add_argument("--data", default="digits", help="digits (fd-digits) or coco-val2014 (inception)")
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
    for name in ("nfe", "batch", "trajectories", "num", "warmup", "num_fine"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            print(f"amed {args.cmd}: --{name} must be >= 1, got {v}", file=sys.stderr)
            return 2
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"amed {args.cmd}: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # missing optional parts (Inception weights, downloads): one line, not a traceback
        name = type(e).__name__
        if name not in ("InceptionUnavailable", "DownloadError", "CompileMismatch", "CompileFailed"):
            raise
        hint = " (--compile off runs the network eagerly)" if name == "CompileFailed" else ""
        print(f"amed {args.cmd}: {e}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"amed {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
