"""Checkpoint files that are whole or absent, and one-line errors for checkpoints that do not fit.

A checkpoint is written to a temp file in the same folder, flushed to disk, then renamed over the
target with `os.replace` (atomic on POSIX): a run killed mid-save, or a full disk, leaves the
previous `last.ckpt` as it was. The Trainer's checkpoints are written in a background thread
(AtomicCheckpointIO): the training loop hands over a point-in-time copy of the tensors and goes on, so a 20-80 MB
serialise + write + fsync every few epochs does not stall it (on a GPU the copy goes to pinned host memory behind
the queued steps, no wait; the writer thread waits for it, and never touches the device).

One reader, `read_checkpoint`, opens every checkpoint the lab reads (training's resume, the Trainer's own
restore through AtomicCheckpointIO, evaluate.py): `torch.load(weights_only=True)` accepts tensors and plain
data only, so a checkpoint that carries a pickled object is refused before any of its code can run.
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import re
import warnings
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from dcgan_lab.atomic import replaced_atomically
from dcgan_lab.errors import ConfigError, DataError, LabError

# "No space left on device", "Disk quota exceeded", "File too large" (a ulimit -f): all mean "no room".
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class CheckpointWriteError(LabError):
    pass


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` through a temp file + fsync + os.replace; on failure the old file is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialise first: a pickling error never touches the disk
    try:
        with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in NO_ROOM:
            size_mb = buffer.getbuffer().nbytes / 2**20
            if path.exists():
                kept = f"the previous {path.name} is intact"
            elif (path.parent / "last.ckpt").exists():
                kept = f"{path.name} was not written and the previous last.ckpt is intact"
            else:
                kept = f"no {path.name} was written"
            raise CheckpointWriteError(
                f"no room to write checkpoint {path} ({size_mb:.1f} MB: {os.strerror(exc.errno)}); {kept}. "
                "Free disk space (or point hydra.run.dir at a larger disk) and resume with resume=true"
            ) from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable across a power loss (no-op where directories cannot be opened).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A point-in-time copy on the host: a CUDA tensor is copied into pinned memory behind the work already queued
    (no wait: read it after an event recorded later has completed); a CPU tensor is cloned."""
    tensor = tensor.detach()
    return tensor.to("cpu", non_blocking=True) if tensor.is_cuda else tensor.clone()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO plugin: every checkpoint the Trainer writes goes through `atomic_torch_save`, in
    one background thread (writes land in the order they were asked for).

    `save_checkpoint` returns once the checkpoint's tensors are copied or on their way (`host_copy`: a
    point-in-time copy on the host; training goes on updating the weights in place). A write that fails is
    raised on the training thread at the next batch (RaiseFailedCheckpointWrites), the next save, `wait()` or
    the end of fit; writes queued behind it are dropped, so the file it would have replaced stays the last
    whole one. Whoever reads a checkpoint this run wrote calls `wait_for_checkpoint_writes(trainer)` first.
    """

    def __init__(self):
        super().__init__()
        _WRITERS.add(self)
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._failed = False  # a write failed: the writes queued behind it are dropped (for good)
        self._failure: BaseException | None = None  # its error, until raised on the training thread

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        self.raise_failed_write()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, host_copy)
        landed = None
        if torch.cuda.is_initialized():  # some tensors may be CUDA ones: their copies land behind this event
            landed = torch.cuda.Event()
            landed.record()  # after every copy above, on the stream the training runs on
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending = [f for f in self._pending if not f.done()] + [self._writer.submit(self._write, snapshot, path, landed)]

    def _write(self, checkpoint: dict[str, Any], path, landed: torch.cuda.Event | None = None) -> None:
        if self._failed:  # a write before this one failed: keep the files as they are
            return
        try:
            if landed is not None:
                landed.synchronize()  # this thread waits for the copies, the training thread does not
            atomic_torch_save(checkpoint, path)
        except BaseException as exc:  # handed to the training thread
            self._failed, self._failure = True, exc

    def raise_failed_write(self) -> None:
        """Raise the error of a background write that failed (once)."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def wait(self) -> None:
        """Block until every checkpoint asked for is on disk; raise the error of one that failed."""
        for pending in self._pending:
            pending.result()
        self._pending = []
        self.raise_failed_write()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def remove_checkpoint(self, path) -> None:
        self.wait()  # never delete a file a queued write is about to (re)create
        super().remove_checkpoint(path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # The Trainer restores through the same safe reader as everything else (on the CPU: Lightning moves
        # the weights and optimizer states to the device when it loads them).
        self.wait()
        return read_checkpoint(path)


_WRITERS: weakref.WeakSet[AtomicCheckpointIO] = weakref.WeakSet()  # every writer of this process


def wait_for_all_checkpoint_writes() -> None:
    """Every checkpoint any Trainer of this process asked for is on disk (for readers with no Trainer at hand)."""
    for writer in list(_WRITERS):
        writer.wait()


def _checkpoint_writer(trainer: L.Trainer) -> AtomicCheckpointIO | None:
    checkpoint_io = trainer.strategy.checkpoint_io
    return checkpoint_io if isinstance(checkpoint_io, AtomicCheckpointIO) else None


def wait_for_checkpoint_writes(trainer: L.Trainer) -> None:
    """Every checkpoint this Trainer asked for is on disk (call before reading one of them)."""
    if (writer := _checkpoint_writer(trainer)) is not None:
        writer.wait()


class RaiseFailedCheckpointWrites(L.Callback):
    """Stops training at the batch after a background checkpoint write failed, with that write's one-line error
    (a full disk: CheckpointWriteError), rather than at the next save epochs later."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (writer := _checkpoint_writer(trainer)) is not None:
            writer.raise_failed_write()


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint as a dict, or one line saying why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; pass the path of a .ckpt file (e.g. <run>/checkpoints/last.ckpt)")
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it does not expect: the line below says it
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL (\S+)", str(exc))
        if unsafe:
            raise DataError(
                f"refusing checkpoint {path}: it holds a pickled Python object ({unsafe.group(1)}), not only tensors "
                "and plain data, and opening it would run that object's code; use checkpoints written by this lab"
            ) from None
        raise DataError(f"cannot read checkpoint {path} (not a torch file); it is truncated or not a checkpoint") from None
    except Exception as exc:  # truncated zip, not a torch file: all "unreadable"
        raise DataError(f"cannot read checkpoint {path} ({_unreadable_because(exc)}); it is truncated or not a checkpoint") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DataError(f"{path} is not a Lightning checkpoint of this lab (no state_dict)")
    return checkpoint


def g_steps_done(checkpoint: dict, n_critic: int) -> int:
    """The G steps a checkpoint has trained: Lightning's global_step counts every optimizer step, D's and G's."""
    return checkpoint.get("global_step", 0) // (n_critic + 1)


def _unreadable_because(exc: Exception) -> str:
    """The first sentence of torch's reason ("PytorchStreamReader failed reading zip archive: failed finding central
    directory"), without its advice to file a bug; "not a torch file" where torch's says nothing (a text file's
    first byte read as a pickle opcode: `KeyError: 101`)."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return first[:160] if isinstance(exc, RuntimeError) and first else "not a torch file"


def _listing(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def check_architecture(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise one ConfigError naming the keys that differ between `model` and a checkpoint's state_dict."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    resized = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if not (missing or unexpected or resized):
        return
    parts = []
    if resized:
        k = resized[0]
        parts.append(f"shape differs for {_listing(resized)} (e.g. {k}: checkpoint {list(found[k])} vs model {list(expected[k])})")
    if missing:
        parts.append(f"missing from checkpoint: {_listing(missing)}")
    if unexpected:
        parts.append(f"not in this model: {_listing(unexpected)}")
    raise ConfigError(
        f"checkpoint {source} was saved from a different architecture: {'; '.join(parts)}. "
        "Use the overrides the checkpoint was trained with (its run folder's config.yaml)"
    )


# ---- optimizer settings on resume ----------------------------------------------------------------
# GANModule.configure_optimizers returns [D's, G's]: the order of a checkpoint's optimizer and schedule states.
OPTIMIZED_NETWORKS = ("discriminator", "generator")


def _plain(value):
    """A config value as plain data (Hydra may hand over a ListConfig), sequences as lists, for comparing."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else value


def optimizer_setting_changes(checkpoint: dict, configured: dict[str, Any], source: str) -> list[tuple[str, str, Any, Any]]:
    """(network, setting, saved value, configured value) for each optimizer setting this run changes against the
    run that saved `checkpoint` (its `lab_config`); `configured`: {network: the run's optimizer partial}.

    Lightning restores an optimizer's saved settings over the configured ones, so without this a resume with
    optimizer.lr_g=5e-5 would train on at the old rate while config.yaml says 5e-5. Another kind of optimizer
    cannot take the saved state at all: one ConfigError line.
    """
    saved_config = (checkpoint.get("lab_config") or {}).get("optimizer") or {}
    changes = []
    for network in OPTIMIZED_NETWORKS:
        saved, wanted = saved_config.get(network), configured[network]
        if not isinstance(saved, dict):  # a checkpoint from before lab_config: nothing to compare with
            continue
        saved_kind = str(saved.get("_target_", "")).rsplit(".", 1)[-1]  # a name only: nothing from the file is imported
        if saved_kind != wanted.func.__name__:
            raise ConfigError(
                f"checkpoint {source} was trained with {saved_kind} for the {network}, and this run builds "
                f"{wanted.func.__name__}: one optimizer's state does not carry over to another. Resume with the "
                "checkpoint's optimizer (its run folder's config.yaml), or start a new run")
        saved_settings = {k: _plain(v) for k, v in saved.items() if not k.startswith("_")}
        wanted_settings = {k: _plain(v) for k, v in wanted.keywords.items()}
        for key in sorted(saved_settings.keys() | wanted_settings.keys()):
            if key in wanted_settings and saved_settings.get(key) != wanted_settings[key]:
                changes.append((network, key, saved_settings.get(key), wanted_settings[key]))
    return changes


def apply_optimizer_settings(checkpoint: dict, changes: list[tuple[str, str, Any, Any]]) -> None:
    """Write the configured settings into the checkpoint's optimizer states (before Lightning restores them).

    A learning rate is rescaled, not replaced: the saved rate already carries the schedule's progress and any
    divergence-guard cuts, so lr_new_saved = lr_saved * lr_configured / lr_saved_config, and so are the schedule's
    base rates. Every other setting (betas, weight decay, momentum, ...) is set as configured.
    """
    states, schedules = checkpoint.get("optimizer_states") or [], checkpoint.get("lr_schedulers") or []
    for network, key, saved, wanted in changes:
        index = OPTIMIZED_NETWORKS.index(network)
        if index >= len(states):
            continue
        rescale = key == "lr" and isinstance(saved, (int, float)) and saved > 0
        for group in states[index]["param_groups"]:
            if rescale:
                for name in ("lr", "initial_lr"):
                    if name in group:
                        group[name] = group[name] * wanted / saved
            else:
                group[key] = tuple(wanted) if isinstance(wanted, list) else wanted
        if rescale and index < len(schedules):
            for name in ("base_lrs", "_last_lr"):
                if name in schedules[index]:
                    schedules[index][name] = [lr * wanted / saved for lr in schedules[index][name]]
