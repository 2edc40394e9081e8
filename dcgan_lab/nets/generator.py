"""The DCGAN generator: one class for every image size, built in a loop over resolutions."""
from __future__ import annotations

from typing import Unpack

import torch
from torch import nn

from dcgan_lab.nets.blocks import ActivationFactory, NormFactory, SelfAttention, channels_at, dcgan_init, maybe_spectral, resolutions
from dcgan_lab.nets.conditioning import LabelledSequential
from dcgan_lab.nets.contract import GeneratorArgs, GeneratorBase


class Generator(GeneratorBase):
    """z (B, latent_dim) -> image (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, stem: str = "convtranspose",
                 attention: bool = False, attention_res: int = 16, spectral_norm: bool = False,
                 max_channels: int = 512, **contract: Unpack[GeneratorArgs]):
        super().__init__(**contract)
        norm = self.label_norm(norm)
        image_size, z_in = self.image_size, self.trunk_input_dim
        c4 = channels_at(4, image_size, width, max_channels)

        # Stem: z -> (B, c4, 4, 4). pytorch/examples uses a 4x4 transposed conv on a 1x1 map;
        # the "linear" stem is the FC projection of Radford et al. Both are the same linear map
        # up to parametrisation; the option exists to ablate it.
        if stem == "convtranspose":
            self.stem = nn.Sequential(
                nn.Unflatten(1, (z_in, 1, 1)),
                maybe_spectral(nn.ConvTranspose2d(z_in, c4, 4, 1, 0, bias=False), spectral_norm),
            )
        elif stem == "linear":
            self.stem = nn.Sequential(
                maybe_spectral(nn.Linear(z_in, c4 * 16, bias=False), spectral_norm),
                nn.Unflatten(1, (c4, 4, 4)),
            )
        else:
            raise ValueError(f"model.g_stem must be 'convtranspose' or 'linear', got {stem!r}")

        blocks: list[nn.Module] = [norm(c4), activation()]
        if attention and attention_res == 4:
            blocks.append(SelfAttention(c4, spectral_norm))
        for r in resolutions(image_size)[1:-1]:
            c_in, c_out = channels_at(r // 2, image_size, width, max_channels), channels_at(r, image_size, width, max_channels)
            # (B, c_in, r/2, r/2) -> (B, c_out, r, r)
            blocks += [
                maybe_spectral(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), spectral_norm),
                norm(c_out),
                activation(),
            ]
            if attention and r == attention_res:
                blocks.append(SelfAttention(c_out, spectral_norm))
        c_last = channels_at(image_size // 2, image_size, width, max_channels)
        # (B, c_last, S/2, S/2) -> (B, channels, S, S)
        blocks += [maybe_spectral(nn.ConvTranspose2d(c_last, self.channels, 4, 2, 1), spectral_norm), nn.Tanh()]
        self.body = LabelledSequential(*blocks)
        dcgan_init(self)

    def trunk(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.body(self.stem(h), labels)
