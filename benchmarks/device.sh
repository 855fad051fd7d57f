#!/usr/bin/env bash
# The device benchmarks: the measurements behind benchmarks/measured/*.csv, which need a GPU (or that GPU host's
# idle CPU cores) and which CI cannot repeat. One section per kind of measurement; each writes its CSVs (and logs)
# into $OUT under the names they carry in benchmarks/measured/.
#
#   bash benchmarks/device.sh [cpu-quiet|kernels|loops|compile|all]...   (default: all; OUT defaults to
#                                                                         results/bench/device)
#
# Sections (numbers and their reading: NOTES.md, "Performance"):
#   cpu-quiet  One-thread CPU timings on separate idle cores of a 16-core host (taskset -c 2/4/6, OMP_NUM_THREADS=1),
#              in the background while the GPU sections run on cores 8-15:
#                sampling_h200host_cpu1.csv        bench_sampling.py: NFE-5 throughput vs the NFE x one-call bound
#                solver_overhead_h200host_cpu1.csv solver_overhead.py: time outside the network / inside it
#                training_h200host_cpu1.csv        bench_training.py: where training time goes (teacher, cache)
#   kernels    The fused update on CUDA: the CUDA kernel tests (tests/test_kernels_cuda.py, and the deferred
#              finiteness check of tests/test_sampling.py), then
#                kernels_h200.csv                  bench_kernels.py --sweep: bandwidth vs a device-to-device copy
#   loops      Whole sampling loops on the GPU, fused vs unfused updates:
#                solver_overhead_convnet{64,128,256}_h200.csv  solver_overhead.py --model convnet, per-step host time
#                fused_loop_h200.csv               bench_fused_loop.py: one sync per loop, ratio to the NFE x call bound
#                sampling_h200_eager_nosync.csv    bench_sampling.py --device cuda, eager (no per-step sync)
#   compile    Compile, CUDA graphs, channels-last, autocast: speed and what they do to the samples:
#                precision_h200.csv                precision_quality.py: speed-up and FD-digits per variant
#                sampling_h200.csv                 bench_sampling.py --device cuda, eager vs compiled, batch 256 and 1
#                sampling_h200_reduce_overhead.csv the same with --mode reduce-overhead
#              (the two sampling_h200*.csv in benchmarks/measured/ are from a first session with an older column set.)
# benchmarks/measured/amed_trap/ is a CPU run of benchmarks/amed_trap.py (NOTES.md has its command), not from here.
#
# Through the lent GPU (a session's `run` tool runs a command in a copy of the working tree and brings back what it
# writes under $OUT): run one section per call, e.g. `bash benchmarks/device.sh loops`, with a timeout that leaves
# room to rerun it; then copy the CSVs worth keeping from the returned files into benchmarks/measured/ and cite them
# in NOTES.md with the command. On any CUDA host: `OUT=/tmp/device bash benchmarks/device.sh kernels`.
# This script replays the commands of the earlier numbered scripts (device_run.sh, device_run2.sh, device_run3.sh in
# git history) and the first session's commands; it was not itself run end to end on a GPU here.
set -u
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(all)
for s in "${sections[@]}"; do
  case $s in
    cpu-quiet|kernels|loops|compile|all) ;;
    *) echo "benchmarks/device.sh: unknown section '$s'; choose from cpu-quiet kernels loops compile all" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-results/bench/device}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
GPU_CORES=8-15  # the GPU sections stay off the cores of the quiet CPU timings

pin() {  # pin CORES CMD...: taskset on a host with the 16 cores the layout assumes, else run unpinned
  local cores=$1; shift
  if [ "$(nproc)" -ge 16 ]; then taskset -c "$cores" "$@"; else "$@"; fi
}

section_cpu_quiet() {
  (pin 2 env OMP_NUM_THREADS=1 python benchmarks/bench_sampling.py --batches 256 --repeats 9 --no-compile \
     --device cpu --threads 1 --out "$OUT/sampling_h200host_cpu1.csv" > "$OUT/sampling_h200host_cpu1.log" 2>&1) &
  (pin 4 env OMP_NUM_THREADS=1 python benchmarks/solver_overhead.py --batches 1,64,256 --repeats 3 \
     --device cpu --threads 1 --out "$OUT/solver_overhead_h200host_cpu1.csv" > "$OUT/solver_overhead_h200host_cpu1.log" 2>&1) &
  (pin 6 env OMP_NUM_THREADS=1 python benchmarks/bench_training.py --trajectories 256 --batch 128 --threads 1 \
     --out "$OUT/training_h200host_cpu1.csv" > "$OUT/training_h200host_cpu1.log" 2>&1) &
}

section_kernels() {
  pin $GPU_CORES python -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py tests/test_sampling.py \
    -k "cuda or deferred" 2>&1 | tail -n 3
  pin $GPU_CORES python benchmarks/bench_kernels.py --sweep --out "$OUT/kernels_h200.csv" 2>&1 | tail -n 8
}

section_loops() {
  for res in 64 128 256; do
    b=$([ $res = 256 ] && echo 64 || echo 256)
    pin $GPU_CORES python benchmarks/solver_overhead.py --model convnet --res $res --batches $b --device cuda \
      --repeats 3 --methods ddim,ipndm,dpmpp3m,amed-plugin-ipndm --out "$OUT/solver_overhead_convnet${res}_h200.csv" \
      2>&1 | grep -v "^batch\|^->\|Warn\|warn"
  done
  pin $GPU_CORES python benchmarks/bench_fused_loop.py --sizes 64:256,128:256,256:64,256:256 --repeats 5 \
    --out "$OUT/fused_loop_h200.csv" 2>&1 | grep -v -i warn
  pin $GPU_CORES python benchmarks/bench_sampling.py --device cuda --batches 256 --repeats 7 --no-compile \
    --out "$OUT/sampling_h200_eager_nosync.csv" 2>&1 | tail -n 8
}

section_compile() {
  pin $GPU_CORES python benchmarks/precision_quality.py --device cuda --n 4096 --batch 1024 --trajectories 1024 \
    --out "$OUT/precision_h200.csv" 2>&1 | grep -v Warning
  pin $GPU_CORES python benchmarks/bench_sampling.py --device cuda --batches 256,1 --repeats 7 \
    --out "$OUT/sampling_h200.csv" 2>&1 | tail -n 8
  pin $GPU_CORES python benchmarks/bench_sampling.py --device cuda --batches 256 --repeats 7 \
    --mode reduce-overhead --out "$OUT/sampling_h200_reduce_overhead.csv" 2>&1 | tail -n 8
}

nproc; python -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
for s in "${sections[@]}"; do
  echo "== $s"
  case $s in
    cpu-quiet) section_cpu_quiet ;;
    kernels) section_kernels ;;
    loops) section_loops ;;
    compile) section_compile ;;
    all) section_cpu_quiet; section_kernels; section_loops; section_compile ;;
  esac
done
wait  # the background CPU timings
for f in "$OUT"/*.log; do [ -e "$f" ] && { echo "== $f"; tail -n 3 "$f"; }; done
