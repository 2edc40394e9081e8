"""The DCGAN discriminator: strided convs down to 4x4, one logit per image, no sigmoid."""
from __future__ import annotations

from typing import Unpack

import torch
from torch import nn

from dcgan_lab.nets.blocks import ActivationFactory, NormFactory, SelfAttention, channels_at, dcgan_init, maybe_spectral, resolutions
from dcgan_lab.nets.contract import DiscriminatorArgs, DiscriminatorBase


class Discriminator(DiscriminatorBase):
    """image (B, channels, S, S) -> logits (B,); with_features=True also returns the 4x4 map flattened (B, 16 c4;
    16 (c4 + 1) with minibatch_std)."""

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, attention: bool = False,
                 attention_res: int = 16, spectral_norm: bool = False, dropout: float = 0.0,
                 max_channels: int = 512, **contract: Unpack[DiscriminatorArgs]):
        super().__init__(**contract)
        image_size = self.image_size
        c_first = channels_at(image_size // 2, image_size, width, max_channels)
        # DCGAN convention: no norm on the first layer, it would fix the input's scale.
        # (B, channels, S, S) -> (B, width, S/2, S/2)
        layers: list[nn.Module] = [maybe_spectral(nn.Conv2d(self.in_channels, c_first, 4, 2, 1), spectral_norm), activation()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        if attention and attention_res == image_size // 2:
            layers.append(SelfAttention(c_first, spectral_norm))
        for r in reversed(resolutions(image_size)[:-2]):
            c_in, c_out = channels_at(2 * r, image_size, width, max_channels), channels_at(r, image_size, width, max_channels)
            # (B, c_in, 2r, 2r) -> (B, c_out, r, r)
            layers += [maybe_spectral(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), spectral_norm), norm(c_out), activation()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            if attention and r == attention_res:
                layers.append(SelfAttention(c_out, spectral_norm))
        self.features = nn.Sequential(*layers)
        # The head reads the whole 4x4 map: (B, c4, 4, 4) -> (B, 1, 1, 1)
        c4 = channels_at(4, image_size, width, max_channels)
        head = maybe_spectral(nn.Conv2d(self.head_features(c4), 1, 4, 1, 0), spectral_norm)
        self.end_with_head(c4, spectral_norm, head=head, init=dcgan_init)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, c4, 4, 4)
