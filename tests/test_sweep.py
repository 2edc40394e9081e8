"""Named sweeps compose, a failed job is recorded and never stops a sweep, and a real multirun ends in a report
with one W&B offline run per job (grouped by sweep, tagged with its overrides)."""
import csv
import json
import os
import re
import statistics
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import open_dict, read_write

from dcgan_lab.module import GANModule
from dcgan_lab.pipeline import main
from dcgan_lab.report import build_report
from dcgan_lab.run_folder import read_status
from dcgan_lab.runs import read_metrics
from dcgan_lab.sweep import sweep_return
from tests.conftest import FAST, ROOT, compose_config, run_cli
from tests.wandb_records import offline_run

# Ablation sweeps: a grid of named variants (conf/ablation) x seeds. optuna_lr is a search, tested below.
SWEEPS = sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml") if "ablation:" in p.read_text())


def sweep_params(name: str) -> dict[str, list[str]]:
    params = yaml.safe_load((ROOT / "conf" / "sweep" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    return {key: str(values).split(",") for key, values in params.items()}


def test_the_named_sweeps_exist():
    assert {"mnist_ablation", "arch_ablation", "stabilizers", "losses"} <= set(SWEEPS)
    assert sweep_params("mnist_ablation")["ablation"] == ["baseline", "beta1_0.3", "lr_1e-4", "hinge"]
    assert sweep_params("losses")["ablation"] == ["baseline", "hinge", "lsgan", "wgan_gp", "ragan", "ralsgan"]
    assert all(len(sweep_params(name)["seed"]) >= 2 for name in SWEEPS)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_variant_of_every_sweep_composes_and_builds(sweep, tmp_path):
    for variant in sweep_params(sweep)["ablation"]:
        cfg = compose_config(tmp_path / variant, [f"+sweep={sweep}", f"ablation={variant}", "model.ngf=8", "model.ndf=8"])
        assert cfg.hydra.sweeper.params.seed
        assert cfg.hydra.job.config.override_dirname.exclude_keys[0] == "sweep"  # not repeated in every folder name
        instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)


def test_variants_change_what_they_say(tmp_path):
    compose = lambda variant: compose_config(tmp_path, [f"ablation={variant}"])  # noqa: E731
    assert list(compose("beta1_0.3").optimizer.betas) == [0.3, 0.999]
    for loss in ("hinge", "lsgan", "ragan", "ralsgan"):
        assert compose(loss).loss.d._target_ == f"dcgan_lab.losses.{loss}_d", loss
    ttur = compose("ttur").optimizer
    assert (ttur.lr_g, ttur.lr_d) == (1e-4, 4e-4)
    wgan = compose("wgan_gp")
    assert (wgan.training.n_critic, wgan.loss.gp_weight, wgan.loss.d._target_) == (5, 10.0, "dcgan_lab.losses.wasserstein_d")


def as_multirun_job(cfg, sweep_dir: Path):
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(sweep_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_a_failed_job_in_a_sweep_is_recorded_and_does_not_raise(make_cfg, tmp_path, monkeypatch):
    # A crash inside training (a bug, not a config check: the lab's own errors are the next test's): any exception
    # is recorded, and the sweep goes on.
    def crash(self, batch, batch_idx):
        raise RuntimeError("a bug in the step")

    monkeypatch.setattr(GANModule, "training_step", crash)
    cfg = as_multirun_job(make_cfg(), tmp_path / "multirun")
    assert main(cfg) is None
    status = read_status(tmp_path / "run")
    assert status["status"] == "failed"
    assert status["error"] == "RuntimeError: a bug in the step"
    assert "Traceback" in status["traceback"] and "in crash" in status["traceback"]


def test_a_refused_job_in_a_sweep_is_recorded_for_the_report(make_cfg, tmp_path):
    cfg = as_multirun_job(make_cfg("optimizer.lr_d=-1"), tmp_path / "multirun")
    assert main(cfg) is None
    status = read_status(tmp_path / "run")
    assert (status["status"], status["error"]) == ("failed", "ConfigError: optimizer.lr_d=-1 must be > 0 (DCGAN uses 2e-4).")


def test_a_resubmitted_sweep_keeps_its_finished_jobs_as_they_are(make_cfg, tmp_path):
    # README: preempted sweep jobs are resubmitted with resume=true. A job that had finished is left alone (its
    # status.json stays ok with its results), not recorded again as failed or as an empty run.
    main(make_cfg("trainer.limit_train_batches=2"))
    status = (tmp_path / "run" / "status.json").read_bytes()
    cfg = as_multirun_job(make_cfg("trainer.limit_train_batches=2", "resume=true"), tmp_path / "multirun")
    with read_write(cfg.hydra), open_dict(cfg.hydra):  # the sweep's folder given again, as the command must
        cfg.hydra.overrides.hydra = [*cfg.hydra.overrides.hydra, f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    HydraConfig.instance().set_config(cfg)
    assert main(cfg) is None
    assert (tmp_path / "run" / "status.json").read_bytes() == status


def test_a_refused_single_run_records_nothing(make_cfg, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg("optimizer.lr_d=-1"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: optimizer.lr_d=-1 must be > 0 (DCGAN uses 2e-4)."
    assert not (tmp_path / "run").exists()  # not even status.json: nothing that looks like a run


def test_a_single_run_that_failed_while_training_is_recorded_and_reported(make_cfg, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg("optimizer=sgd", "optimizer.lr_d=1e30", "optimizer.lr_g=1e30", "trainer.max_epochs=2"))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: divergence: ")
    status = read_status(tmp_path / "run")
    assert status["status"] == "failed"
    assert status["error"] == "DivergenceError: " + error.removeprefix("error: ")


def test_a_run_that_failed_while_training_is_failed_on_wandb_too(make_cfg, tmp_path):
    # W&B's state comes from the exit code the run finishes with: 0 shows a diverged run as finished, once synced.
    from tests.wandb_records import read_records, the_offline_run

    def exit_code(run_dir: Path) -> int:
        records = [r for r in read_records(the_offline_run(run_dir)[1]) if r.WhichOneof("record_type") == "exit"]
        return records[-1].exit.exit_code

    with pytest.raises(SystemExit):
        main(make_cfg("logger=wandb", "optimizer=sgd", "optimizer.lr_d=1e30", "optimizer.lr_g=1e30"))
    assert read_status(tmp_path / "run")["status"] == "failed"
    offline_run(the_offline_run(tmp_path / "run")[1])  # waits until W&B has written the run out
    assert exit_code(tmp_path / "run") != 0
    main(make_cfg("logger=wandb", run_dir=tmp_path / "ok"))
    offline_run(the_offline_run(tmp_path / "ok")[1])
    assert exit_code(tmp_path / "ok") == 0


@pytest.mark.slow  # over 10 s on 2 cores: make test-slow
def test_real_multirun_with_a_failing_variant_then_report(tmp_path):
    """4 jobs: flip_prob 0.0 (2 seeds, trained) and flip_prob 0.9 (2 seeds, rejected by the config check)."""
    sweep_dir = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    fast = [o for o in FAST if not o.startswith("logger=")]
    result = run_cli(
        ["-m", "+sweep=mnist_ablation", "ablation=baseline", "seed=0,1", "training.flip_prob=0.0,0.9", *fast,
         "trainer.log_every_n_steps=1", "logger=wandb", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"2 of 4 jobs failed; `python -m dcgan_lab.report {sweep_dir}` lists them all." in result.stdout + result.stderr
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    # Folders are named from the overrides, without the sweep name and the run-length settings.
    names = [set(p.name.split(",")) for p in jobs]
    for names_of_job, (seed, flip) in zip(names, (("0", "0.0"), ("0", "0.9"), ("1", "0.0"), ("1", "0.9"))):
        assert {"ablation=baseline", f"seed={seed}", f"training.flip_prob={flip}", "model.ngf=8"} <= names_of_job
        assert not any(n.startswith(("+sweep", "trainer.max_epochs", "trainer.limit_train_batches")) for n in names_of_job)
    ok_jobs = [job for job in jobs if job.name.endswith("flip_prob=0.0")]
    failed_jobs = [job for job in jobs if job.name.endswith("flip_prob=0.9")]
    for job in ok_jobs:
        status = read_status(job)
        assert (status["status"], status["g_steps"]) == ("ok", 4)
        assert 0 < status["train_time_s"] <= status["wall_time_s"]
        assert status["final_metrics"]["loss/d"] == pytest.approx(read_metrics(job / "metrics.csv")["loss/d"][-1][1])
    assert all(read_status(job)["error"].startswith("ConfigError: training.flip_prob=0.9") for job in failed_jobs)

    out = build_report(sweep_dir)
    with open(out["report.csv"]) as handle:
        table = {row["variant"]: row for row in csv.DictReader(handle)}
    assert list(table) == ["training.flip_prob=0.0", "training.flip_prob=0.9"]
    final_loss_d = [read_metrics(job / "metrics.csv")["loss/d"][-1][1] for job in ok_jobs]
    assert float(table["training.flip_prob=0.0"]["loss/d_mean"]) == pytest.approx(statistics.fmean(final_loss_d))
    assert float(table["training.flip_prob=0.0"]["loss/d_std"]) == pytest.approx(statistics.stdev(final_loss_d))
    assert (table["training.flip_prob=0.9"]["ok"], table["training.flip_prob=0.9"]["failed"]) == ("0", "2")
    md = out["report.md"].read_text()
    assert "failed: ConfigError: training.flip_prob=0.9 must be in [0, 0.5)." in md
    assert out["curves.png"].stat().st_size > 0 and out["samples.png"].stat().st_size > 0

    # Measured afterwards (e.g. FID-10k after a CPU sweep): evaluate.py on one job's checkpoint is not enough for
    # the report (its rows would be measured differently); on the sweep folder, every job's last.ckpt, and the
    # report's numbers are evaluate.py's.
    def evaluate_cli(ckpt):
        from dcgan_lab.command_line import quote_paths
        from dcgan_lab.config import compose_run_config
        from dcgan_lab.metrics.checkpoints import evaluate

        overrides = quote_paths([f"ckpt={ckpt}", "metrics.n_samples=64", "metrics.enabled=[clustering]", "figures=false",
                                 "device=cpu"])  # as evaluate.py quotes a job's path (`ablation=baseline,seed=0`)
        return evaluate(compose_run_config(tmp_path, overrides, root_dir=ROOT, config_name="evaluate"))

    evaluate_cli(ok_jobs[0] / "checkpoints" / "last.ckpt")
    md = build_report(sweep_dir)["report.md"].read_text()
    assert (f"evaluate.py measured 1 of the 2 finished jobs' last checkpoints: its numbers are left out, so that every "
            f"row is measured alike (`python evaluate.py ckpt={sweep_dir}` measures every job's last.ckpt).") in md
    assert "cluster/silhouette" not in md
    results = evaluate_cli(sweep_dir)
    assert sorted(results) == [f"{job.name}/last" for job in ok_jobs]
    out = build_report(sweep_dir)
    with open(out["report.csv"]) as handle:
        row = next(r for r in csv.DictReader(handle) if r["variant"] == "training.flip_prob=0.0")
    silhouettes = [json.loads((job / "checkpoints" / "metrics.json").read_text())["last.ckpt"]["cluster/silhouette"]
                   for job in ok_jobs]
    assert float(row["cluster/silhouette_mean"]) == pytest.approx(statistics.fmean(silhouettes))
    assert row["cluster/silhouette_n"] == "2"
    md = out["report.md"].read_text()
    assert "Measured after training by evaluate.py (64 samples per job; `metrics.json` beside each `last.ckpt`), " in md
    assert "`cluster/silhouette`" in md and " | cluster/silhouette | " in md  # named in the line, and a column

    # One W&B offline run per trained job, grouped by sweep, tagged with the job's overrides, full config, summary.
    for job, loss_d in zip(ok_jobs, final_loss_d):
        run_files = list(job.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(run_files) == 1, job
        run = offline_run(run_files[0])
        assert run["group"] == "mnist_ablation-2026-01-01-12-00-00"
        assert run["name"] == job.name
        assert {"ablation=baseline", "training.flip_prob=0.0", "+sweep=mnist_ablation", f"seed={job.name.split('seed=')[1][0]}"} <= set(run["tags"])
        assert json.loads(run["config"]["training"])["flip_prob"] == 0.0
        assert json.loads(run["config"]["seed"]) == int(job.name.split("seed=")[1][0])
        assert json.loads(run["summary"]["last/loss/d"]) == pytest.approx(loss_d)
        assert json.loads(run["summary"]["train_time_s"]) > 0

    # The report joins the jobs' group as one more run (tests/test_dashboards.py checks what it holds).
    from dcgan_lab.report_wandb import report_to_wandb

    report_run = offline_run(next(Path(report_to_wandb(sweep_dir, out)).glob("run-*.wandb")))
    assert (report_run["group"], report_run["name"], report_run["job_type"]) == (run["group"], "report", "report")


@pytest.mark.slow  # a real 4-job sweep: ~22 s
def test_the_report_says_what_an_architecture_change_costs(tmp_path):
    """A real sweep, self-attention against the baseline (2 seeds each): each job logs its networks' cost once, and
    the report's changes cell gives the attention variant's cost against the baseline's, in percent."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "ablation=baseline,self_attention", "seed=0,1", *FAST, f"hydra.sweep.dir={sweep_dir}"],
                     cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    cost = {}
    for job in (p for p in sweep_dir.iterdir() if p.is_dir()):
        with open(job / "metrics.csv") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("cost/g_flops")]
        assert len(rows) == 1 and rows[0]["step"] == "0"  # once, at the run's start
        cost.setdefault(job.name.split(",")[0], []).append({k: float(v) for k, v in rows[0].items() if k.startswith("cost/")})
    base, attention = cost["ablation=baseline"], cost["ablation=self_attention"]
    assert base[0] == base[1] and attention[0] == attention[1]  # a property of the config, not of the seed

    def change(key):
        percent = 100 * (attention[0][key] / base[0][key] - 1)
        return f"{percent:+.0f}%" if abs(percent) >= 10 else f"{percent:+.1f}%"

    assert attention[0]["cost/g_flops"] > base[0]["cost/g_flops"] and attention[0]["cost/d_params"] > base[0]["cost/d_params"]
    md = build_report(sweep_dir)["report.md"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `ablation=self_attention`"))
    expected = (f"cost: FLOPs/image G {change('cost/g_flops')}, D {change('cost/d_flops')}; "
                f"params G {change('cost/g_params')}, D {change('cost/d_params')} |")
    assert expected in row, row
    assert "cost:" not in next(line for line in md.splitlines() if line.startswith("| `ablation=baseline`"))
    assert "`cost:` what the variant's networks cost against the baseline's" in md
    with open(sweep_dir / "report.csv") as handle:
        table = {r["variant"]: r for r in csv.DictReader(handle)}
    assert float(table["ablation=self_attention"]["cost/g_flops_mean"]) == attention[0]["cost/g_flops"]


def test_a_job_returns_its_objective_metric_to_the_sweeper(make_cfg):
    result = {"metrics": {"loss/g": 0.75, "classifier/fid": 12.5}}
    assert sweep_return(make_cfg(), result) is result  # no objective: plain runs and grid sweeps
    assert sweep_return(make_cfg("+objective=classifier/fid"), result) == 12.5
    assert sweep_return(make_cfg("+objective=fid/10k"), result) is None  # never logged: a failed trial
    assert sweep_return(make_cfg("+objective=classifier/fid"), None) is None  # the job failed


def test_optuna_sweep_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_config(tmp_path, ["+sweep=optuna_lr"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert (cfg.objective, cfg.hydra.sweeper.direction) == ("classifier/fid", "minimize")
    assert "objective" in cfg.hydra.job.config.override_dirname.exclude_keys  # 'classifier/fid' would nest folders


@pytest.mark.slow  # a real Optuna sweep: ~20 s on this CPU; test_real_multirun_* keeps a real sweep in the fast suite
def test_real_optuna_study_minimises_the_objective(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "multirun"
    result = run_cli(
        ["-m", "+sweep=optuna_lr", "objective=loss/g", "hydra.sweeper.n_trials=3", *FAST, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    finals = [read_status(p.parent)["final_metrics"]["loss/g"] for p in sweep_dir.rglob("status.json")]
    assert len(finals) == 3
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["best_value"]
    assert best == pytest.approx(min(finals))


def test_launcher_configs(tmp_path):
    local = compose_config(tmp_path, ["hydra/launcher=local"]).hydra.launcher
    assert local._target_.endswith("JoblibLauncher") and local.n_jobs == -1  # one job per core
    slurm = compose_config(tmp_path, ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.gpus_per_node, slurm.tasks_per_node, slurm.partition) == (1, 1, "gpu")


@pytest.mark.slow  # jobs at once through joblib: ~20 s
def test_jobs_running_at_once_report_one_line_per_epoch_instead_of_bars(tmp_path):
    """Two jobs at once (hydra/launcher=local, 2 workers) share one console: each reports a line per epoch named
    after its job, into the console and its own train.log; no tqdm bars to overwrite each other."""
    sweep_dir = tmp_path / "sweep"
    small = ["logger=csv", "model.ngf=8", "model.ndf=8", "dataset.batch_size=16", "trainer.max_epochs=2",
             "trainer.limit_train_batches=3", "metrics=none"]
    result = run_cli(["-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "loss=bce,hinge", *small,
                      f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, timeout=600)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    for loss in ("bce", "hinge"):
        job = next(p for p in sweep_dir.iterdir() if p.is_dir() and f"loss={loss}" in p.name)
        for epoch in (0, 1):
            line = re.search(rf"\[{re.escape(job.name)}\] epoch {epoch} done \({epoch + 1} of 2\), G step {3 * (epoch + 1)}: loss/d=[-\d.e]+, "
                             r"loss/g=[-\d.e]+", console)
            assert line, (loss, epoch, console[-3000:])
            assert line.group(0) in (job / "train.log").read_text()
    assert "Epoch 0:" not in console and "\r" not in console  # no bar, no redraws


# ---- a parallel sweep stopped by a signal (sweep.SweepSummary passes it on; each job records its part) -------------
def test_a_parallel_sweeps_job_that_a_signal_stops_records_it_and_lets_its_worker_go_on(make_cfg, tmp_path):
    """Its exception would make joblib kill the other jobs' workers mid-save: it returns; a sequential sweep's job
    raises, which stops that sweep."""
    import signal

    args = ("trainer.limit_train_batches=6", "+callbacks.interrupt._target_=tests.test_reliability.InterruptAt",
            "+callbacks.interrupt.at_batch=3")
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        for launcher, run in ((["hydra/launcher=local", "hydra.launcher.n_jobs=2"], tmp_path / "parallel"),
                              ([], tmp_path / "sequential")):
            cfg = as_multirun_job(make_cfg(*args, *launcher, run_dir=run), tmp_path / "multirun")
            try:
                if launcher:
                    assert main(cfg) is None
                else:
                    with pytest.raises(SystemExit):
                        main(cfg)
            finally:
                HydraConfig.instance().cfg = None
            status = read_status(run)
            assert (status["status"], status["signal"], status["g_steps"]) == ("interrupted", "SIGINT", 4), launcher
            assert (run / "checkpoints/last.ckpt").is_file()
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def test_a_job_that_a_stopped_parallel_sweep_had_not_started_trains_nothing_and_says_so(make_cfg, tmp_path):
    from dcgan_lab.sweep import STOP_MARKER, sweep_resume_command

    sweep_dir = tmp_path / "multirun"
    sweep_dir.mkdir()
    (sweep_dir / STOP_MARKER).write_text("SIGTERM")  # what SweepSummary writes on the first signal
    cfg = as_multirun_job(make_cfg("hydra/launcher=local", "hydra.launcher.n_jobs=2"), sweep_dir)
    try:
        assert main(cfg) is None
    finally:
        HydraConfig.instance().cfg = None
    status = read_status(tmp_path / "run")
    assert (status["status"], status["signal"], status["not_started"], status["g_steps"]) == ("interrupted", "SIGTERM", True, 0)
    assert status["error"] == (f"not started: SIGTERM stopped the sweep before this job began; continue with "
                               f"{sweep_resume_command(sweep_dir)}")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["status.json"]  # nothing trained or written


@pytest.mark.slow  # two real 4-job parallel sweeps stopped by signals: ~40 s
@pytest.mark.parametrize("signal_name, to_the_group", [("SIGINT", True), ("SIGTERM", False)],
                         ids=["ctrl_c_in_a_terminal", "kill_of_the_sweep_process"])
def test_a_parallel_sweep_stopped_by_a_signal_ends_with_one_line_and_every_job_recorded(tmp_path, signal_name,
                                                                                        to_the_group):
    """Ctrl-C in a terminal reaches the sweep and its workers; `kill` (or `docker stop`) only the sweep's process,
    which passes it on. Either way: no traceback, exit 128 + the signal, no worker left, every job recorded, and
    the sweep's resume command finishes them."""
    import signal
    import subprocess
    import time

    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "seed=0,1,2,3", "trainer.max_epochs=12",
            "trainer.limit_train_batches=10", "metrics=none", "logger=csv", "model.ngf=8", "model.ndf=8",
            f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    console = []
    for line in process.stdout:
        console.append(line)
        if "epoch 1 done" in line:  # both workers are training
            break
    os.killpg(process.pid, getattr(signal, signal_name)) if to_the_group else process.send_signal(getattr(signal, signal_name))
    console.append(process.communicate(timeout=120)[0])
    console = "".join(console)
    assert process.returncode == 128 + getattr(signal, signal_name), console[-3000:]
    assert "Traceback" not in console
    for _ in range(20):  # loky's workers see their parent gone and end within seconds
        left = subprocess.run(["pgrep", "-a", "-g", str(process.pid)], capture_output=True, text=True).stdout
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"workers left behind: {left}"
    statuses = [json.loads((job / "status.json").read_text()) for job in sorted(sweep_dir.glob("*seed=*"))]
    assert len(statuses) == 4 and all(s["status"] in ("ok", "interrupted") for s in statuses)
    running = [s for s in statuses if s["status"] == "interrupted" and not s.get("not_started")]
    assert len(running) == 2  # the two jobs that were training: each saved its batch's checkpoint
    for job in sorted(sweep_dir.glob("*seed=*")):
        status = json.loads((job / "status.json").read_text())
        if status in running:
            assert torch_load_batches(job / "checkpoints/last.ckpt") == status["g_steps"]
    ends = [line for line in console.splitlines() if "the sweep was stopped by" in line]
    assert len(ends) == 1 and ends[0].endswith(
        f"the sweep was stopped by {signal_name}: 0 of 4 jobs finished, 2 interrupted, 2 not started; continue with "
        f"the sweep's command plus resume=true hydra.sweep.dir={sweep_dir}")
    assert not (sweep_dir / ".stopping").exists()
    if to_the_group:  # the sweep's resume command finishes every job
        resumed = run_cli([*args[:-1], f"hydra.sweep.dir={sweep_dir}", "resume=true"], cwd=tmp_path,
                          env={"OMP_NUM_THREADS": "1"})
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert [read_status(job)["g_steps"] for job in sorted(sweep_dir.glob("*seed=*"))] == [120] * 4


def torch_load_batches(path: Path) -> int:
    import torch

    return torch.load(path, weights_only=True)["batches_seen"]

def test_only_a_joblib_launcher_with_several_workers_shares_the_console(tmp_path):
    from dcgan_lab.sweep import jobs_at_once

    assert jobs_at_once() == 1  # no Hydra: a plain train(cfg)
    for overrides, expected in ((["hydra/launcher=local", "hydra.launcher.n_jobs=3"], 3),
                                (["hydra/launcher=gpu"], 4),
                                (["hydra/launcher=local"], os.cpu_count()),  # n_jobs=-1: one per core
                                (["hydra/launcher=local", "hydra.launcher.n_jobs=1"], 1),
                                (["hydra/launcher=slurm"], 1), ([], 1)):
        as_multirun_job(compose_config(tmp_path, overrides), tmp_path)
        try:
            assert jobs_at_once() == expected, overrides
        finally:
            HydraConfig.instance().cfg = None
