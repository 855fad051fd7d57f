# Third device run: whole sampling loops on the GPU (one sync at the end), fused vs unfused, and digits-8 vs its bound.
#   bash benchmarks/device_run3.sh   (writes into $OUT)
export PYTHONPATH=$PWD
python -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py tests/test_sampling.py -k "cuda or deferred" 2>&1 | tail -n 2
python benchmarks/bench_fused_loop.py --sizes 64:256,128:256,256:64,256:256 --repeats 5 --out $OUT/fused_loop_h200.csv 2>&1 | grep -v -i warn
python benchmarks/bench_sampling.py --device cuda --batches 256 --repeats 7 --no-compile --out $OUT/sampling_h200_eager.csv 2>&1 | tail -n 8
