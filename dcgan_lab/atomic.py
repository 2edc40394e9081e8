"""Files that are whole or absent: write to a temp file beside the target, then rename over it.

`os.replace` is atomic on POSIX, so a reader (a report, a resumed run, the next job of a sweep) sees the old
file or the new one, never half of one, and a run killed mid-write leaves no partial result behind.
Light on imports: Hydra loads dcgan_lab.sweep (and through it this module) before any job starts.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a hidden temp path beside `path`, with the same suffix (writers that pick the format from it,
    e.g. PNG or .npy, keep working); renamed over `path` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(text: str, path: str | os.PathLike) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def torch_save_atomically(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with replaced_atomically(path) as tmp:
        torch.save(obj, tmp)
