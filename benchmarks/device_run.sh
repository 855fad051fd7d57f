# The device run behind benchmarks/measured/*_quiet.csv and *_h200.csv (one lent H200 host: 16 idle cores + the GPU):
#   bash benchmarks/device_run.sh   (writes into $OUT)
set -x
nproc; python -c "import torch;print(torch.__version__)"
export PYTHONPATH=$PWD
# Quiet 1-thread CPU benchmarks on separate cores (the 16-core host is otherwise idle)
(taskset -c 2 env OMP_NUM_THREADS=1 python benchmarks/bench_sampling.py --batches 256 --repeats 9 --no-compile --device cpu --threads 1 --out $OUT/sampling_cpu_quiet.csv > $OUT/sampling_cpu_quiet.log 2>&1) &
(taskset -c 4 env OMP_NUM_THREADS=1 python benchmarks/solver_overhead.py --batches 1,64,256 --repeats 3 --device cpu --threads 1 --out $OUT/solver_overhead_cpu_quiet.csv > $OUT/solver_overhead_cpu_quiet.log 2>&1) &
(taskset -c 6 env OMP_NUM_THREADS=1 python benchmarks/bench_training.py --trajectories 256 --batch 128 --threads 1 --out $OUT/training_cpu_quiet.csv > $OUT/training_cpu_quiet.log 2>&1) &
taskset -c 8-15 python benchmarks/precision_quality.py --device cuda --n 4096 --batch 1024 --trajectories 1024 --out $OUT/precision_h200.csv 2>&1 | grep -v Warning
taskset -c 8-15 python benchmarks/solver_overhead.py --model convnet --res 64 --batches 64,256 --device cuda --repeats 3 --methods ddim,ipndm,dpmpp3m,unipc,amed-solver,amed-plugin-ipndm --out $OUT/solver_overhead_convnet64_h200.csv 2>&1 | tail -14
wait
for f in $OUT/*.log; do tail -n 3 "$f"; done
