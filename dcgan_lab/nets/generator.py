"""The DCGAN generator: one class for every image size, built in a loop over resolutions."""
from __future__ import annotations

import math

import torch
from torch import nn

from dcgan_lab.nets.blocks import (
    ActivationFactory,
    LatentSampler,
    NormFactory,
    SelfAttention,
    channels_at,
    dcgan_init,
    maybe_spectral,
    resolutions,
)
from dcgan_lab.nets.conditioning import LabelledSequential, LatentWithLabel, conditional_norm


class Generator(LatentSampler, nn.Module):
    """z (B, latent_dim) -> image (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(
        self,
        latent_dim: int,
        image_size: int,
        channels: int,
        width: int,
        norm: NormFactory,
        activation: ActivationFactory,
        stem: str = "convtranspose",
        attention: bool = False,
        attention_res: int = 16,
        spectral_norm: bool = False,
        max_channels: int = 512,
        num_classes: int = 0,
        conditioning: str = "concat",
        embed_dim: int = 32,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        # Class conditioning (num_classes > 0): label embedding joined to z, or conditional norms.
        self.label_input = LatentWithLabel(num_classes, conditioning, embed_dim)
        norm = conditional_norm(norm, num_classes, conditioning)
        z_in = latent_dim + self.label_input.extra_dim
        self.image_size = image_size
        self.channels = channels
        res = resolutions(image_size)
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
        for r in res[1:-1]:
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
        blocks += [maybe_spectral(nn.ConvTranspose2d(c_last, channels, 4, 2, 1), spectral_norm), nn.Tanh()]
        self.body = LabelledSequential(*blocks)
        dcgan_init(self)
        assert len(res) == int(math.log2(image_size)) - 1

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(self.stem(self.label_input(z, labels)), labels)
