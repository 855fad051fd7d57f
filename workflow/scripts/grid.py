"""The experiment grid of the config: semantic checks the JSON schema cannot express, and CLI arguments.

Imported by the Snakefile at parse time (so a wrong config fails before any job runs). The solver,
schedule and plugin-base keys come from the package registries (`amed.SOLVERS`, `amed.SCHEDULES`,
`amed.plugin.PLUGIN_BASES`), so the workflow and the package never drift apart.
"""

from __future__ import annotations

RESERVED_DATASETS = {"logs", "benchmarks"}


def registries():
    import amed  # noqa: PLC0415
    from amed.plugin import PLUGIN_BASES  # noqa: PLC0415

    return dict(amed.SOLVERS), sorted(amed.SCHEDULES), tuple(PLUGIN_BASES)


def evals_per_step(m: dict) -> int:
    """AMED-Solver and AMED-Plugin spend 2 NFE per step (one extra mid-point call); baselines their solver's."""
    solvers, _, _ = registries()
    return 2 if m["kind"] != "baseline" else solvers[m["solver"]].evals_per_step


def afs_for(m: dict, nfe: int) -> bool:
    """AFS: 'auto' = on exactly when it makes the NFE reachable (odd NFE for 2-NFE-per-step methods)."""
    if m["afs"] == "auto":
        return evals_per_step(m) == 2 and nfe % 2 == 1
    return bool(m["afs"])


def check(config: dict) -> None:
    """Raise ValueError naming the key and the allowed values for anything the schema cannot check."""
    solvers, schedules, bases = registries()
    for ds, d in config["datasets"].items():
        if ds in RESERVED_DATASETS:
            raise ValueError(f"datasets.{ds}: the name collides with results/{ds}/; reserved: {sorted(RESERVED_DATASETS)}")
        if "teacher" in d["methods"]:
            raise ValueError(f"datasets.{ds}.methods.teacher: 'teacher' is reserved (results/{ds}/teacher/ holds caches)")
        for name, m in d["methods"].items():
            key = f"datasets.{ds}.methods.{name}"
            allowed = {"baseline": sorted(solvers), "amed_solver": ["amed"], "amed_plugin": list(bases)}[m["kind"]]
            if m["solver"] not in allowed:
                raise ValueError(f"{key}.solver: {m['solver']!r} is not allowed for kind {m['kind']!r}; "
                                 f"allowed values: {allowed}")
            if m["schedule"] not in schedules:
                raise ValueError(f"{key}.schedule: unknown schedule {m['schedule']!r}; allowed values: {schedules}")
            if m["kind"] != "baseline":
                t = m["train"]["teacher"]
                if t not in solvers:
                    raise ValueError(f"{key}.train.teacher: unknown solver {t!r}; allowed values: {sorted(solvers)}")
            for nfe in d["nfe"]:
                e, afs = evals_per_step(m), afs_for(m, nfe)
                if (nfe + afs) % e or nfe + afs < e:
                    ok = [n for n in range(1, 12) if (n + afs) % e == 0 and n + afs >= e]
                    raise ValueError(f"{key}: NFE {nfe} is unreachable ({e} NFE per step, afs={afs}); "
                                     f"reachable NFE with afs={afs}: {ok}... (datasets.{ds}.nfe or {key}.afs)")


def grid(config: dict):
    """Every (dataset, method, nfe) cell of Table 2, in config order."""
    return [(ds, name, nfe) for ds, d in config["datasets"].items() for name in d["methods"] for nfe in d["nfe"]]


def shards(d: dict) -> list[str]:
    """Seed shards of one cell, named by their first seed (EDM's layout): 000000, 000256, ..."""
    return [f"{s:06d}" for s in range(0, d["num_samples"], d["shard_size"])]


def shard_seeds(d: dict, shard: str) -> str:
    first = int(shard)
    return f"{first}-{min(first + d['shard_size'], d['num_samples']) - 1}"


def _opts(opts: dict) -> list[str]:
    return [f"--opt {k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(opts.items())]


def solver_args(m: dict, nfe: int) -> str:
    """`amed sample/teacher/train` settings of one method at one NFE."""
    a = [f"--solver {m['solver']}", f"--nfe {nfe}", f"--schedule {m['schedule']}",
         "--afs" if afs_for(m, nfe) else "--no-afs"]
    if m["rho"] is not None:
        a.append(f"--rho {m['rho']}")
    return " ".join(a + _opts(m["options"]))


def train_args(m: dict) -> str:
    t = m["train"]
    a = [f"--teacher {t['teacher']}", f"--M {t['M']}", f"--trajectories {t['trajectories']}",
         f"--batch {t['batch']}", f"--seed {t['seed']}"]
    a += [f"--teacher-opt {k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(t["teacher_options"].items())]
    return " ".join(a)


def fit_args(m: dict) -> str:
    """The settings only `amed train` takes (scale heads, learning rate)."""
    t = m["train"]
    return f"--scale-dir {t['scale_dir']} --scale-time {t['scale_time']} --lr {t['lr']}"


# ---- Input/params functions of the rule files, one block per stage (snakemake --lint wants .smk files free
# ---- of function definitions; they take the validated config and return what the rule needs).
def teacher_params(config, w) -> str:
    m = config["datasets"][w.dataset]["methods"][w.method]
    return f"{solver_args(m, int(w.nfe))} {train_args(m)} --cache-dtype {m['train']['cache_dtype']}"


def train_params(config, w) -> str:
    m = config["datasets"][w.dataset]["methods"][w.method]
    return f"{solver_args(m, int(w.nfe))} {train_args(m)} {fit_args(m)}"


def sample_input(config, w) -> dict:
    out = {"model": f"results/{w.dataset}/model.json"}
    if config["datasets"][w.dataset]["methods"][w.method]["kind"] != "baseline":
        out["predictor"] = f"results/{w.dataset}/{w.method}/nfe{w.nfe}/predictor.json"
    return out


def sample_params(config, w, input) -> str:
    m = config["datasets"][w.dataset]["methods"][w.method]
    if m["kind"] != "baseline":  # every solver setting comes from the predictor record
        return f"--predictor {input.predictor}"
    return solver_args(m, int(w.nfe))


def fid_shards(config, w) -> list[str]:
    d = config["datasets"][w.dataset]
    return [f"results/{w.dataset}/{w.method}/nfe{w.nfe}/samples/{s}.npz" for s in shards(d)]


def all_fid(config) -> list[str]:
    return [f"results/{ds}/{m}/nfe{n}/fid.json" for ds, m, n in grid(config)]


def model_identity(name: str) -> str:
    """What the model job depends on: the sha256 of a shipped embedded model (so a retrained asset reruns the
    grid), else the registered name (downloads are verified inside the job)."""
    import json  # noqa: PLC0415

    from amed.models.embedded import EMBEDDED_MODELS, asset_dir  # noqa: PLC0415

    if name in EMBEDDED_MODELS:
        record = asset_dir() / EMBEDDED_MODELS[name].record_file
        if record.is_file():
            return json.loads(record.read_text()).get("sha256", name)
    return name
