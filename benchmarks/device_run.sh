#!/usr/bin/env bash
# One call on a lent GPU (run carry=[".whl"], after benchmarks/device_kit.sh here). Stages, in this order when
# named: tests (the CUDA tests), bench (make bench's GPU column, baseline in the same process), quality
# (a default 20-epoch run), sweep (12-job mnist_ablation, sequential vs 4 at once). Everything lands in $OUT.
#   bash benchmarks/device_run.sh tests bench quality      # about 6 minutes on an H200
#   bash benchmarks/device_run.sh sweep                     # about 8 minutes
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
for stage in "$@"; do
  case $stage in
    tests)   python3 -m pytest tests/test_captured.py tests/test_speed.py -q -p no:cacheprovider -x 2>&1 | tee "$OUT/cuda_tests.log" ;;
    bench)   python3 benchmarks/bench.py --device cuda --rounds 2 2>&1 | tee "$OUT/bench.log"
             cp benchmarks/results/cuda.json benchmarks/results/cuda.md "$OUT/" ;;
    quality) python3 train.py trainer.accelerator=gpu logger=csv hydra.run.dir=/tmp/quality 2>&1 | tail -20 | tee "$OUT/quality.log"
             cp /tmp/quality/metrics.csv "$OUT/quality_metrics.csv"; cp /tmp/quality/samples/last.png "$OUT/quality_last.png" ;;
    sweep)   python3 benchmarks/sweep_wall.py --device cuda --n-jobs 4 seed=0 2>&1 | tail -15 | tee "$OUT/sweep.log"
             cp benchmarks/results/cuda.json "$OUT/cuda_with_sweep.json" ;;
    *)       echo "unknown stage $stage (tests, bench, quality, sweep)"; exit 2 ;;
  esac
done
