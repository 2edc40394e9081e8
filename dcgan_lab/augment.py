"""Augmentations on batches of images in [-1, 1], on the batch's device.

RealAugment changes the data G learns (random crop, flip, colour jitter of real images only).
DiffAugment (Zhao et al. 2020) is applied to real AND fake images right before D and is differentiable,
so G is trained through it; D never sees an un-augmented image and G is not pushed to imitate the
augmentations. Both are callables `images -> images` that GANModule receives from the `augment` config group.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dcgan_lab.errors import ConfigError

DIFF_OPS = ("color", "translation", "cutout")


def policy_ops(policy) -> list[str]:
    """The ops a DiffAugment policy names, in order: a comma string ("color,translation") or a list of names."""
    if isinstance(policy, str):
        return [op.strip() for op in policy.split(",") if op.strip()]
    return list(policy)


def policy_problem(policy) -> str | None:
    """None when `policy` names DiffAugment ops only, else what it must be (the end of one line; schema.py and
    DiffAugment's constructor ask this one check)."""
    is_list = isinstance(policy, (list, tuple)) and all(isinstance(op, str) for op in policy)
    unknown = [op for op in policy_ops(policy) if op not in DIFF_OPS] if isinstance(policy, str) or is_list else [policy]
    if not unknown:
        return None
    return (f"must be DiffAugment ops from {', '.join(DIFF_OPS)} ({', '.join(map(repr, unknown))} "
            f"{'is' if len(unknown) == 1 else 'are'} not among them), as a list or a comma string")


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    """(B,) uniform [0, 1) numbers shaped (B, 1, 1, 1)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def random_brightness(x: torch.Tensor, strength: float = 0.5) -> torch.Tensor:
    # + U(-strength, strength) per image. DiffAugment's 0.5 is on the [-1, 1] images D sees: its reference code
    # (mit-han-lab/data-efficient-gans) adds rand - 0.5 to StyleGAN2's and BigGAN's [-1, 1] inputs.
    return x + strength * 2 * (_per_sample(x) - 0.5)


def random_saturation(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    # (x - channel mean) * U(0, 2) + channel mean; a no-op on one-channel images
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (1 + strength * 2 * (_per_sample(x) - 0.5)) + mean


def random_contrast(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    # (x - image mean) * U(0.5, 1.5) + image mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (1 + strength * (_per_sample(x) - 0.5)) + mean


def random_translation(x: torch.Tensor, ratio: float = 0.125, fill: float = 0.0) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels in x and y; uncovered pixels get `fill` (0 = mid grey: DiffAugment
    pads with zeros, as its cutout fills)."""
    b, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (b, 1, 1), device=x.device)
    return shift(x, dy, dx, fill)


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, fill: float = -1.0) -> torch.Tensor:
    """out[b, :, i, j] = x[b, :, i - dy[b], j - dx[b]] (fill outside), via gather: differentiable in x."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy.view(b, 1, 1)  # (B, H, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx.view(b, 1, 1)  # (B, 1, W)
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # (B, 1, H, W)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    moved = x.flatten(2).gather(2, index).view(b, c, h, w)
    return torch.where(inside, moved, torch.full_like(moved, fill))


def random_cutout(x: torch.Tensor, ratio: float = 0.5, fill: float = 0.0) -> torch.Tensor:
    """Set one square of ratio * size per image, at a random centre, to `fill` (0 = mid grey, as DiffAugment)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    top, left = cy - ch // 2, cx - cw // 2  # the square may hang over the border, as in DiffAugment
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = ((rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)).unsqueeze(1)  # (B, 1, H, W)
    return torch.where(hole, torch.full_like(x, fill), x)


class DiffAugment:
    """Differentiable augmentation policy, e.g. DiffAugment("color,translation,cutout") or DiffAugment(["color"])."""

    def __init__(self, policy: str | list[str] = "color,translation,cutout", translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5):
        policy = policy if isinstance(policy, str) else list(policy)  # Hydra passes a list as a ListConfig
        if (problem := policy_problem(policy)) is not None:
            raise ConfigError(f"augment.diff.policy={policy!r} {problem}.")
        available = {
            "color": lambda x: random_contrast(random_saturation(random_brightness(x, 0.5))),
            "translation": lambda x: random_translation(x, translation_ratio),
            "cutout": lambda x: random_cutout(x, cutout_ratio),
        }
        self.ops = [available[op] for op in policy_ops(policy)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x


class RealAugment:
    """Classic data augmentation of real images: pad-and-crop, horizontal flip, brightness/contrast jitter."""

    def __init__(self, crop_padding: int = 0, flip: bool = False, brightness: float = 0.0, contrast: float = 0.0,
                 clamp: bool = True):
        self.crop_padding, self.flip = crop_padding, flip
        self.brightness, self.contrast = brightness, contrast
        self.clamp = clamp  # False: the consistency term's T, which moves images D was shown without clipping them

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.crop_padding:
            # a random crop of the image padded by crop_padding (edge pixels repeated) is a shifted view
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p), mode="replicate")
            dy = torch.randint(0, 2 * p + 1, (b,), device=x.device)
            dx = torch.randint(0, 2 * p + 1, (b,), device=x.device)
            x = shift(padded, -dy, -dx)[:, :, : x.shape[2], : x.shape[3]]
        if self.flip:
            flipped = torch.rand(b, 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flipped, x.flip(3), x)
        if self.brightness:
            x = random_brightness(x, self.brightness)  # + U(-brightness, brightness)
        if self.contrast:
            x = random_contrast(x, 2 * self.contrast)  # factor U(1 - contrast, 1 + contrast)
        return x.clamp(-1, 1) if self.clamp else x
