# Stage 8 (on demand, not in `all`/`paper`): `snakemake --cores 1 bench` runs benchmarks/*.py and writes
# results/bench/{solver_overhead,sampling,training,kernels}.csv. The sizes come from config["bench"].
# Each job is one thread (OMP_NUM_THREADS, torch.set_num_threads); run them with --cores 1 so that no two
# benchmarks share the cores. The CSVs hold ratios measured within one run; seconds vary between machines.

BENCH = config["bench"]
BENCH_PY = os.path.join(workflow.basedir, "benchmarks")
BENCH_GPU = 1 if BENCH["device"] == "cuda" else 0


rule bench:  # target: every benchmark CSV
    input:
        expand("results/bench/{name}.csv", name=["solver_overhead", "sampling", "training", "kernels"]),


rule bench_solver_overhead:  # time outside the network per step / one network call, per solver and batch
    output:
        "results/bench/solver_overhead.csv",
    params:
        py=sys.executable,
        script=os.path.join(BENCH_PY, "solver_overhead.py"),
        model=BENCH["solver_overhead"]["model"],
        batches=",".join(map(str, BENCH["solver_overhead"]["batches"])),
        repeats=BENCH["solver_overhead"]["repeats"],
        device=BENCH["device"],
    log:
        "results/logs/bench/solver_overhead.log",
    benchmark:
        "results/benchmarks/bench/solver_overhead.tsv"
    threads: BENCH["threads"]
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=BENCH_GPU,
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{params.py} {params.script} --model {params.model} --batches {params.batches} --repeats {params.repeats} "
        "--device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule bench_sampling:  # images/s at NFE 5 vs the bound NFE x (one network call), eager (and compiled)
    output:
        "results/bench/sampling.csv",
    params:
        py=sys.executable,
        script=os.path.join(BENCH_PY, "bench_sampling.py"),
        model=BENCH["sampling"]["model"],
        batches=",".join(map(str, BENCH["sampling"]["batches"])),
        nfe=BENCH["sampling"]["nfe"],
        repeats=BENCH["sampling"]["repeats"],
        compile="" if BENCH["sampling"]["compile"] else "--no-compile",
        device=BENCH["device"],
    log:
        "results/logs/bench/sampling.log",
    benchmark:
        "results/benchmarks/bench/sampling.tsv"
    threads: BENCH["threads"]
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=BENCH_GPU,
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{params.py} {params.script} --model {params.model} --batches {params.batches} --nfe {params.nfe} "
        "--repeats {params.repeats} {params.compile} --device {params.device} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule bench_training:  # predictor training: s per 1,000 trajectories, share in network forward + backward
    output:
        "results/bench/training.csv",
    params:
        py=sys.executable,
        script=os.path.join(BENCH_PY, "bench_training.py"),
        model=BENCH["training"]["model"],
        trajectories=BENCH["training"]["trajectories"],
        batch=BENCH["training"]["batch"],
    log:
        "results/logs/bench/training.log",
    benchmark:
        "results/benchmarks/bench/training.tsv"
    threads: BENCH["threads"]
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{params.py} {params.script} --model {params.model} --trajectories {params.trajectories} "
        "--batch {params.batch} --threads {threads} --out {output} > {log} 2>&1"


rule bench_kernels:  # fused lincomb GB/s vs a device copy on CUDA; on CPU torch reference vs unfused only
    output:
        "results/bench/kernels.csv",
    params:
        py=sys.executable,
        script=os.path.join(BENCH_PY, "bench_kernels.py"),
        batches=",".join(map(str, BENCH["kernels"]["batches"])),
        sweep="--sweep" if BENCH["kernels"]["sweep"] else "",
    log:
        "results/logs/bench/kernels.log",
    benchmark:
        "results/benchmarks/bench/kernels.tsv"
    threads: BENCH["threads"]
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=BENCH_GPU,
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; {params.py} {params.script} --batches {params.batches} {params.sweep} "
        "--out {output} > {log} 2>&1"
