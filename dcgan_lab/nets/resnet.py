"""Residual G and D in the style of SNGAN (Miyato et al. 2018) for any power-of-two image size.

G: z -> linear -> 4x4 -> one up-block per doubling -> norm, act, 3x3 conv -> tanh.
D: one down-block per halving (the first without a leading activation) to 4x4 -> act -> sum-pool -> linear.
Channels follow the DCGAN plan (`width` at S/2, doubling per halving, at most `max_channels`).
Weights keep PyTorch's default init: the residual paths are stable with it, and spectral norm rescales anyway.
"""
from __future__ import annotations

from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn

from dcgan_lab.nets.blocks import ActivationFactory, NormFactory, SelfAttention, channels_at, maybe_spectral, resolutions
from dcgan_lab.nets.conditioning import LabelledSequential, TakesLabels, call_with_labels
from dcgan_lab.nets.contract import DiscriminatorArgs, DiscriminatorBase, GeneratorArgs, GeneratorBase


def residual_channels(resolution: int, image_size: int, width: int, max_channels: int) -> int:
    # The block at full resolution keeps the width of the one at S/2.
    return channels_at(min(resolution, image_size // 2), image_size, width, max_channels)


class UpBlock(TakesLabels):
    """(B, c_in, r, r) -> (B, c_out, 2r, 2r): norm-act-up-conv3-norm-act-conv3, plus up-conv1 shortcut."""

    def __init__(self, c_in: int, c_out: int, norm: NormFactory, activation: ActivationFactory, spectral_norm: bool):
        super().__init__()
        self.norm1, self.act1 = norm(c_in), activation()
        self.conv1 = maybe_spectral(nn.Conv2d(c_in, c_out, 3, 1, 1), spectral_norm)
        self.norm2, self.act2 = norm(c_out), activation()
        self.conv2 = maybe_spectral(nn.Conv2d(c_out, c_out, 3, 1, 1), spectral_norm)
        self.shortcut = maybe_spectral(nn.Conv2d(c_in, c_out, 1), spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act1(call_with_labels(self.norm1, x, labels))
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.conv2(self.act2(call_with_labels(self.norm2, h, labels)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """(B, c_in, 2r, 2r) -> (B, c_out, r, r): [act]-conv3-norm-act-conv3-avgpool, plus conv1-avgpool shortcut.

    The first block of D (`first=True`) sees raw pixels: no activation before its first conv, no norm.
    """

    def __init__(self, c_in: int, c_out: int, norm: NormFactory, activation: ActivationFactory,
                 spectral_norm: bool, first: bool = False, dropout: float = 0.0):
        super().__init__()
        self.pre = nn.Identity() if first else activation()
        self.conv1 = maybe_spectral(nn.Conv2d(c_in, c_out, 3, 1, 1), spectral_norm)
        self.norm = nn.Identity() if first else norm(c_out)
        self.act = activation()
        self.conv2 = maybe_spectral(nn.Conv2d(c_out, c_out, 3, 1, 1), spectral_norm)
        self.shortcut = maybe_spectral(nn.Conv2d(c_in, c_out, 1), spectral_norm)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.act(self.norm(self.conv1(self.pre(x)))))
        return self.dropout(F.avg_pool2d(h, 2) + F.avg_pool2d(self.shortcut(x), 2))


class ResNetGenerator(GeneratorBase):
    """z (B, latent_dim) -> image (B, channels, S, S) in [-1, 1]."""

    default_conditioning = "cbn"  # SNGAN/BigGAN condition G through its norms

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, attention: bool = False,
                 attention_res: int = 16, spectral_norm: bool = False, max_channels: int = 512,
                 **contract: Unpack[GeneratorArgs]):
        super().__init__(**contract)
        norm, image_size = self.label_norm(norm), self.image_size

        def ch(r: int) -> int:
            return residual_channels(r, image_size, width, max_channels)

        # (B, Z [+E]) -> (B, ch4, 4, 4)
        self.stem = nn.Sequential(
            maybe_spectral(nn.Linear(self.trunk_input_dim, ch(4) * 16), spectral_norm),
            nn.Unflatten(1, (ch(4), 4, 4)),
        )
        blocks: list[nn.Module] = []
        if attention and attention_res == 4:
            blocks.append(SelfAttention(ch(4), spectral_norm))
        for r in resolutions(image_size)[1:]:
            blocks.append(UpBlock(ch(r // 2), ch(r), norm, activation, spectral_norm))  # (B, ., r/2) -> (B, ., r)
            if attention and r == attention_res:
                blocks.append(SelfAttention(ch(r), spectral_norm))
        # (B, ch_S, S, S) -> (B, channels, S, S)
        blocks += [norm(ch(image_size)), activation(),
                   maybe_spectral(nn.Conv2d(ch(image_size), self.channels, 3, 1, 1), spectral_norm), nn.Tanh()]
        self.body = LabelledSequential(*blocks)

    def trunk(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.body(self.stem(h), labels)


class ResNetDiscriminator(DiscriminatorBase):
    """image (B, channels, S, S) -> logits (B,); with_features=True also returns the pooled features (B, F)."""

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, attention: bool = False,
                 attention_res: int = 16, spectral_norm: bool = True, dropout: float = 0.0, max_channels: int = 512,
                 **contract: Unpack[DiscriminatorArgs]):
        super().__init__(**contract)
        image_size = self.image_size

        def ch(r: int) -> int:
            return residual_channels(r, image_size, width, max_channels)

        blocks: list[nn.Module] = [
            DownBlock(self.in_channels, ch(image_size // 2), norm, activation, spectral_norm, first=True, dropout=dropout)
        ]
        if attention and attention_res == image_size // 2:
            blocks.append(SelfAttention(ch(image_size // 2), spectral_norm))
        for r in reversed(resolutions(image_size)[:-2]):
            blocks.append(DownBlock(ch(2 * r), ch(r), norm, activation, spectral_norm, dropout=dropout))  # 2r -> r
            if attention and r == attention_res:
                blocks.append(SelfAttention(ch(r), spectral_norm))
        blocks.append(activation())
        self.features = nn.Sequential(*blocks)
        self.end_with_head(ch(4), spectral_norm)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).sum(dim=(2, 3))  # (B, ch4, 4, 4) -> (B, ch4): the head reads the pooled features
