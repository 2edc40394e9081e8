"""What each default callback costs the training loop: the lab default with one callback left out at a time.

    python benchmarks/callback_cost.py --device cuda [--rounds 2] [--steps 300] [overrides ...]

The bench shows the lab default below its "callbacks off" row; this says which callback makes the gap. Each row
is `train(cfg)`'s own images/s (the Throughput callback, after warm-up) at the default 32px / batch 64, best of
`rounds` interleaved rounds, metrics off (metric evaluations are timed on their own). Prints a table and writes
benchmarks/results/callback_cost_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CALLBACKS_OFF, RESULTS, lab_run  # noqa: E402

# Leaving out a callback Lightning would otherwise replace with its own (progress bar, checkpoint) also turns
# the Trainer's switch off.
WITHOUT = {
    "default": [],
    "divergence_guard": ["~callbacks.divergence_guard"],
    "model_checkpoint": ["~callbacks.model_checkpoint", "+trainer.enable_checkpointing=false"],
    "sample_grid": ["~callbacks.sample_grid"],
    "progress_bar": ["~callbacks.progress_bar", "trainer.enable_progress_bar=false"],
    "rng_state+save_on_interrupt": ["~callbacks.rng_state", "~callbacks.save_on_interrupt"],
    "all of them": CALLBACKS_OFF,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    workdir = Path(tempfile.mkdtemp(prefix="callback_cost_"))
    rates = {name: 0.0 for name in WITHOUT}
    for _ in range(args.rounds):
        for name, leave_out in WITHOUT.items():
            overrides = ["metrics=none", f"trainer.accelerator={accelerator}", *args.overrides, *leave_out]
            rates[name] = max(rates[name], lab_run(overrides, args.steps, args.warmup, workdir))
    lines = ["| left out | img/s | x lab default |", "|---|---:|---:|"]
    lines += [f"| {name if name != 'default' else '(nothing: the lab default)'} | {rate:.0f} | {rate / rates['default']:.2f} |"
              for name, rate in rates.items()]
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"callback_cost_{args.device}.json").write_text(
        json.dumps({"images_per_s": rates, "overrides": args.overrides, "steps": args.steps}, indent=2))


if __name__ == "__main__":
    main()
