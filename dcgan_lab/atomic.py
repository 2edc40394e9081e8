"""Files that are whole or absent: write to a temp file beside the target, then rename over it.

`os.replace` is atomic on POSIX, so a reader (a report, a resumed run, the next job of a sweep) sees the old
file or the new one, never half of one, and a run killed mid-write leaves no partial result behind.
A process killed between the two steps leaves its temp file (`.<stem>.<pid>.tmp<suffix>`) behind;
`remove_stale_temp_files` clears those of writers that are gone.
Light on imports: Hydra loads dcgan_lab.sweep (and through it this module) before any job starts.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a hidden temp path beside `path`, with the same suffix (writers that pick the format from it,
    e.g. PNG or .npy, keep working); renamed over `path` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # matches TEMP_NAME
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# The temp names replaced_atomically gives: ".last.4242.tmp.ckpt", ".status.4242.tmp.json", ".epoch_0001.4242.tmp.png"
TEMP_NAME = re.compile(r"\.(?P<stem>.+)\.(?P<pid>\d+)\.tmp(\.[^.]+)?")


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Removes the temp files below `folder` whose writer is gone, and returns them.

    Call it when a process starts in the folder, before it writes there: a temp file carrying this process's
    own pid is then a leftover of an earlier process that had the same pid (common in containers).
    A file whose pid runs another live process is kept: it may be a write in progress.
    """
    removed = []
    for tmp in sorted(Path(folder).rglob(".*.tmp*")):
        match = TEMP_NAME.fullmatch(tmp.name)
        if match is None or not tmp.is_file():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or not _is_running(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_text_atomically(text: str, path: str | os.PathLike) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def torch_save_atomically(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with replaced_atomically(path) as tmp:
        torch.save(obj, tmp)
