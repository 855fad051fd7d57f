# Second device run: the fused path's dispatch threshold in a sampling loop, and the CUDA kernel tests.
#   bash benchmarks/device_run2.sh   (writes into $OUT)
export PYTHONPATH=$PWD
python -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py 2>&1 | tail -n 3
for res in 64 128 256; do
  b=$([ $res = 256 ] && echo 64 || echo 256)
  python benchmarks/solver_overhead.py --model convnet --res $res --batches $b --device cuda --repeats 3 \
    --methods ddim,ipndm,dpmpp3m,amed-plugin-ipndm --out $OUT/solver_overhead_convnet${res}_h200.csv 2>&1 \
    | grep -v "^batch\|^->\|Warn\|warn"
done
