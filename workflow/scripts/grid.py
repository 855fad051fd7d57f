"""The experiment grid of the config: semantic checks the JSON schema cannot express, and CLI arguments.

Imported by the Snakefile at parse time (so a wrong config fails before any job runs). The solver,
schedule and plugin-base keys come from the package registries (`amed.SOLVERS`, `amed.SCHEDULES`,
`amed.plugin.PLUGIN_BASES`), so the workflow and the package never drift apart.
"""

from __future__ import annotations

import copy
import json

RESERVED_DATASETS = {"logs", "benchmarks"}
PAPER_SCHEDULE = {"time_uniform": "uniform"}  # Table 5's row names for schedule keys; others keep their key


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
    check_tables(config)
    resolved = methods(config)
    for ds, d in config["datasets"].items():
        if ds in RESERVED_DATASETS:
            raise ValueError(f"datasets.{ds}: the name collides with results/{ds}/; reserved: {sorted(RESERVED_DATASETS)}")
        if "teacher" in d["methods"]:
            raise ValueError(f"datasets.{ds}.methods.teacher: 'teacher' is reserved (results/{ds}/teacher/ holds caches)")
        for name, m in resolved[ds].items():
            key = f"datasets.{ds}.methods.{name}" if name in d["methods"] else f"{m['origin']} (cell {ds}/{name})"
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
            for nfe in m["nfe"]:
                e, afs = evals_per_step(m), afs_for(m, nfe)
                if (nfe + afs) % e or nfe + afs < e:
                    ok = [n for n in range(1, 12) if (n + afs) % e == 0 and n + afs >= e]
                    raise ValueError(f"{key}: NFE {nfe} is unreachable ({e} NFE per step, afs={afs}); "
                                     f"reachable NFE with afs={afs}: {ok}... (datasets.{ds}.nfe or {key}.afs)")


def grid(config: dict):
    """Every (dataset, method, nfe) cell of Table 2, in config order (datasets with table2: false left out)."""
    return [(ds, name, nfe) for ds, d in config["datasets"].items() if d["table2"]
            for name in d["methods"] for nfe in d["nfe"]]


# ---- Tables 3-5: the ablations are generated method keys, "{base}.{axis}-{value}" (e.g.
# ---- amed_plugin.teacher-dpm2, dpmpp3m.schedule-uniform), so the five stage rules serve them unchanged.
def check_tables(config: dict) -> None:
    """The table3/table4/table5/figures sections name datasets and methods that exist."""
    ds_all = config["datasets"]
    for t in ("table3", "table4", "table5"):
        ds = config[t]["dataset"]
        if ds is not None and ds not in ds_all:
            raise ValueError(f"{t}.dataset: unknown dataset {ds!r}; allowed values: {sorted(ds_all)}")
    t4 = config["table4"]
    if t4["dataset"] is not None:
        for b in t4["methods"]:
            m = ds_all[t4["dataset"]]["methods"].get(b)
            if m is None or m["kind"] == "baseline":
                amed_keys = [k for k, v in ds_all[t4["dataset"]]["methods"].items() if v["kind"] != "baseline"]
                raise ValueError(f"table4.methods: {b!r} is not an AMED method of datasets.{t4['dataset']}; "
                                 f"allowed values: {amed_keys}")
    f = config["figures"]
    if f["dataset"] is not None:
        if f["dataset"] not in ds_all:
            raise ValueError(f"figures.dataset: unknown dataset {f['dataset']!r}; allowed values: {sorted(ds_all)}")
        d = ds_all[f["dataset"]]
        m = d["methods"].get(f["fig7"]["method"])
        bad = m is None or m["kind"] != "amed_solver" or f["fig7"]["nfe"] not in d["nfe"]
        if f["fig7"]["method"] is not None and bad:
            raise ValueError(f"figures.fig7: needs an amed_solver method of datasets.{f['dataset']} at one of its NFE "
                             f"{d['nfe']}, got method {f['fig7']['method']!r} at NFE {f['fig7']['nfe']}")


def _settings(m: dict) -> str:
    """What makes two cells the same experiment (everything but the display label and provenance)."""
    return json.dumps({k: v for k, v in m.items() if k not in ("label", "origin", "paper_name", "nfe")}, sort_keys=True)


def _variant(base: dict, d: dict, table: dict, origin: str, paper_name: str, label: str) -> dict:
    m = copy.deepcopy(base)
    m.update(origin=origin, paper_name=paper_name, label=label, nfe=list(table["nfe"]),
             num_samples=table["num_samples"] or d["num_samples"])
    if m["kind"] != "baseline" and table["trajectories"]:
        m["train"]["trajectories"] = table["trajectories"]
    return m


def table_cells(config: dict, table: str) -> list[tuple[str, str, str, dict]]:
    """Rows of Table 4 / Table 5 as (dataset, paper-style row name, variant key, method settings)."""
    t = config[table]
    ds = t["dataset"]
    if ds is None:
        return []
    d, out = config["datasets"][ds], []
    if table == "table4":  # teacher ablation: each AMED method of Table 2 with each teacher
        for b in t["methods"]:
            for teacher, opts in t["teachers"].items():
                m = copy.deepcopy(d["methods"][b])
                m["train"].update(teacher=teacher, teacher_options=dict(opts))
                row = f"{b}[teacher={teacher}]"
                out.append((ds, row, f"{b}.teacher-{teacher}",
                            _variant(m, d, t, f"table4.methods.{b}", row, f"{m['label'] or b}, teacher {teacher}")))
    else:  # table5: schedule ablation of the listed methods
        for b, spec in t["methods"].items():
            for s in t["schedules"]:
                name = PAPER_SCHEDULE.get(s["schedule"], s["schedule"])
                m = copy.deepcopy(spec)
                m.update(schedule=s["schedule"], rho=s["rho"])
                row = f"{b}[schedule={name}]"
                out.append((ds, row, f"{b}.schedule-{name}",
                            _variant(m, d, t, f"table5.methods.{b}", row, f"{spec['label'] or b}, {s['label'] or name}")))
    return out


def methods(config: dict) -> dict:
    """{dataset: {method key: settings}}: the config's methods, then the Table 4/5 variants. A variant whose
    settings equal an earlier cell's (e.g. Table 4's Heun-teacher AMED-Solver = Table 2's) is not added: its
    rows point at that cell (`cell_key`), so nothing is computed twice."""
    out = {}
    for ds, d in config["datasets"].items():
        out[ds] = {k: dict(copy.deepcopy(m), origin=f"datasets.{ds}.methods.{k}", nfe=list(d["nfe"]),
                           num_samples=d["num_samples"]) for k, m in d["methods"].items()}
    for table in ("table4", "table5"):
        for ds, _, key, m in table_cells(config, table):
            if cell_key(out, ds, m) is None:
                out[ds][key] = m
            else:  # same experiment: the variant's NFE still need to exist there
                k = cell_key(out, ds, m)
                out[ds][k]["nfe"] = sorted(set(out[ds][k]["nfe"]) | set(m["nfe"]))
    return out


def cell_key(resolved: dict, ds: str, m: dict) -> str | None:
    """The key of the first cell of ``ds`` with exactly the settings of ``m``, or None."""
    s = _settings(m)
    return next((k for k, v in resolved[ds].items() if _settings(v) == s), None)


def table_fid(config: dict, table: str) -> tuple[list[str], list[list]]:
    """Table 3/4/5: its fid.json inputs and the matching rows (dataset, method, nfe, reported nfe, cell)."""
    resolved = methods(config)
    if table == "table3":
        ds = config["table3"]["dataset"]
        if ds is None:
            return [], []
        d = config["datasets"][ds]
        per_eval = 2 if d["guidance"] not in (None, 1, 1.0) else 1  # CFG: one step = 2 NFE (Table 3)
        cells = [(ds, k, k) for k in d["methods"]]
        nfes = {k: d["nfe"] for k in d["methods"]}
    else:
        cells = [(ds, row, cell_key(resolved, ds, m)) for ds, row, _, m in table_cells(config, table)]
        nfes = {row: config[table]["nfe"] for _, row, _ in cells}
        per_eval = 1
    files, rows = [], []
    for ds, row, key in cells:
        for nfe in nfes[row]:
            files.append(f"results/{ds}/{key}/nfe{nfe}/fid.json")
            rows.append([ds, row, nfe, nfe * per_eval, key])
    return files, rows


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
def method(config, w) -> dict:
    return methods(config)[w.dataset][w.method]


def compile_flag(config) -> str:
    """`--compile X` for the config's compile key, or nothing for auto (the CLI's default: jobs of an existing
    results/ tree keep their command line). YAML reads bare on/off as booleans."""
    c = config["compile"]
    c = {True: "on", False: "off"}.get(c, c) if isinstance(c, bool) else str(c)
    return "" if c == "auto" else f"--compile {c}"


def model_args(d: dict, input=None) -> str:
    """Text-to-image datasets (Table 3): classifier-free guidance and prompt i <-> seed i."""
    a = [f"--guidance {d['guidance']}"] if d["guidance"] is not None else []
    return " ".join(a + ([f"--prompts {input.prompts}"] if d["prompts"] is not None and input is not None else []))


def _teacher_signature(m: dict, nfe: int) -> str:
    """What a teacher cache holds (amed.cache.cache_meta): teacher, its options, the student grid, M, seeds."""
    t = m["train"]
    return json.dumps([t["teacher"], t["teacher_options"], t["M"], t["trajectories"], t["batch"], t["seed"],
                       t["cache_dtype"], m["schedule"], m["rho"], afs_for(m, nfe), evals_per_step(m)], sort_keys=True)


def teacher_input(config, w) -> dict:
    """The teacher cache of a trained cell: the one of the first method (config order, Table 2 first) with the
    same teacher settings, so Tables 2, 4 and 5 share caches wherever the settings coincide."""
    resolved = methods(config)[w.dataset]
    sig = _teacher_signature(resolved[w.method], int(w.nfe))
    owner = next(k for k, m in resolved.items() if m["kind"] != "baseline" and int(w.nfe) in m["nfe"]
                 and _teacher_signature(m, int(w.nfe)) == sig)
    return {"teacher": f"results/{w.dataset}/teacher/{owner}/nfe{w.nfe}/teacher.json", **prompts_input(config, w)}


def prompts_input(config, w) -> dict:
    return {"prompts": f"results/{w.dataset}/prompts.csv"} if config["datasets"][w.dataset]["prompts"] else {}


def fid_ref_input(config, w) -> dict:
    """coco-val2014 takes the images named by the prompts' image_id column; a local .npz ref is tracked as input."""
    ref = config["datasets"][w.dataset]["ref"]
    if ref == "coco-val2014":
        return prompts_input(config, w)
    if ref.endswith(".npz") and "://" not in ref:
        return {"ref": ref}
    return {}


def teacher_params(config, w, input=None) -> str:
    m = method(config, w)
    d = config["datasets"][w.dataset]
    a = f"{solver_args(m, int(w.nfe))} {train_args(m)} --cache-dtype {m['train']['cache_dtype']}"
    return f"{a} {model_args(d, input)}".rstrip()


def train_params(config, w, input=None) -> str:
    m = method(config, w)
    return f"{solver_args(m, int(w.nfe))} {train_args(m)} {fit_args(m)} {model_args(config['datasets'][w.dataset], input)}".rstrip()


def sample_input(config, w) -> dict:
    out = {"model": f"results/{w.dataset}/model.json", **prompts_input(config, w)}
    if method(config, w)["kind"] != "baseline":
        out["predictor"] = f"results/{w.dataset}/{w.method}/nfe{w.nfe}/predictor.json"
    return out


def sample_params(config, w, input) -> str:
    m = method(config, w)
    extra = model_args(config["datasets"][w.dataset], input)
    if m["kind"] != "baseline":  # every solver setting comes from the predictor record
        return f"--predictor {input.predictor} {extra}".rstrip()
    return f"{solver_args(m, int(w.nfe))} {extra}".rstrip()


def fid_shards(config, w) -> list[str]:
    d = dict(config["datasets"][w.dataset], num_samples=method(config, w)["num_samples"])
    return [f"results/{w.dataset}/{w.method}/nfe{w.nfe}/samples/{s}.npz" for s in shards(d)]


def fid_num(config, w) -> int:
    return method(config, w)["num_samples"]


def all_fid(config) -> list[str]:
    return [f"results/{ds}/{m}/nfe{n}/fid.json" for ds, m, n in grid(config)]


def sample_grids(config) -> list[str]:
    """One sample grid per Table 2 cell (the first seeds of shard 0)."""
    return [f"results/{ds}/{m}/nfe{n}/grid.png" for ds, m, n in grid(config)]


def paper_targets(config) -> list[str]:
    """Everything `rule paper` builds: Tables 3-5 where configured, the figures, the grids, the full audit."""
    out = [f"results/{t}.{ext}" for t in ("table3", "table4", "table5") if config[t]["dataset"] is not None
           for ext in ("csv", "md")]
    if config["figures"]["dataset"] is not None:
        figs = ("fig3", "fig4", "fig5") + (("fig7",) if config["figures"]["fig7"]["method"] is not None else ())
        out += [f"results/{f}.{ext}" for f in figs for ext in ("png", "csv")]
    return out + sample_grids(config) + ["results/audit_paper.csv", "results/audit_paper.md"]


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


def figure_targets(config) -> list[str]:
    """The figures and sample grids of `paper_targets` (the `figures` target)."""
    import os  # noqa: PLC0415

    return [p for p in paper_targets(config) if os.path.basename(p).startswith("fig") or p.endswith("grid.png")]
