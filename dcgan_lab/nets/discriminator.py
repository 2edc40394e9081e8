"""The DCGAN discriminator: strided convs down to 4x4, one logit per image, no sigmoid."""
from __future__ import annotations

import torch
from torch import nn

from dcgan_lab.nets.blocks import (
    ActivationFactory,
    NormFactory,
    SelfAttention,
    channels_at,
    dcgan_init,
    maybe_spectral,
    resolutions,
)
from dcgan_lab.nets.conditioning import ImageWithLabel, Projection


class Discriminator(nn.Module):
    """image (B, channels, S, S) -> logits (B,); with_features=True also returns D's last features (B, F)."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        width: int,
        norm: NormFactory,
        activation: ActivationFactory,
        attention: bool = False,
        attention_res: int = 16,
        spectral_norm: bool = False,
        dropout: float = 0.0,
        max_channels: int = 512,
        num_classes: int = 0,
        conditioning: str = "projection",
    ):
        super().__init__()
        self.label_input = ImageWithLabel(num_classes, conditioning)
        res = resolutions(image_size)
        c_first = channels_at(image_size // 2, image_size, width, max_channels)
        # DCGAN convention: no norm on the first layer, it would fix the input's scale.
        # (B, channels, S, S) -> (B, width, S/2, S/2)
        c_in_first = channels + self.label_input.extra_channels
        layers: list[nn.Module] = [maybe_spectral(nn.Conv2d(c_in_first, c_first, 4, 2, 1), spectral_norm), activation()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        if attention and attention_res == image_size // 2:
            layers.append(SelfAttention(c_first, spectral_norm))
        for r in reversed(res[:-2]):
            c_in, c_out = channels_at(2 * r, image_size, width, max_channels), channels_at(r, image_size, width, max_channels)
            # (B, c_in, 2r, 2r) -> (B, c_out, r, r)
            layers += [maybe_spectral(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), spectral_norm), norm(c_out), activation()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            if attention and r == attention_res:
                layers.append(SelfAttention(c_out, spectral_norm))
        self.features = nn.Sequential(*layers)
        # (B, c4, 4, 4) -> (B, 1, 1, 1)
        c4 = channels_at(4, image_size, width, max_channels)
        self.head = maybe_spectral(nn.Conv2d(c4, 1, 4, 1, 0), spectral_norm)
        dcgan_init(self)
        self.projection = Projection(num_classes, conditioning, c4, spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, with_features: bool = False):
        h = self.features(self.label_input(x, labels))  # (B, c4, 4, 4)
        logits = self.head(h).flatten() + self.projection(h.sum(dim=(2, 3)), labels)
        return (logits, h.flatten(1)) if with_features else logits
