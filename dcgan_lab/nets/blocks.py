"""Building blocks shared by every generator and discriminator: norms, attention, channel plans."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

NormFactory = Callable[[int], nn.Module]
ActivationFactory = Callable[[], nn.Module]


# Norm factories take the channel count; the config names one of them with `_partial_: true`.
def batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def layer_norm(channels: int) -> nn.Module:
    # LayerNorm over (C, H, W) for conv features is GroupNorm with a single group.
    return nn.GroupNorm(1, channels)


def instance_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(channels, channels)


def group_norm(channels: int, groups: int = 8) -> nn.Module:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def no_norm(channels: int) -> nn.Module:
    return nn.Identity()


def maybe_spectral(layer: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if enabled else layer


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def resolutions(image_size: int) -> list[int]:
    """4, 8, ..., image_size."""
    return [2**k for k in range(2, int(math.log2(image_size)) + 1)]


def channels_at(resolution: int, image_size: int, width: int, max_channels: int) -> int:
    # DCGAN doubles the width each time the resolution halves: `width` channels at image_size/2.
    return min(width * image_size // (2 * resolution), max_channels)


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * softmax(Q K^T) V, gamma starts at 0."""

    def __init__(self, channels: int, spectral_norm: bool = False):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = maybe_spectral(nn.Conv2d(channels, inner, 1, bias=False), spectral_norm)
        self.key = maybe_spectral(nn.Conv2d(channels, inner, 1, bias=False), spectral_norm)
        self.value = maybe_spectral(nn.Conv2d(channels, channels, 1, bias=False), spectral_norm)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (B, C', H, W) -> (B, 1, HW, C'): one head over all positions
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)
        # SAGAN uses unscaled dot products; scale=1 keeps that.
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


class MinibatchStddev(nn.Module):
    """(B, C, H, W) -> (B, C + 1, H, W), or (B, F) -> (B, F + 1): appends the std over the batch, averaged over
    features and positions (Karras et al. 2018, sec. 3): one number per batch that lets D see a batch without
    variety (a collapsing G)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # sqrt(var + eps), not std(): where a feature is the same across the batch (common in bf16), std's
        # gradient is 0/0 = NaN, and the gradient penalty's double backward carries it into D's weights.
        std = torch.sqrt(x.float().var(dim=0, unbiased=False) + 1e-8).mean().to(x.dtype)
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral = hasattr(m, "parametrizations")
            if spectral:  # spectral norm's u, v were estimated for the weight it wrapped: unwrap, re-init, wrap again
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            nn.init.normal_(m.weight, 0.0, 0.02)
            maybe_spectral(m, spectral)  # 15 power iterations on the new weight (torch's spectral_norm)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

