"""The workflow's experiments: the config's semantic checks, its expansion into cells, the rules' input functions
and the targets of each stage. What a run will cost (jobs, network calls, GPU-hours, disk) is `costs.py`.

Imported by the Snakefile at parse time (so a wrong config fails before any job runs) and by workflow scripts
(plan.py) and benchmarks. `methods(config)` expands the config once (Table 2's methods and the generated Table 4/5
and `beyond` variants) and every input function reads that one expansion. The solver, schedule and plugin-base
keys come from the package registries (`amed.SOLVERS`, `amed.SCHEDULES`, `amed.plugin.PLUGIN_BASES`), and the NFE
reachability rule from `amed.solvers`, so the workflow and the package never drift apart.
"""

from __future__ import annotations

import copy
import json
import os
import shlex

RESERVED_DATASETS = {"logs", "benchmarks"}
PAPER_SCHEDULE = {"time_uniform": "uniform"}  # Table 5's row names for schedule keys; others keep their key


def registries():
    """The package's solver registry, schedule keys and AMED-Plugin bases (imported on first use)."""
    import amed  # noqa: PLC0415
    from amed.plugin import PLUGIN_BASES  # noqa: PLC0415

    return dict(amed.SOLVERS), sorted(amed.SCHEDULES), tuple(PLUGIN_BASES)


def evals_per_step(m: dict) -> int:
    """AMED-Solver and AMED-Plugin spend 2 NFE per step (one extra mid-point call); baselines their solver's."""
    solvers, _, _ = registries()
    return 2 if m["kind"] != "baseline" else solvers[m["solver"]].evals_per_step


def afs_for(m: dict, nfe: int) -> bool:
    """AFS: 'auto' = on exactly when it makes the NFE reachable (odd NFE for 2-NFE-per-step methods)."""
    from amed.solvers import reachable_nfe  # noqa: PLC0415

    if m["afs"] == "auto":
        e = evals_per_step(m)
        return not reachable_nfe(e, False, nfe) and reachable_nfe(e, True, nfe)
    return bool(m["afs"])


def normalise_config(config: dict) -> None:
    """Before the schema: the NFE keys of a method's `imported` map as strings (YAML reads `{5: path}` as int 5)."""
    for d in (config.get("datasets") or {}).values():
        for m in ((d or {}).get("methods") or {}).values():
            if isinstance(m, dict) and isinstance(m.get("imported"), dict):
                m["imported"] = {str(k): v for k, v in m["imported"].items()}


def check(config: dict) -> None:
    """Raise ValueError naming the key and the allowed values for anything the schema cannot check."""
    from amed.solvers import nfe_options, reachable_nfe  # noqa: PLC0415

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
            if m["schedule"] not in schedules and m["schedule"] != "gits":
                raise ValueError(f"{key}.schedule: unknown schedule {m['schedule']!r}; allowed values: "
                                 f"{schedules + ['gits']}")
            if m["kind"] != "baseline":
                t = m["train"]["teacher"]
                if t not in solvers:
                    raise ValueError(f"{key}.train.teacher: unknown solver {t!r}; allowed values: {sorted(solvers)}")
            _check_values(key, m)
            if m.get("imported"):
                if m["kind"] == "baseline":
                    raise ValueError(f"{key}.imported: only AMED methods take predictors, this one is a baseline")
                if m["train"]["seeds"] != 1:
                    raise ValueError(f"{key}.imported: an imported predictor is one run; set train.seeds to 1, got "
                                     f"{m['train']['seeds']}")
                extra = sorted(int(n) for n in m["imported"] if int(n) not in m["nfe"])
                if extra:
                    raise ValueError(f"{key}.imported: NFE {extra} are not among this method's NFE {m['nfe']}")
            for nfe in m["nfe"]:
                e, afs = evals_per_step(m), afs_for(m, nfe)
                if not reachable_nfe(e, afs, nfe):
                    ok = nfe_options(e, afs, range(1, 12))
                    raise ValueError(f"{key}: NFE {nfe} is unreachable ({e} NFE per step, afs={afs}); "
                                     f"reachable NFE with afs={afs}: {ok}... (datasets.{ds}.nfe or {key}.afs)")


def _check_values(key: str, m: dict) -> None:
    """The package's own checks of what the schema cannot bound: the schedule's rho, the solver's and the teacher's
    options (max_order ranges, variants, ...): the same code a job would run, before any job runs."""
    import math  # noqa: PLC0415

    import amed  # noqa: PLC0415

    if m["rho"] is not None:
        if not (isinstance(m["rho"], (int, float)) and math.isfinite(m["rho"]) and m["rho"] > 0):
            raise ValueError(f"{key}.rho: must be a positive finite number (or null), got {m['rho']!r}")
    base = m["solver"] if m["solver"] != "amed" else None
    try:
        if base is not None:
            amed.make_solver(base, **m["options"])
        if m["kind"] != "baseline":
            amed.make_solver(m["train"]["teacher"], **m["train"]["teacher_options"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: {e}") from None


def table2_cells(config: dict):
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
    b = config["beyond"]
    if b["dataset"] is not None:
        if b["dataset"] not in ds_all:
            raise ValueError(f"beyond.dataset: unknown dataset {b['dataset']!r}; allowed values: {sorted(ds_all)}")
        known = sorted(ds_all[b["dataset"]]["methods"]) + sorted(b["extra"])
        for k in b["methods"]:
            if k not in known:
                raise ValueError(f"beyond.methods: {k!r} is neither a method of datasets.{b['dataset']} nor of "
                                 f"beyond.extra; allowed values: {known}")
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
                m = _resolve_train(m)
                row = f"{b}[teacher={teacher}]"
                out.append((ds, row, f"{b}.teacher-{teacher}",
                            _variant(m, d, t, f"table4.methods.{b}", row, f"{m['label'] or b}, teacher {teacher}")))
    elif table == "beyond":  # each listed method on its own schedule and on a GITS grid searched for it
        for b in t["methods"]:
            base = d["methods"][b] if b in d["methods"] else t["extra"][b]
            for sched in ("own", "gits"):
                m = copy.deepcopy(base)
                if sched == "gits":
                    m.update(schedule="gits", rho=None)
                m = _resolve_train(m)
                name = m["schedule"]
                row = f"{b}[schedule={name}]"
                out.append((ds, row, b if sched == "own" and b in d["methods"] else f"{b}.schedule-{name}",
                            _variant(m, d, t, f"beyond.methods.{b}", row, f"{base['label'] or b}, {name}")))
    else:  # table5: schedule ablation of the listed methods
        for b, spec in t["methods"].items():
            for s in t["schedules"]:
                name = PAPER_SCHEDULE.get(s["schedule"], s["schedule"])
                m = copy.deepcopy(spec)
                m.update(schedule=s["schedule"], rho=s["rho"])
                m = _resolve_train(m)
                row = f"{b}[schedule={name}]"
                out.append((ds, row, f"{b}.schedule-{name}",
                            _variant(m, d, t, f"table5.methods.{b}", row, f"{spec['label'] or b}, {s['label'] or name}")))
    return out


PACKAGE_TRAIN_DEFAULTS = ("teacher", "M", "teacher_options", "scale_dir", "scale_time", "lr")


def package_train_defaults(m: dict) -> dict:
    """The package's defaults for the train keys the config leaves null (amed.training.default_config and
    train_predictor's lr): a default lives in one place, the package."""
    import inspect  # noqa: PLC0415

    from amed.training import default_config, train_predictor  # noqa: PLC0415

    over = {k: v for k, v in (("schedule", m["schedule"]), ("rho", m["rho"])) if v is not None}
    if m["options"]:
        over["solver_options"] = dict(m["options"])
    if m["train"].get("teacher") is not None:
        over["teacher"] = m["train"]["teacher"]
    cfg = default_config(m["solver"], 5, afs=True, **over)
    return {"teacher": cfg.teacher, "M": cfg.M, "teacher_options": dict(cfg.teacher_options),
            "scale_dir": cfg.scale_dir, "scale_time": cfg.scale_time,
            "lr": inspect.signature(train_predictor).parameters["lr"].default}


def _resolve_train(m: dict) -> dict:
    if m["kind"] != "baseline":
        defaults = package_train_defaults(m)
        m["train"] = {**m["train"], **{k: defaults[k] for k in PACKAGE_TRAIN_DEFAULTS if m["train"].get(k) is None}}
    return m


def methods(config: dict) -> dict:
    """{dataset: {method key: settings}}: the config's methods, then the Table 4/5 variants. A variant whose
    settings equal an earlier cell's (e.g. Table 4's Heun-teacher AMED-Solver = Table 2's) is not added: its
    rows point at that cell (`cell_key`), so nothing is computed twice. Train keys left null take the package's
    defaults. The result is computed once per config and reused (it is asked for by every input function)."""
    if _METHODS_CACHE.get("config") is config:  # the config is not mutated after validation
        return _METHODS_CACHE["value"]
    out = {}
    for ds, d in config["datasets"].items():
        out[ds] = {k: _resolve_train(dict(copy.deepcopy(m), origin=f"datasets.{ds}.methods.{k}", nfe=list(d["nfe"]),
                                          num_samples=d["num_samples"])) for k, m in d["methods"].items()}
    for table in ("table4", "table5", "beyond"):
        for ds, _, key, m in table_cells(config, table):
            if cell_key(out, ds, m) is None:
                out[ds][key] = m
            else:  # same experiment: the variant's NFE still need to exist there
                k = cell_key(out, ds, m)
                out[ds][k]["nfe"] = sorted(set(out[ds][k]["nfe"]) | set(m["nfe"]))
    _METHODS_CACHE.update(config=config, value=out)
    return out


_METHODS_CACHE: dict = {}


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
        m = resolved[ds][key]
        for nfe in nfes[row]:
            for seed in (train_seeds(m) or [None]):
                files.append(f"results/{ds}/{key}/nfe{nfe}/" + ("" if seed is None else f"seed{seed}/") + "fid.json")
                rows.append([ds, row, nfe, nfe * per_eval, key, seed])
    return files, rows


def shards(d: dict) -> list[str]:
    """Seed shards of one cell, named by their first seed (EDM's layout): 000000, 000256, ..."""
    return [f"{s:06d}" for s in range(0, d["num_samples"], d["shard_size"])]


def shard_seeds(config, w) -> str:
    """The seed range of one shard of a cell (ints only: it goes on a shell line)."""
    first, d = int(w.shard), config["datasets"][w.dataset]
    return f"{first}-{min(first + d['shard_size'], method(config, w)['num_samples']) - 1}"


def sample_counts(config, ds: str) -> list[int]:
    """Every number of evaluated samples a cell of ``ds`` uses (the noise floor is given for each)."""
    return sorted({m["num_samples"] for m in methods(config)[ds].values()})


def _flag(name: str, path) -> str:
    return f"{name} {shlex.quote(str(path))}" if path else ""


def prompts_flag(input) -> str:
    """`--prompts <file>` for text-to-image cells (the workflow's own path, quoted), else nothing."""
    return _flag("--prompts", input.get("prompts"))


def predictor_flag(input) -> str:
    return _flag("--predictor", input.get("predictor"))


def cache_flag(input) -> str:
    """`--cache <dir> --build-cache` next to the teacher manifest (a pruned cache is rebuilt first; a no-op when it is
    complete); nothing when the teacher is computed on the fly."""
    if not input.get("teacher"):
        return ""
    return _flag("--cache", os.path.join(os.path.dirname(input.teacher), "cache")) + " --build-cache"


# ---- Settings travel as data: each job reads its cell's settings file (amed.settings), never flag strings.
SETTINGS_TRAIN_KEYS = ("teacher", "M", "teacher_options", "scale_dir", "scale_time", "lr", "trajectories", "holdout",
                       "batch", "seed", "steps", "epochs", "objective", "recipe", "select", "validate_every",
                       "cache_dtype")


def compile_setting(config) -> str:
    """The config's compile key as `amed --compile` takes it (YAML reads bare on/off as booleans)."""
    c = config["compile"]
    return {True: "on", False: "off"}.get(c, c) if isinstance(c, bool) else str(c)


def cell_settings(config, ds: str, key: str, nfe: int) -> dict:
    """The settings file of one cell (dataset, method, NFE): everything its jobs need, as data."""
    m, d = methods(config)[ds][key], config["datasets"][ds]
    s = {"dataset": ds, "method": key, "label": m["label"] or key, "model": d["model"], "device": config["device"],
         "compile": compile_setting(config), "guidance": d["guidance"], "kind": m["kind"], "solver": m["solver"],
         "nfe": int(nfe), "schedule": m["schedule"], "rho": m["rho"], "afs": afs_for(m, int(nfe)),
         "options": dict(m["options"]), "batch": d["batch"], "metric": d["metric"], "num_samples": m["num_samples"],
         "uncertainty": dict(config["uncertainty"])}
    if m["kind"] != "baseline":
        s["train"] = {k: copy.deepcopy(m["train"][k]) for k in SETTINGS_TRAIN_KEYS if m["train"].get(k) is not None}
        if imported_snapshot(m, nfe):  # `amed train --settings` imports it instead of training
            s["imported"] = imported_snapshot(m, nfe)
    if m["schedule"] == "gits":  # the grid the gits stage searched for this cell
        s.update(schedule=gits_path(ds, gits_owner(config, ds, key, nfe), nfe), rho=None,
                 gits=dict(config["beyond"]["gits"]))
    return s


def gits_path(ds: str, key: str, nfe) -> str:
    return f"results/{ds}/gits/{key}/nfe{nfe}/grid.json"


def _gits_signature(m: dict, nfe: int) -> tuple:
    """What a GITS search depends on besides the model and the beyond.gits settings (amed gits --settings)."""
    return (m["kind"] != "baseline" and m["solver"] != "amed", m["solver"], repr(sorted(m["options"].items())),
            afs_for(m, nfe))


def gits_owner(config, ds: str, key: str, nfe) -> str:
    """The cell whose GITS grid this one uses: the first `gits` method of the dataset with the same search
    (e.g. AMED-Solver under another training recipe shares AMED-Solver's grid instead of searching it again)."""
    ms = methods(config)[ds]
    want = _gits_signature(ms[key], int(nfe))
    return next(k for k, m in ms.items() if m["schedule"] == "gits" and _gits_signature(m, int(nfe)) == want)


def gits_input(config, w) -> dict:
    """The GITS grid of a cell whose schedule is `gits` (its jobs depend on it), else nothing."""
    if method(config, w)["schedule"] != "gits":
        return {}
    return {"grid": gits_path(w.dataset, gits_owner(config, w.dataset, w.method, w.nfe), w.nfe)}


def settings_path(w) -> str:
    return f"results/{w.dataset}/{w.method}/nfe{w.nfe}/settings.json"


def train_seeds(m: dict) -> list[int]:
    """The training seeds of an AMED cell: 0 .. K-1 for train.seeds = K (the data seed is train.seed)."""
    return list(range(m["train"]["seeds"])) if m["kind"] != "baseline" else []


def runs(config, ds: str, key: str) -> list[str]:
    """The result directories of a cell below nfe{n}/: "" for a baseline, "seed{k}/" per training seed."""
    m = methods(config)[ds][key]
    return [""] if m["kind"] == "baseline" else [f"seed{k}/" for k in train_seeds(m)]


# ---- Input/params functions of the rule files, one block per stage (snakemake --lint wants .smk files free
# ---- of function definitions; they take the validated config and return what the rule needs).
def method(config, w) -> dict:
    return methods(config)[w.dataset][w.method]


def _teacher_signature(m: dict, nfe: int) -> str:
    """What a teacher cache holds (amed.cache.cache_meta): teacher, its options, the student grid, M, seeds."""
    t = m["train"]
    return json.dumps([t["teacher"], t["teacher_options"], t["M"], t["trajectories"], t["holdout"], t["batch"],
                       t["seed"], t["cache_dtype"], m["schedule"], m["rho"], afs_for(m, nfe), evals_per_step(m)],
                      sort_keys=True)  # teacher_options are resolved (methods()): no student setting leaks in


def imported_snapshot(m: dict, nfe) -> str | None:
    """The authors' snapshot a cell imports instead of training (method key `imported`), or None."""
    return (m.get("imported") or {}).get(str(int(nfe)))


def teacher_input(config, w) -> dict:
    """The teacher cache of a trained cell: the one of the first method (config order, Table 2 first) with the
    same teacher settings, so Tables 2, 4 and 5 share caches wherever the settings coincide. With
    train.teacher_cache false there is none: the training job computes its teacher on the fly; an imported
    cell has none either."""
    resolved = methods(config)[w.dataset]
    m = resolved[w.method]
    if not m["train"]["teacher_cache"] or imported_snapshot(m, w.nfe):
        return {}
    sig = _teacher_signature(m, int(w.nfe))
    owner = next(k for k, o in resolved.items() if o["kind"] != "baseline" and int(w.nfe) in o["nfe"]
                 and o["train"]["teacher_cache"] and not imported_snapshot(o, w.nfe)
                 and _teacher_signature(o, int(w.nfe)) == sig)
    return {"teacher": f"results/{w.dataset}/teacher/{owner}/nfe{w.nfe}/teacher.json"}


def train_input(config, w) -> dict:
    snap = imported_snapshot(method(config, w), w.nfe)
    return {"settings": settings_path(w), "model": f"results/{w.dataset}/model.json", **teacher_input(config, w),
            **prompts_input(config, w), **gits_input(config, w), **({"snapshot": snap} if snap else {})}


def teacher_rule_input(config, w) -> dict:
    return {"settings": settings_path(w), "model": f"results/{w.dataset}/model.json", **prompts_input(config, w),
            **gits_input(config, w)}


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


def sample_input(config, w) -> dict:
    """A sample job's inputs: the cell's settings, the model, and an AMED cell's predictor (record and weights)."""
    out = {"settings": settings_path(w), "model": f"results/{w.dataset}/model.json", **prompts_input(config, w),
           **gits_input(config, w)}
    if method(config, w)["kind"] != "baseline":
        stem = f"results/{w.dataset}/{w.method}/nfe{w.nfe}/seed{w.tseed}/predictor"
        out.update(predictor=f"{stem}.json", weights=f"{stem}.safetensors")
    return out


def run_dir(w) -> str:
    seed = getattr(w, "tseed", None)
    return f"results/{w.dataset}/{w.method}/nfe{w.nfe}/" + (f"seed{seed}/" if seed is not None else "")


def fid_input(config, w) -> dict:
    d = dict(config["datasets"][w.dataset], num_samples=method(config, w)["num_samples"])
    return {"shards": [f"{run_dir(w)}samples/{s}.npz" for s in shards(d)], "ref": f"results/{w.dataset}/fid_ref.npz",
            "settings": settings_path(w)}


def fid_seeds(config, w) -> str:
    return f"0-{method(config, w)['num_samples'] - 1}"


def cell_fids(config, ds: str, key: str, nfe: int) -> list[str]:
    """The fid.json of every run (training seed) of one cell."""
    return [f"results/{ds}/{key}/nfe{nfe}/{r}fid.json" for r in runs(config, ds, key)]


def all_fid(config) -> list[str]:
    return [f for ds, m, n in table2_cells(config) for f in cell_fids(config, ds, m, n)]


def table2_runs(config) -> list[list]:
    """(dataset, method, nfe, train_seed or None) of every fid.json in all_fid, in the same order."""
    out = []
    for ds, key, nfe in table2_cells(config):
        m = methods(config)[ds][key]
        out += [[ds, key, nfe, None]] if m["kind"] == "baseline" else [[ds, key, nfe, k] for k in train_seeds(m)]
    return out


def beyond_only(m: dict) -> bool:
    """A cell of the `beyond` target only (not part of `all` or `paper`)."""
    return str(m.get("origin", "")).startswith("beyond.")


def _trained_runs(config, scope: str = "paper"):
    """(dataset, method key, nfe, training seed) of every trained run (Table 2's only for scope "all")."""
    resolved = methods(config)
    for ds, d in config["datasets"].items():
        if scope == "all" and not d["table2"]:
            continue
        for key in (d["methods"] if scope == "all" else resolved[ds]):
            m = resolved[ds][key]
            if beyond_only(m):  # `snakemake beyond` is its own target
                continue
            for nfe in (d["nfe"] if scope == "all" else m["nfe"]):
                for k in train_seeds(m):
                    yield ds, key, nfe, k


def cache_consumers(config, w) -> list[str]:
    """The predictor records of every run trained from the teacher cache of ``w`` (its owner cell)."""
    mine = f"results/{w.dataset}/teacher/{w.method}/nfe{w.nfe}/teacher.json"
    out = []
    for ds, key, nfe, k in _trained_runs(config):
        v = type("W", (), {"dataset": ds, "method": key, "nfe": nfe})
        if ds == w.dataset and teacher_input(config, v).get("teacher") == mine:
            out.append(f"results/{ds}/{key}/nfe{nfe}/seed{k}/predictor.json")
    return out


def prune_targets(config, scope: str = "all") -> list[str]:
    """The prune markers of the caches whose cells say train.prune_cache (removed once all their runs trained)."""
    resolved = methods(config)
    out = []
    for ds, key, nfe, _ in _trained_runs(config, scope):
        m = resolved[ds][key]
        if m["train"]["prune_cache"] and m["train"]["teacher_cache"]:
            v = type("W", (), {"dataset": ds, "method": key, "nfe": nfe})
            marker = teacher_input(config, v)["teacher"].replace("teacher.json", "pruned.json")
            if marker not in out:
                out.append(marker)
    return out


def table2_records(config) -> list[str]:
    """The predictor record of every trained run of Table 2 (their validation curves and snapshot choices)."""
    return [f.replace("fid.json", "predictor.json") for f in all_fid(config) if "/seed" in f]


def training_curve_targets(config) -> list[str]:
    """The training-curve figure, when Table 2 has trained cells."""
    return (["results/training_curves.png"] if table2_records(config) else []) + prune_targets(config, "all")


def noise_floors(config) -> list[str]:
    return [f"results/{ds}/noise_floor.json" for ds, d in config["datasets"].items() if d["table2"]]


def grid_input(config, w) -> str:
    return f"results/{w.dataset}/{w.method}/nfe{w.nfe}/{runs(config, w.dataset, w.method)[0]}samples/000000.npz"


def sample_grids(config) -> list[str]:
    """One sample grid per Table 2 cell (the first seeds of shard 0)."""
    return [f"results/{ds}/{m}/nfe{n}/grid.png" for ds, m, n in table2_cells(config)]


def paper_targets(config) -> list[str]:
    """Everything `rule paper` builds: Tables 3-5 where configured, the figures, the grids, the full audit."""
    out = [f"results/{t}.{ext}" for t in ("table3", "table4", "table5") if config[t]["dataset"] is not None
           for ext in ("csv", "md")]
    if config["figures"]["dataset"] is not None:
        figs = ("fig3", "fig4", "fig5") + (("fig7",) if config["figures"]["fig7"]["method"] is not None else ())
        out += [f"results/{f}.{ext}" for f in figs for ext in ("png", "csv")]
    return out + sample_grids(config) + ["results/audit_paper.csv", "results/audit_paper.md"] + \
        prune_targets(config, "paper")


def beyond_targets(config) -> list[str]:
    return ["results/beyond.csv", "results/beyond.md"] if config["beyond"]["dataset"] is not None else []


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
