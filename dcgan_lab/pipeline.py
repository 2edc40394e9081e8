"""train(cfg): build every object from the composed config and fit. Tests call it directly."""
from __future__ import annotations

import logging
import signal
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Checkpoint, ProgressBar
from lightning.pytorch.trainer.states import TrainerStatus
from omegaconf import DictConfig, OmegaConf

from dcgan_lab.atomic import write_text_atomically
from dcgan_lab.callbacks.guard import DivergenceGuard
from dcgan_lab.callbacks.interrupt import StopBeforeTraining
from dcgan_lab.callbacks.progress import EpochLines
from dcgan_lab.checkpoint_io import (AtomicCheckpointIO, RaiseFailedCheckpointWrites, check_architecture, g_steps_done,
                                    optimizer_setting_changes, read_checkpoint)
from dcgan_lab.command_line import refuse
from dcgan_lab.config import inert_overrides, validate
from dcgan_lab.errors import AlreadyFinished, ConfigError, Interrupted, lab_error_behind
from dcgan_lab.loggers import FlushLogsWithCheckpoints, log_run_config, run_csv_logger, summarize_wandb_run
from dcgan_lab.module import GANModule
from dcgan_lab.run_folder import (keep_metrics_on_resume, read_status, refuse_taken_folder, resolve_resume,
                                  run_recorded, writing_into)
from dcgan_lab.runs import final_logged
from dcgan_lab.sweep import folder_not_given, in_multirun, job_name, jobs_at_once, resume_command, sweep_return
from dcgan_lab.terminal import redraws_in_place

log = logging.getLogger(__name__)


def resolved_run_config(cfg: DictConfig) -> dict:
    """The run's config as plain data, without Hydra's own section (that lives in <run>/.hydra/) and without
    the `module` node, which only wires the other groups together."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ("hydra", "module")}


def build(node: DictConfig, **kwargs):
    """hydra.utils.instantiate, with a LabError raised inside a constructor kept as the lab's one-line error."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = lab_error_behind(exc)
        if cause is None:
            raise
        raise cause from None


def build_module(cfg: DictConfig) -> GANModule:
    module = build(cfg.module)
    # Not a constructor argument: Hydra would merge it into the node and instantiate every _target_ inside it.
    module.lab_config = resolved_run_config(cfg)
    return module


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list, **settings) -> L.Trainer:
    """The Trainer of cfg.trainer; `settings` override its values (e.g. enable_progress_bar=False)."""
    # Users count G steps (as GAN papers do); Lightning counts every optimizer step (n_critic D + 1 G).
    max_steps = cfg.trainer.max_steps
    lightning_max_steps = max_steps * (cfg.training.n_critic + 1) if max_steps > 0 else -1
    try:
        return instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers, max_steps=lightning_max_steps,
            # temp file + rename: a kill mid-save never corrupts last.ckpt; written in a background thread
            plugins=[AtomicCheckpointIO()], **settings,
        )
    except InstantiationException as exc:
        # The Trainer's constructor only checks its arguments (trainer.precision=17, trainer.accelerator=gpu on a
        # machine without one): what it refuses is the user's input, one line like the lab's own checks.
        cause = exc.__cause__
        if not isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            raise
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(
            f"Lightning's Trainer refused the trainer settings (conf/trainer, trainer.*): {reason}") from None


def console_form(cfg: DictConfig) -> str:
    """How a run shows its progress: "bar" (a tqdm bar, redrawn in place) or "lines" (log lines, EpochLines).
    `console=auto` gives a terminal or a Jupyter notebook the bar and anything else (a file, a pipe) the lines.
    A sweep job that runs beside others (jobs_at_once() > 1) always gets lines: the jobs' bars would overwrite
    each other."""
    if jobs_at_once() > 1:
        return "lines"
    chosen = cfg.get("console", "auto")
    if chosen == "auto":  # Lightning's bar writes to stdout
        return "bar" if redraws_in_place(sys.stdout) else "lines"
    return chosen


def console_callbacks(cfg: DictConfig, callbacks: list) -> tuple[list, dict]:
    """The run's callbacks and Trainer settings for its console (console_form): the configured progress bar,
    or EpochLines in its place. With `trainer.enable_progress_bar=false` or `callbacks.progress_bar=null`, neither."""
    bars = [c for c in callbacks if isinstance(c, ProgressBar)]
    wanted = bool(bars) and cfg.trainer.get("enable_progress_bar", True)
    if wanted and console_form(cfg) == "bar":
        return callbacks, {}
    others = [c for c in callbacks if not isinstance(c, ProgressBar)]
    lines = [EpochLines(job_name())] if wanted else []
    return others + lines, {"enable_progress_bar": False}


def _route_lightning_logs_to_hydra() -> None:
    """Lightning's lines once, through the root logger (Hydra's console and <run>/train.log handlers).
    `lightning` adds a console handler of its own ("INFO: ..."), and `lightning.pytorch`/`lightning.fabric` add
    one when the root logger has none yet: with Hydra's, every line would be printed twice."""
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NothingForUsers) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_NothingForUsers())
    if not logging.getLogger().hasHandlers():  # no Hydra (a plain script): Lightning's own handlers are the console
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lightning_log = logging.getLogger(name)
        for handler in list(lightning_log.handlers):
            lightning_log.removeHandler(handler)
        lightning_log.propagate = True


def _quiet_third_party_warnings() -> None:
    """Warnings a user can do nothing about (Lightning's own use of an API that torch has deprecated), or that the lab
    answers itself."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    # The EMA copy of G is in eval mode on purpose (nets.ema.make_ema: it is only sampled from); Lightning counts it.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # GANModule lowers the cadence to once an epoch itself, and says so in one line of its own.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval")
    # Resumes: a run folder holds checkpoints only when this run continues it (run_folder.refuse_taken_folder); a
    # resume mid-epoch (Ctrl-C, SIGTERM) continues exactly, since the epoch's data order travels in the checkpoint
    # (ImageDataModule.state_dict); a continuation in a new folder (ckpt_path=<another run>) starts that folder's own
    # best.ckpt, which is what Lightning's "won't be reloaded" means.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")


class _NothingForUsers(logging.Filter):
    """Drops Lightning's lines that tell a user nothing on every run: "💡 Tip: ... try installing ..." (a product the
    lab does not use), and "Loading `train_dataloader` to estimate ..." (the schedule asks how many steps a fit
    plans: Lightning's own bookkeeping)."""

    NOISE = ("💡 Tip", "Loading `train_dataloader` to estimate")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def train(cfg: DictConfig) -> dict:
    """Fit one GAN. Returns the last logged metrics and the run folder. Ctrl-C or SIGTERM before training starts
    stops it at once (StopBeforeTraining); from the fit's start, at a batch's end (SaveOnInterrupt)."""
    cfg = validate(cfg)
    restart = (f"continue with {resume_command(cfg.paths.output_dir)}" if in_multirun()
               else "run the same command again")
    with StopBeforeTraining(restart) as before_training:
        try:
            return _train(cfg, before_training)
        except Interrupted:
            finish_wandb_run(failed=True)  # stopped before the fit: its W&B run (if one began) ends here
            raise


def _train(cfg: DictConfig, before_training: StopBeforeTraining) -> dict:
    _route_lightning_logs_to_hydra()
    _quiet_third_party_warnings()
    for line in inert_overrides(cfg, HydraConfig.get().overrides.task if HydraConfig.initialized() else []):
        log.warning(line)
    output_dir = Path(cfg.paths.output_dir)
    # DDP ranks > 0 re-run this function in the folder rank 0 has already claimed.
    first_process = rank_zero_only.rank == 0
    ckpt_path, resuming_in_place = resolve_resume(cfg, output_dir, check_folder=first_process,
                                                   folder_not_given=folder_not_given())
    before_training.g_steps = None if ckpt_path else 0  # a resumed run's: known once its checkpoint is read
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # Bad data, a checkpoint that does not fit or a logger that cannot work fail here, before anything is
    # written to the run folder.
    datamodule = build(cfg.dataset)
    datamodule.setup("fit")
    module = build_module(cfg)
    for caveat in module.objective.caveats(module.discriminator):
        log.warning(caveat)
    checkpoint = read_checkpoint(ckpt_path) if ckpt_path else None
    if checkpoint is not None:
        before_training.g_steps = g_steps_done(checkpoint, cfg.training.n_critic)
        check_architecture(module, checkpoint["state_dict"], ckpt_path)
        # Another kind of optimizer is refused here, before anything is written; GANModule applies the other changes.
        optimizer_setting_changes(checkpoint, module.optimizer_factories, ckpt_path)
        finishing = refuse_finished(cfg, checkpoint, ckpt_path, read_status(output_dir) if resuming_in_place else None)
    else:
        finishing = False
    run_config = module.lab_config
    loggers = [run_csv_logger(str(output_dir))] + [build(lg) for lg in cfg.logger.values() if lg is not None]
    callbacks, console = console_callbacks(cfg, [instantiate(c) for c in cfg.callbacks.values() if c is not None])
    callbacks.append(FlushLogsWithCheckpoints())  # metrics.csv is always written, and kept up to a resume's checkpoint
    callbacks.append(RaiseFailedCheckpointWrites())  # a checkpoint the background writer could not write stops the run
    callbacks.append(before_training)  # after SaveOnInterrupt: hands the signals over at the fit's start
    if not any(isinstance(c, Checkpoint) for c in callbacks):  # callbacks=none: no checkpoints, not Lightning's own
        console["enable_checkpointing"] = False
    trainer = build_trainer(cfg, callbacks, loggers, **console)  # settings Lightning refuses: before config.yaml
    output_dir.mkdir(parents=True, exist_ok=True)
    if first_process:
        write_text_atomically(OmegaConf.to_yaml(run_config), output_dir / "config.yaml")  # whole, even if stopped
        # The folder holds a run now: the same command with its own hydra.run.dir would be refused.
        before_training.restart = f"start it again with {resume_command(output_dir)}"
    log_run_config(loggers, run_config)
    if resuming_in_place and checkpoint is not None and first_process:
        keep_metrics_on_resume(loggers[0], checkpoint)

    guard = next((c for c in callbacks if isinstance(c, DivergenceGuard)), None)
    failed = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        failed = False
    except Interrupted:  # stopped in Lightning's setup, before training started (StopBeforeTraining)
        raise
    except SystemExit:  # how Lightning ends a fit that Ctrl-C (exit 1) or SIGTERM (SIGTERMException) stopped
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise interruption(trainer, module, output_dir) from None
    finally:
        train_time_s = module.train_time_s  # a resume's earlier parts too, as its checkpoints store it
        finish_wandb_run(output_dir, train_time_s, failed=failed, rollbacks=guard.history if guard is not None else None)
    if 0 < cfg.trainer.max_steps <= module.g_step:  # Lightning's own line names its count of optimizer steps
        log.info("Stopped at trainer.max_steps=%d G steps (%d batches, %d D steps each)",
                 cfg.trainer.max_steps, module.batches_seen, module.n_critic)
    rollbacks = guard.history if guard is not None else []
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if finishing:  # nothing was logged in this process: the final numbers are those logged up to the checkpoint
        metrics = {**final_logged(output_dir / "metrics.csv"), **metrics}
    if rollbacks:
        log.warning("%s", guard.summary(module.g_step))
    metrics["train_time_s"] = train_time_s  # the W&B summary's too
    log.info("Run folder: %s", output_dir)
    return {"output_dir": str(output_dir), "metrics": metrics, "g_steps": module.g_step, "rollbacks": rollbacks}


def interruption(trainer: L.Trainer, module: GANModule, output_dir: Path) -> Interrupted:
    """The run's stop by a signal, with where it can continue from, said once in the log (and by run_folder in
    status.json)."""
    signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
    last = output_dir / "checkpoints" / "last.ckpt"
    then = (f"continue from {last} with {resume_command(output_dir)}" if last.is_file()
            else "no checkpoint was saved: the command starts afresh")
    message = f"interrupted by {signum.name} after G step {module.g_step}; {then}"
    log.warning(message)
    return Interrupted(signum, message, g_steps=module.g_step, train_time_s=module.train_time_s)


def refuse_finished(cfg: DictConfig, checkpoint: dict, source: str, status: dict | None = None) -> bool:
    """One line, before anything is written, for a checkpoint that has already trained all that this run asks
    for: Lightning would stop at once, and the run's status.json and W&B summary would be replaced by an empty one.

    True for the run's own checkpoint when a signal stopped the run after its last batch, in its end-of-training
    work: the fit then only finishes that work. Lightning skips the training loop of a finished checkpoint but
    still ends the fit (on_fit_end: samples/last.png, interpolation.png, progress.gif), and the final metrics are
    the last ones metrics.csv holds up to the checkpoint (the last epoch's evaluation ran before the stop)."""
    epoch_progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    epochs_done = epoch_progress.get("current", {}).get("processed", 0)  # epochs whose end has run
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    g_steps = g_steps_done(checkpoint, cfg.training.n_critic)
    if max_epochs is not None and 0 <= max_epochs <= epochs_done:
        done = f"{epochs_done} epochs, all that trainer.max_epochs={max_epochs} asks for"
        more = f"trainer.max_epochs={2 * max(epochs_done, 1)}"
    elif max_steps is not None and 0 < max_steps <= g_steps:
        done = f"{g_steps} G steps, all that trainer.max_steps={max_steps} asks for"
        more = f"trainer.max_steps={2 * g_steps}"
    else:
        return False
    if status is not None and status.get("status") == "interrupted":  # a signal after the last batch
        log.info("checkpoint %s has already trained %s: the run was interrupted by %s in its end-of-training work; "
                 "nothing is left to train, so this only finishes that work (final metrics, samples/last.png, "
                 "interpolation.png, progress.gif)", source, done, status.get("signal", "a signal"))
        return True
    raise AlreadyFinished(f"checkpoint {source} has already trained {done}: nothing to resume, and the run's results "
                          f"stay as they are; to train on, raise the limit (e.g. {more})")


def finish_wandb_run(output_dir: Path | None = None, train_time_s: float | None = None, failed: bool = False,
                     rollbacks: list[dict] | None = None) -> None:
    """One W&B run per job, so multirun never mixes runs; its summary gets the best and last metrics (and the
    divergence guard's rollbacks). A run that failed finishes with exit code 1: W&B marks it failed (its exit code
    0 would show it as finished)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        if output_dir is not None:
            summarize_wandb_run(wandb.run, output_dir, train_time_s, rollbacks)
        # finish() runs here before the exception reaches W&B's exit hook, so it would record 0: say so.
        wandb.finish(exit_code=1 if failed else 0)


def main(cfg: DictConfig) -> dict | None:
    """CLI entry: a LabError (also one that Hydra's instantiate wrapped) becomes one line on stderr and exit status 2.

    A job that ran writes status.json (ok + times + final metrics, or failed + error), and so does every job of a
    sweep (-m), where a failed job is recorded and the sweep goes on with the others. A single run whose input is
    refused writes nothing (see run_folder.run_recorded).
    """
    output_dir = Path(cfg.paths.output_dir)
    try:
        # DDP ranks > 0 write into the folder rank 0 holds.
        with writing_into(output_dir) if rank_zero_only.rank == 0 else nullcontext():
            # Before anything is recorded: a new run must not write (even status.json) into another run's folder.
            if rank_zero_only.rank == 0:
                refuse_taken_folder(cfg, output_dir)
            return sweep_return(cfg, run_recorded(train, cfg, cfg.paths.output_dir))
    except Exception as exc:
        lab_error = lab_error_behind(exc)
        if lab_error is None:
            raise
        refuse(lab_error)
