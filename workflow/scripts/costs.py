"""What a run will cost before it starts: per stage jobs, network calls, GPU-hours (from the FLOPs of one call in
workflow/resources/network_costs.csv) and disk, and the teacher caches' sizes. Printed by the Snakefile's onstart and
written by `snakemake plan` (workflow/scripts/plan.py); it reads the one expansion of `experiments.methods`.
"""

from __future__ import annotations

from experiments import afs_for, beyond_only, imported_snapshot, methods, registries, runs, shards, teacher_input


def teacher_cache_plan(config) -> list[dict]:
    """Every teacher cache the run builds (one per owner cell and NFE) and its size on disk before it starts:
    (trajectories + held-out, rounded to whole batches) x student points x the sample shape x the cache dtype."""
    import math  # noqa: PLC0415

    from amed.models.registry import model_shape  # noqa: PLC0415

    out, seen = [], set()
    for ds, ms in methods(config).items():
        shape = model_shape(config["datasets"][ds]["model"])
        for key, m in ms.items():
            if m["kind"] == "baseline" or not m["train"]["teacher_cache"]:
                continue
            for nfe in m["nfe"]:
                if imported_snapshot(m, nfe):
                    continue
                w = type("W", (), {"dataset": ds, "method": key, "nfe": nfe})
                path = teacher_input(config, w)["teacher"]
                if path in seen:
                    continue
                seen.add(path)
                t = m["train"]
                n = math.ceil(t["trajectories"] / t["batch"]) * t["batch"] + t["holdout"]
                points = (nfe + afs_for(m, nfe)) // 2 + 1
                size = None if shape is None else \
                    n * points * math.prod(shape) * (2 if t["cache_dtype"] == "float16" else 4)
                out.append({"cache": path.replace("teacher.json", "cache"), "dataset": ds, "owner": key, "nfe": nfe,
                            "trajectories": n, "points": points, "shape": shape, "dtype": t["cache_dtype"],
                            "bytes": size, "beyond": beyond_only(m)})
    return out


def format_cache_plan(rows: list[dict], config) -> str:
    """The cache plan as lines: each cache, then the totals for `all` (Table 2's caches) and for `paper`."""
    def human(b):
        if b is None:
            return "unknown (model shape not known before loading)"
        return next(f"{b / k:.1f} {u}" for k, u in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))
                    if b >= k) if b >= 1024 else f"{b} B"

    table2 = {f"results/{ds}/teacher/{k}/" for ds, d in config["datasets"].items() if d["table2"] for k in d["methods"]}
    t2 = [r for r in rows if any(r["cache"].startswith(p) for p in table2)]
    unknown = " (+ caches of unknown size)" if any(r["bytes"] is None for r in rows) else ""
    paper = [r for r in rows if not r.get("beyond")]
    extra = [r for r in rows if r.get("beyond")]
    more = f"; {len(extra)} more for `beyond`, {human(sum(r['bytes'] or 0 for r in extra))}" if extra else ""
    lines = [f"teacher caches: {len(t2)} for Table 2 (`all`), {human(sum(r['bytes'] or 0 for r in t2))}; "
             f"{len(paper)} for every table of this config (`paper`), {human(sum(r['bytes'] or 0 for r in paper))}"
             f"{more}{unknown}"]
    lines += [f"  {r['cache']}: {r['trajectories']} trajectories x {r['points']} points x "
              f"{'x'.join(map(str, r['shape'])) if r['shape'] else '?'} {r['dtype']} = {human(r['bytes'])}"
              for r in rows]
    return "\n".join(lines)


def _teacher_nfe(m: dict, nfe: int) -> int:
    """Network calls of one teacher trajectory: (M + 1)(N - 1) steps of the teacher, Heun 2 calls per step."""
    solvers, _, _ = registries()
    t = m["train"]
    points = (nfe + afs_for(m, nfe)) // 2 + 1
    return (t["M"] + 1) * (points - 1) * solvers[t["teacher"]].evals_per_step


def run_plan(config, costs: dict, scope: str = "all") -> list[dict]:
    """What a run costs before it starts, per stage: jobs, network calls, GPU-hours at config plan.gpu_tflops
    (from the FLOPs of one call, workflow/resources/network_costs.csv), and disk. ``scope``: "all" (Table 2) or
    "paper" (every table of the config). Training counts a backward pass as two forward passes."""
    import math  # noqa: PLC0415

    from amed.models.registry import model_shape  # noqa: PLC0415

    tflops = float(config["plan"]["gpu_tflops"])
    resolved = methods(config)
    rows = {k: {"stage": k, "jobs": 0, "network_calls": 0, "gflops": 0.0, "disk_bytes": 0, "unknown_cost": set()}
            for k in ("teacher", "train", "sample", "fid")}
    caches = {r["cache"]: r for r in teacher_cache_plan(config)}
    seen = set()

    def add(stage, jobs=0, calls=0, gflops_per_call=None, disk=0, extra_gflops=0.0, model=None):
        r = rows[stage]
        r["jobs"] += jobs
        r["network_calls"] += int(calls)
        r["disk_bytes"] += int(disk)
        r["gflops"] += extra_gflops + (calls * gflops_per_call if gflops_per_call is not None else 0.0)
        if calls and gflops_per_call is None:
            r["unknown_cost"].add(model)

    inception = costs.get("inception-2015-12-05")
    for ds, d in config["datasets"].items():
        if scope == "all" and not d["table2"]:
            continue
        g = costs.get(d["model"])
        shape = model_shape(d["model"]) or (3, 64, 64)
        image_bytes = 512 * 512 * 3 if d["guidance"] is not None else math.prod(shape)  # uint8 (SD: decoded)
        cfg = 2 if d["guidance"] not in (None, 1, 1.0) else 1
        for key in (d["methods"] if scope == "all" else resolved[ds]):
            m = resolved[ds][key]
            if beyond_only(m):  # `snakemake beyond` is its own target
                continue
            for nfe in (d["nfe"] if scope == "all" else m["nfe"]):
                k, n = len(runs(config, ds, key)), m["num_samples"]
                add("sample", k * len(shards(dict(d, num_samples=n))), k * n * nfe * cfg, g, k * n * image_bytes,
                    model=d["model"])
                add("fid", k, extra_gflops=k * n * (inception or 0.0) if "inception" in d["metric"] else 0.0)
                if m["kind"] == "baseline" or imported_snapshot(m, nfe):  # an import costs no network call
                    continue
                t = m["train"]
                traj = math.ceil(t["trajectories"] / t["batch"]) * t["batch"]
                b = plan_budget_steps(t, traj)
                points = (nfe + afs_for(m, nfe)) // 2 + 1
                student = nfe + 2 * (points - 1) if t["objective"] == "per_interval" else 3 * nfe
                validations = (min(16, b) + 2) if t["holdout"] else 0
                teacher_calls = _teacher_nfe(m, nfe) * cfg
                calls = k * (b * t["batch"] * student + validations * t["holdout"] * nfe) * cfg
                if t["teacher_cache"]:
                    w = type("W", (), {"dataset": ds, "method": key, "nfe": nfe})
                    path = teacher_input(config, w)["teacher"].replace("teacher.json", "cache")
                    if path not in seen:
                        seen.add(path)
                        add("teacher", 1, (traj + t["holdout"]) * teacher_calls, g, caches[path]["bytes"] or 0,
                            model=d["model"])
                else:  # the teacher on the fly in every training job, again each epoch
                    calls += k * (b * t["batch"] + t["holdout"]) * teacher_calls
                add("train", k, calls, g, model=d["model"])
    out = []
    for r in rows.values():
        out.append({"stage": r["stage"], "jobs": r["jobs"], "network_calls": r["network_calls"],
                    "gpu_hours": round(r["gflops"] * 1e9 / (tflops * 1e12) / 3600, 2), "disk_bytes": r["disk_bytes"],
                    "unknown_cost": ",".join(sorted(r["unknown_cost"]))})
    return out


def plan_budget_steps(t: dict, traj: int) -> int:
    """Training steps of a train block (amed.training.plan_budget's rule: steps, else epochs, else one epoch and
    at least the authors' 79)."""
    from amed.training import plan_budget  # noqa: PLC0415

    return plan_budget(traj, t["batch"], t["steps"], t["epochs"]).steps


def network_costs(path) -> dict:
    """{model: GFLOPs per network call} from workflow/resources/network_costs.csv."""
    import csv  # noqa: PLC0415

    with open(path, newline="") as f:
        return {r["model"]: float(r["gflops_per_call"]) for r in csv.DictReader(f)}


def format_run_plan(rows: list[dict], config, scope: str) -> str:
    total_h = sum(r["gpu_hours"] for r in rows)
    total_b = sum(r["disk_bytes"] for r in rows)
    gib = lambda b: f"{b / (1 << 30):.1f} GiB"  # noqa: E731
    lines = [f"run plan ({scope}): {sum(r['jobs'] for r in rows)} heavy jobs, {total_h:.1f} GPU-hours at "
             f"{config['plan']['gpu_tflops']:g} TFLOP/s sustained (assumed), {gib(total_b)} on disk"]
    lines += [f"  {r['stage']}: {r['jobs']} jobs, {r['network_calls']:,} network calls, {r['gpu_hours']:.1f} GPU-h, "
              f"{gib(r['disk_bytes'])}" + (f" (no FLOP count for {r['unknown_cost']})" if r["unknown_cost"] else "")
              for r in rows]
    return "\n".join(lines)
