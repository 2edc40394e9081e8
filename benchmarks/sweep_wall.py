"""Wall time of one whole sweep, one job after another vs n jobs at once on the same device.

    python benchmarks/sweep_wall.py --device cuda --n-jobs 4 [overrides ...]

Runs `train.py -m +sweep=mnist_ablation` twice (sequential, then hydra/launcher=local with n_jobs) and merges
{"sweep_wall_s": {"sequential", "parallel", "n_jobs", "jobs", "overrides"}} into benchmarks/results/<device>.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def sweep(extra: list[str], sweep_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "+sweep=mnist_ablation", "logger=csv",
                    f"hydra.sweep.dir={sweep_dir}", *extra], check=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--n-jobs", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="extra overrides for every job, e.g. trainer.max_epochs=3")
    args = parser.parse_args()
    accelerator = ["trainer.accelerator=gpu"] if args.device == "cuda" else ["trainer.accelerator=cpu"]
    work = Path(tempfile.mkdtemp(prefix="sweep_wall_"))
    sequential = sweep([*accelerator, *args.overrides], work / "sequential")
    parallel = sweep([*accelerator, "hydra/launcher=local", f"hydra.launcher.n_jobs={args.n_jobs}", *args.overrides],
                     work / "parallel")
    jobs = len(list((work / "sequential").rglob("status.json")))
    path = RESULTS / f"{args.device}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["sweep_wall_s"] = {"sequential": sequential, "parallel": parallel, "n_jobs": args.n_jobs, "jobs": jobs,
                              "overrides": args.overrides, "speedup": sequential / parallel}
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["sweep_wall_s"], indent=2))


if __name__ == "__main__":
    main()
