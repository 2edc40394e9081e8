#!/usr/bin/env bash
# One call on a lent GPU (run carry=[".whl"], after benchmarks/device_kit.sh here). Stages, in the order named:
#   tests    the CUDA tests (captured vs eager step, no host waits, resume across modes, fallback line, compile refusals,
#            host reads on the GPU, G's backward skipping D's gradients, a GPU checkpoint's background snapshot)
#                                                  2.5 min on an H200, 84 s of it the torch.compile test
#   bench    make bench's GPU column (plain loop and lab in one process)                ~2.5 min
#   quality  a default 20-epoch run on the GPU (classifier-FID, classes covered)        ~0.5 min
#   sweep    +sweep=mnist_ablation (12 jobs) one after another vs n_jobs at once (2 min at 1 epoch; ~6 min estimated at
#            the sweep's own 20); SWEEP_EPOCHS (20) and SWEEP_JOBS (4) set its size
#   cost     benchmarks/callback_cost.py: the lab default with one default callback left out at a time (32px, 2
#            rounds): which callback keeps the lab default below "callbacks off"        ~1 min
# A session's 15 device minutes hold a start (~1.5 min) and two calls back to back on the warm machine (never
# give_back between them: a new start may be refused for the rest of the session):
#   CUDA_TESTS="never_wait or compile_on_cuda or holds_the_values or captured_step" bash benchmarks/device_run.sh tests bench quality
#   bash benchmarks/device_run.sh sweep
#   profile  Lightning's simple profiler over 10 default epochs (metrics off): which per-epoch host work keeps the lab
#            default below "callbacks off" in the bench (on 2 CPU cores: the sample grid ~54 ms and checkpoint saves
#            ~0.26 s every 5th epoch are the large hooks)                                ~1 min
# e.g. bash benchmarks/device_run.sh tests bench. Each stage runs under its own time cap (CAP_<stage>, seconds),
# and everything (logs, JSON, PNG, CSV) is packed into $OUT/results.tgz after every stage, so a call cut short
# still returns what finished. BENCH_ARGS passes extra bench.py arguments (a CPU dry run: --device cpu --steps 2);
# CUDA_TESTS replaces the tests stage's -k selection.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled
OUT=${OUT:-/tmp/out}; KEEP=$(mktemp -d); mkdir -p "$OUT"
export DCGAN_LAB_EVIDENCE=$KEEP/captured_vs_eager.jsonl  # tests/test_captured.py writes the measured loss gaps here
pack() { tar czf "$OUT/results.tgz" -C "$KEEP" .; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$KEEP/gpu.txt" 2>&1
python3 -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)' >> "$KEEP/gpu.txt"
cat "$KEEP/gpu.txt"

stage() {  # stage NAME CAP COMMAND...: run under the cap, log to $KEEP/NAME.log, then pack
  local name=$1 cap=$2 started=$SECONDS; shift 2
  echo "== $name (cap ${cap}s)"
  timeout -k 10 "$cap" "$@" > "$KEEP/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$KEEP/$name.log"
  echo "== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$KEEP/stages.txt"
  pack
}

CUDA_TESTS="${CUDA_TESTS:-captured_step or never_wait or resume_each_other or fall_back or compile_on_cuda or compile_without or precision_and_memory or only_logging_batches or generator_backward or holds_the_values}"
for name in "$@"; do
  case $name in
    tests)   stage tests "${CAP_tests:-240}" python3 -m pytest tests/test_captured.py tests/test_speed.py tests/test_reliability.py -q -p no:cacheprovider \
               -k "$CUDA_TESTS" -rfEs --durations=25 ;;
    bench)   stage bench "${CAP_bench:-260}" python3 benchmarks/bench.py --device cuda --rounds 2 ${BENCH_ARGS:-}
             cp benchmarks/results/cuda.json benchmarks/results/cuda.md "$KEEP/" 2>/dev/null; pack ;;
    quality) rm -rf /tmp/quality
             stage quality "${CAP_quality:-150}" python3 train.py trainer.accelerator=gpu logger=csv hydra.run.dir=/tmp/quality
             cp /tmp/quality/metrics.csv /tmp/quality/status.json "$KEEP/" 2>/dev/null
             cp /tmp/quality/samples/last.png "$KEEP/quality_last.png" 2>/dev/null
             cp /tmp/quality/samples/interpolation.png "$KEEP/quality_interpolation.png" 2>/dev/null
             cp /tmp/quality/samples/progress.gif "$KEEP/quality_progress.gif" 2>/dev/null; pack ;;
    sweep)   stage sweep "${CAP_sweep:-400}" python3 benchmarks/sweep_wall.py --device cuda --n-jobs "${SWEEP_JOBS:-4}" \
               ${SWEEP_EPOCHS:+trainer.max_epochs=$SWEEP_EPOCHS}
             cp benchmarks/results/cuda.json "$KEEP/cuda_with_sweep.json" 2>/dev/null; pack ;;
    cost)    stage cost "${CAP_cost:-150}" python3 benchmarks/callback_cost.py --device cuda --rounds 2
             cp benchmarks/results/callback_cost_cuda.json "$KEEP/" 2>/dev/null; pack ;;
    profile) stage profile "${CAP_profile:-120}" python3 train.py trainer.accelerator=gpu metrics=none logger=csv \
               trainer.max_epochs=10 +trainer.profiler=simple hydra.run.dir=/tmp/profile ;;
    *)       echo "unknown stage $name (tests, bench, quality, sweep, cost, profile)"; exit 2 ;;
  esac
done
cat "$KEEP/stages.txt"
