"""Reference statistics on disk, keyed by an md5 of everything that changes them.

A changed dataset, split, image size, extractor, weights file or sample count gives a new key, so a
stale file is never reused; files are written to a temp name and moved with os.replace (atomic), so a
killed run or two sweep jobs writing at once never leave a half-written cache. Files are read back with
`torch.load(weights_only=True)` (tensors and plain data only), so NumPy arrays are stored as tensors and
turned back into arrays on reading.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dcgan_lab.atomic import torch_save_atomically

log = logging.getLogger(__name__)


def md5_of(parts: dict) -> str:
    return hashlib.md5(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def tensor_md5(tensor: torch.Tensor) -> str:
    return hashlib.md5(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ReferenceCache:
    """`get(key_parts, compute)`: the stored dict for that key, or compute() stored under it."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir) / "reference_stats"

    def path_for(self, key_parts: dict) -> Path:
        name = str(key_parts.get("what", "stats")).replace("/", "_")
        return self.dir / f"{name}-{md5_of(key_parts)}.pt"

    def get(self, key_parts: dict, compute: Callable[[], dict]) -> dict:
        path = self.path_for(key_parts)
        if path.exists():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                if stored.get("key") == key_parts:
                    log.debug("reference statistics: cache hit %s", path)
                    arrays = set(stored.get("numpy", ()))
                    return {k: v.numpy() if k in arrays else v for k, v in stored["value"].items()}
            except (OSError, RuntimeError, EOFError, KeyError, AttributeError, pickle.UnpicklingError) as exc:
                log.warning("reference statistics at %s unreadable (%s); recomputing", path, type(exc).__name__)
        value = compute()
        arrays = [k for k, v in value.items() if isinstance(v, np.ndarray)]
        stored_value = {k: torch.from_numpy(v) if k in arrays else v for k, v in value.items()}
        torch_save_atomically({"key": key_parts, "value": stored_value, "numpy": arrays}, path)
        log.info("reference statistics cached at %s", path)
        return value
