"""make bench: the lab's training step against a plain PyTorch loop, side by side in one process.

At two sizes (32x32 batch 64, the default; 64x64 batch 128), each path measured in interleaved rounds:
(a) the plain loop, written the pytorch/examples way (one G forward per step), fp32 eager and bf16 + channels_last;
(b) the lab's Trainer path with the plain loop's settings (fp32) and its default callbacks off;
(c) the lab's default configuration (precision per device, channels_last, sample grids, checkpoints, progress bar).
Plus each step's GFLOP, the measured matmul peak, and the data path: the lab's in-memory uint8 tensor against a
torchvision PIL dataset, and Inception's feature speed (torch-fidelity's extractor as the lab ran it vs the lab's
path, benchmarks/inception_bench.py). Results: benchmarks/results/<device>.{json,md}; the targets are checked in the .md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import open_dict  # noqa: E402

import dcgan_lab  # noqa: E402
from dcgan_lab.config import compose_run_config  # noqa: E402
from dcgan_lab.data.datamodule import to_float  # noqa: E402
from dcgan_lab.losses import bce_d, bce_g  # noqa: E402
from dcgan_lab.pipeline import train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture: which machine a CPU table comes from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- machine peak --------------------------------------------------------------------------------
def matmul_peak_gflops(device: torch.device, dtype: torch.dtype) -> float:
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps, best = (50 if device.type == "cuda" else 10), float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best / 1e9


# ---- (a) the plain loop --------------------------------------------------------------------------
def networks(cfg, device, channels_last: bool):
    g, d = instantiate(cfg.model.generator).to(device), instantiate(cfg.model.discriminator).to(device)
    if channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    return g, d


def plain_step_fn(g, d, opt_g, opt_d, device, bf16: bool):
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step(images_uint8):
        real = to_float(images_uint8)
        z = torch.randn(len(real), g.latent_dim, device=device)
        with autocast():
            fake = g(z)
            # D step on fake.detach(); G's step reuses the same fake (one G forward per step).
            loss_d = bce_d(d(real), d(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with autocast():
            loss_g = bce_g(d(fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return loss_d, loss_g

    return step


def plain_loop(cfg, data: torch.Tensor, device, steps: int, warmup: int, bf16: bool, channels_last: bool) -> float:
    torch.manual_seed(0)
    # pytorch/examples' dcgan sets cudnn.benchmark (each conv's fastest algorithm, tuned once); set here so the
    # baseline does not depend on which Trainer ran before it in this process.
    torch.backends.cudnn.benchmark = True
    g, d = networks(cfg, device, channels_last)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step = plain_step_fn(g, d, opt_g, opt_d, device, bf16)
    batch = cfg.dataset.batch_size
    data = data.to(device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            started = time.perf_counter()
        index = torch.randint(len(data), (batch,), device=device)
        step(data[index])
    sync(device)
    return steps * batch / (time.perf_counter() - started)


def step_gflop(cfg, data: torch.Tensor, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    g, d = networks(cfg, device, channels_last=False)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    step = plain_step_fn(g, d, opt_g, opt_d, device, bf16=False)
    with FlopCounterMode(display=False) as counter:
        step(data[: cfg.dataset.batch_size].to(device))
    return counter.get_total_flops() / 1e9


# ---- (b), (c) the lab's Trainer path -------------------------------------------------------------
# Every callback off, also the ones Lightning adds by itself (its bar, model summary and per-epoch checkpoint).
CALLBACKS_OFF = ["callbacks=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 "+trainer.enable_checkpointing=false"]


def lab_run(overrides: list[str], steps: int, warmup: int, workdir: Path) -> float:
    """images/s of `train(cfg)` over the wall time after `warmup` batches, with the epoch-end work (grids,
    checkpoints) of every epoch, the last one's (where max_steps stops it) included: about one epoch end per
    epoch, as in a whole run (the lab's own Throughput callback, its last `perf/wall_images_per_s`)."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    cfg = compose_run_config(run_dir, ["logger=none", f"trainer.max_steps={warmup + steps}", "trainer.max_epochs=-1",
                                f"paths.cache_dir={workdir / 'cache'}", *overrides])
    with open_dict(cfg):
        cfg.callbacks["throughput"] = {"_target_": "dcgan_lab.callbacks.Throughput", "warmup": warmup}
    return train(cfg)["metrics"]["perf/wall_images_per_s"]


# ---- data path -----------------------------------------------------------------------------------
def write_idx_mnist(root: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The embedded digits in MNIST's own idx files, so torchvision.datasets.MNIST reads them unchanged."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    pixels = images[:, 0].numpy().tobytes()
    header_images = struct.pack(">IIII", 0x803, len(images), 28, 28)
    header_labels = struct.pack(">II", 0x801, len(labels))
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header_images + pixels)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header_labels + labels.to(torch.uint8).numpy().tobytes())


def data_path_rates(batch: int, workdir: Path, min_seconds: float = 3.0) -> dict[str, float]:
    import torchvision.datasets as tvd
    import torchvision.transforms as T
    from torch.utils.data import DataLoader

    from dcgan_lab.data.datamodule import UInt8Images, _keep_batch, fit_to_size
    from dcgan_lab.data.sources import mnist_mini

    images, labels = mnist_mini("train")

    def rate(loader, prepare) -> float:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < min_seconds:
            for x, _ in loader:
                count += len(prepare(x))
        return count / (time.perf_counter() - started)

    in_memory = DataLoader(UInt8Images(fit_to_size(images, 32), labels), batch_size=batch, shuffle=True,
                           drop_last=True, collate_fn=_keep_batch)
    write_idx_mnist(workdir / "tv", images, labels)
    transform = T.Compose([T.Pad(2), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    pil = DataLoader(tvd.MNIST(str(workdir / "tv"), train=True, download=False, transform=transform),
                     batch_size=batch, shuffle=True, drop_last=True)
    return {"in_memory_uint8": rate(in_memory, to_float), "torchvision_pil": rate(pil, lambda x: x)}


# ---- real-statistics cache -----------------------------------------------------------------------
def reference_cache_times(workdir: Path) -> dict[str, float] | None:
    """Time spent on real data by a first and a second evaluation of the same dataset (cold vs cached)."""
    try:
        from dcgan_lab.metrics.suite import MetricSuite
    except ImportError:
        return None
    cfg = compose_run_config(workdir / "ref", [f"paths.cache_dir={workdir / 'refcache'}"])
    datamodule = instantiate(cfg.dataset)
    times = []
    for _ in range(2):  # two evaluations, as two runs of a sweep would do them
        suite = MetricSuite(cfg.get("metrics"), datamodule, workdir / "refcache")
        suite.classifier()  # trained once and cached: not real-data statistics, not timed
        started = time.perf_counter()
        suite.classifier_reference()
        times.append(time.perf_counter() - started)
    return {"first_s": times[0], "second_s": times[1]}


def inception_rates(device: torch.device, cache_dir: Path) -> dict:
    """Inception feature extraction before (torch-fidelity's extractor as the lab ran it) vs the lab's path now,
    on the same images and weights (benchmarks/inception_bench.py); a dict with "error" if no weights can be had."""
    from benchmarks.inception_bench import inception_speed

    try:
        return inception_speed(str(device), n_images=1000 if device.type == "cuda" else 64, cache_dir=cache_dir)
    except Exception as error:  # offline with no registry access, torch-fidelity missing: the rest still counts
        return {"error": f"{type(error).__name__}: {str(error)[:200]}"}


# ---- the report ----------------------------------------------------------------------------------
# The two sizes the targets are set at: the default (mnist_mini 32x32, batch 64) and 64x64 at batch 128.
CONFIGS = {
    "32px_bs64": [],
    "64px_bs128": ["dataset.image_size=64", "dataset.batch_size=128"],
}
PATH_LABELS = {
    "plain_fp32_eager": "plain loop, fp32 eager",
    "plain_bf16_channels_last": "plain loop, bf16 + channels_last",
    "lab_trainer_fp32": "lab Trainer path, callbacks off, fp32 (the plain loop's settings)",
    "lab_default": "lab default configuration",
    "lab_eager": "lab default configuration, eager step (training.cuda_graph=false; = lab default on CPUs)",
    "lab_default_channels_last": "lab default configuration, channels_last G and D (callbacks.channels_last.enabled=true)",
}


def measure_config(name: str, overrides: list[str], device: torch.device, steps: int, warmup: int, rounds: int,
                   workdir: Path) -> dict:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    cfg = compose_run_config(workdir / f"cfg_{name}", overrides)
    images = instantiate(cfg.dataset).split("train").images
    # Without bf16 kernels a bf16 step is many times slower than fp32: a few steps in one round say so, without
    # spending most of the benchmark's time on a path no default takes there.
    slow_bf16 = device.type == "cpu" and not dcgan_lab.cpu_has_bf16_kernels()
    bf16_steps = (max(3, steps // 20), 2) if slow_bf16 else (steps, warmup)
    paths = {
        "plain_fp32_eager": lambda: plain_loop(cfg, images, device, steps, warmup, bf16=False, channels_last=False),
        "plain_bf16_channels_last": lambda: plain_loop(cfg, images, device, *bf16_steps, bf16=True, channels_last=True),
        "lab_trainer_fp32": lambda: lab_run([*overrides, *CALLBACKS_OFF, "trainer.precision=32-true",
                                             f"trainer.accelerator={accelerator}"], steps, warmup, workdir),
        # Metric evaluations are left out: they are timed on their own (metrics/eval_time_s).
        "lab_default": lambda: lab_run([*overrides, "metrics=none", f"trainer.accelerator={accelerator}"], steps, warmup, workdir),
    }
    if device.type == "cuda":  # the same configuration without the captured step (CPUs never capture)
        paths["lab_eager"] = lambda: lab_run([*overrides, "metrics=none", f"trainer.accelerator={accelerator}",
                                              "training.cuda_graph=false"], steps, warmup, workdir)
        # channels_last is the default on CPUs only: this row says what it would do on the GPU, in fp32
        paths["lab_default_channels_last"] = lambda: lab_run([*overrides, "metrics=none", f"trainer.accelerator={accelerator}",
                                                              "callbacks.channels_last.enabled=true"], steps, warmup, workdir)
    # Rounds interleave the paths so a slow patch of the machine hits all of them; each keeps its best round.
    rows, errors = {path: 0.0 for path in paths}, {}
    for round_index in range(rounds):
        for path, measure in paths.items():
            if path in errors or (slow_bf16 and round_index > 0 and path == "plain_bf16_channels_last"):
                continue
            try:
                rows[path] = max(rows[path], measure())
            except Exception as error:  # one broken path must not cost the other measurements (a GPU lease is short)
                errors[path] = f"{type(error).__name__}: {error}"
                rows[path] = float("nan")
                print(f"  {name}: {path} failed: {errors[path]}", flush=True)
    rows.setdefault("lab_eager", rows["lab_default"])
    print(f"  {name}: " + ", ".join(f"{path} {value:.0f}" for path, value in rows.items()) + " img/s", flush=True)
    base = rows["plain_fp32_eager"]
    return {
        "overrides": overrides,
        "image_size": cfg.dataset.image_size,
        "batch_size": cfg.dataset.batch_size,
        "timed_steps": steps,
        **({"bf16_timed_steps": bf16_steps[0]} if slow_bf16 else {}),
        "images_per_s": rows,
        "ratio_to_plain_fp32": {path: value / base for path, value in rows.items()},
        "step_gflop": step_gflop(cfg, images, device),
        **({"errors": errors} if errors else {}),
    }


def run(device_name: str, steps: dict[str, int], warmup: int, rounds: int) -> dict:
    device = torch.device(device_name)
    workdir = Path(tempfile.mkdtemp(prefix="dcgan_bench_"))
    print(f"benchmark on {device_name}: {rounds} interleaved rounds, {warmup} warm-up steps", flush=True)
    configs = {name: measure_config(name, overrides, device, steps[name], warmup, rounds, workdir)
               for name, overrides in CONFIGS.items()}
    cfg = compose_run_config(workdir / "cfg", [])
    data = data_path_rates(cfg.dataset.batch_size, workdir)
    return {
        "device": device_name,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "threads": torch.get_num_threads(),
        **({"cpu_bf16_kernels": dcgan_lab.cpu_has_bf16_kernels()} if device.type == "cpu" else {}),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "rounds": rounds,
        "configs": configs,
        "matmul_peak_gflops": {"fp32": matmul_peak_gflops(device, torch.float32),
                               "bf16": matmul_peak_gflops(device, torch.bfloat16)},
        "data_images_per_s": data,
        "data_ratio": data["in_memory_uint8"] / data["torchvision_pil"],
        "reference_cache": reference_cache_times(workdir),
        "inception": inception_rates(device, Path(cfg.paths.cache_dir)),
    }


def targets(r: dict) -> list[tuple[str, float, bool]]:
    """(what, measured, met) for every target the issues set, on this device."""
    rows = []
    for name, c in r["configs"].items():
        ratio = c["ratio_to_plain_fp32"]
        if r["device"] == "cuda":
            aim = {"32px_bs64": 3.0, "64px_bs128": 1.8}[name]
            rows += [(f"{name}: lab default >= 1.0x plain fp32 eager", ratio["lab_default"], ratio["lab_default"] >= 1.0),
                     (f"{name}: lab default >= {aim}x plain fp32 eager (captured step)", ratio["lab_default"], ratio["lab_default"] >= aim)]
        else:
            rows += [(f"{name}: lab default >= 1.6x plain fp32 eager", ratio["lab_default"], ratio["lab_default"] >= 1.6),
                     (f"{name}: lab Trainer path >= 0.95x the plain loop (fp32, same settings)", ratio["lab_trainer_fp32"],
                      ratio["lab_trainer_fp32"] >= 0.95)]
    rows.append(("in-memory data path >= 20x torchvision PIL", r["data_ratio"], r["data_ratio"] >= 20))
    cache = r["reference_cache"]
    if cache:
        share = cache["second_s"] / cache["first_s"]
        rows.append(("second evaluation < 10% of the first's time on real data", share, share < 0.10))
    inception = r.get("inception", {})
    if "speedup" in inception:
        rows += [("Inception features: lab path faster than torch-fidelity's extractor", inception["speedup"], inception["speedup"] > 1),
                 # Both paths are fp32: each is ~1e-5 from the float64 network (round-off in sums of thousands of terms),
                 # so they differ from each other by about that much too. What must hold is that the fast path adds no
                 # error beyond fp32 round-off: no farther from float64 than twice the old path is.
                 ("Inception features: lab path's distance from the float64 network <= 2x the old fp32 path's",
                  inception["after_vs_float64"] / inception["before_vs_float64"],
                  inception["after_vs_float64"] <= 2 * inception["before_vs_float64"])]
    return rows


def inception_line(i: dict) -> str:
    if "speedup" not in i:
        return f"Inception features: not measured ({i.get('error', 'no result')})."
    return (f"Inception features ({i['n_images']} digits, {i['threads']} threads): {i['before_img_s']:.1f} img/s before "
            f"({i['before']}) vs {i['after_img_s']:.1f} img/s now ({i['after']}): {i['speedup']:.2f}x, features within "
            f"{i['max_abs_feature_diff']:.1e} of the old path's (largest feature {i['max_abs_feature']:.1f}). From the same "
            f"network in float64 ({i['float64_images']} images): old path {i['before_vs_float64']:.1e}, now "
            f"{i['after_vs_float64']:.1e}. Weights md5 {i['weights_md5']}.")


def markdown(r: dict) -> str:
    peak32, peak16 = r["matmul_peak_gflops"]["fp32"], r["matmul_peak_gflops"]["bf16"]
    lines = [
        f"## {r['device']} ({r['device_name']}, {r['threads']} threads; torch {r['torch']}, lightning {r['lightning']})",
        "",
        f"DCGAN (ngf = ndf = 64), BCE, Adam, on mnist_mini; best of {r['rounds']} interleaved rounds per path, all "
        f"measured in this one process. Matmul peak here: {peak32:.0f} GFLOP/s fp32, {peak16:.0f} GFLOP/s bf16.",
    ]
    if r.get("cpu_bf16_kernels") is False:
        lines[-1] += (" This CPU has no bf16 kernels (oneDNN): the lab's default precision here is fp32 "
                      "(`dcgan_lab.fastest_precision`), and the plain bf16 row is a few steps in one round.")
    for name, c in r["configs"].items():
        lines += [
            "",
            f"### {name}: {c['image_size']}x{c['image_size']}, batch {c['batch_size']} ({c['timed_steps']} timed G+D steps"
            + (f", {c['bf16_timed_steps']} in bf16" if "bf16_timed_steps" in c else "") + f", {c['step_gflop']:.2f} GFLOP each)",
            "",
            "| path | img/s | x plain fp32 | achieved GFLOP/s |",
            "|---|---:|---:|---:|",
        ]
        for path, value in c["images_per_s"].items():
            lines.append(f"| {PATH_LABELS[path]} | {value:.0f} | {c['ratio_to_plain_fp32'][path]:.2f} | "
                         f"{value / c['batch_size'] * c['step_gflop']:.0f} |")
        lines += [f"\n{PATH_LABELS[path]} failed: `{error}`" for path, error in c.get("errors", {}).items()]
    data, cache = r["data_images_per_s"], r["reference_cache"]
    lines += ["", f"Data path: {data['in_memory_uint8']:.0f} img/s in-memory uint8 vs {data['torchvision_pil']:.0f} "
              "torchvision PIL." + (f" Reference statistics: {cache['first_s']:.2f} s first, {cache['second_s']:.3f} s cached."
                                    if cache else ""),
              "", inception_line(r.get("inception", {})),
              "", "| target | measured | met |", "|---|---:|:-:|"]
    lines += [f"| {what} | {value:.3g} | {'yes' if met else 'NO'} |" for what, value, met in targets(r)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu,cuda" if torch.cuda.is_available() else "cpu",
                        help="comma-separated: cpu, cuda (default: every device present)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per path (default: GPU 300; CPU 100 at 32px, 15 at 64px)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default=None,
                        help="results file stem (default: the device, cpu or cuda), e.g. to keep another machine's table")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for device in args.device.split(","):
        default_steps = {"32px_bs64": 300, "64px_bs128": 300} if device == "cuda" else {"32px_bs64": 100, "64px_bs128": 15}
        steps = {name: args.steps or n for name, n in default_steps.items()}
        result = run(device, steps, args.warmup, args.rounds)
        table = markdown(result)
        print(table)
        stem = f"{args.name}_{device}" if args.name and "," in args.device else args.name or device
        (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
        (RESULTS / f"{stem}.md").write_text(table)


if __name__ == "__main__":
    main()
