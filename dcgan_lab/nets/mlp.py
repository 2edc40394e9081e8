"""The original fully connected GAN (Goodfellow et al. 2014): G and D are MLPs on flattened images.

Hidden widths follow `width` (model.ngf / model.ndf): G widens 4w -> 8w -> 16w, D narrows 16w -> 8w -> 4w
(w = 64 gives the common 256-512-1024 layout). Norm factories work on (B, F, 1, 1), i.e. per feature.
Weights keep PyTorch's default init: DCGAN's N(0, 0.02) shrinks activations layer by layer in narrow MLPs.
"""
from __future__ import annotations

import torch
from torch import nn

from dcgan_lab.nets.blocks import ActivationFactory, LatentSampler, NormFactory, maybe_spectral
from dcgan_lab.nets.conditioning import (
    ImageWithLabel,
    LabelledSequential,
    LatentWithLabel,
    Projection,
    TakesLabels,
    conditional_norm,
)

MULTIPLIERS = (4, 8, 16)


class _AsMaps(TakesLabels):
    """Applies a 2-D norm layer to flat features: (B, F) -> (B, F, 1, 1) -> norm -> (B, F)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x[:, :, None, None]
        h = self.layer(h, labels) if isinstance(self.layer, TakesLabels) else self.layer(h)
        return h.flatten(1)


class MLPGenerator(LatentSampler, nn.Module):
    """z (B, latent_dim) -> image (B, channels, S, S) in [-1, 1]."""

    def __init__(
        self,
        latent_dim: int,
        image_size: int,
        channels: int,
        width: int,
        norm: NormFactory,
        activation: ActivationFactory,
        spectral_norm: bool = False,
        num_classes: int = 0,
        conditioning: str = "concat",
        embed_dim: int = 32,
    ):
        super().__init__()
        self.latent_dim, self.image_size, self.channels, self.num_classes = latent_dim, image_size, channels, num_classes
        self.label_input = LatentWithLabel(num_classes, conditioning, embed_dim)
        norm = conditional_norm(norm, num_classes, conditioning)
        layers: list[nn.Module] = []
        features = latent_dim + self.label_input.extra_dim
        for multiplier in MULTIPLIERS:
            hidden = width * multiplier
            layers += [maybe_spectral(nn.Linear(features, hidden), spectral_norm), _AsMaps(norm(hidden)), activation()]
            features = hidden
        # (B, 16w) -> (B, C*S*S) -> (B, C, S, S)
        layers += [
            maybe_spectral(nn.Linear(features, channels * image_size * image_size), spectral_norm),
            nn.Tanh(),
            nn.Unflatten(1, (channels, image_size, image_size)),
        ]
        self.body = LabelledSequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(self.label_input(z, labels), labels)


class MLPDiscriminator(nn.Module):
    """image (B, channels, S, S) -> logits (B,); the first layer is never normalised."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        width: int,
        norm: NormFactory,
        activation: ActivationFactory,
        spectral_norm: bool = False,
        dropout: float = 0.0,
        num_classes: int = 0,
        conditioning: str = "projection",
    ):
        super().__init__()
        self.label_input = ImageWithLabel(num_classes, conditioning)
        features = (channels + self.label_input.extra_channels) * image_size * image_size
        layers: list[nn.Module] = [nn.Flatten()]
        for i, multiplier in enumerate(reversed(MULTIPLIERS)):
            hidden = width * multiplier
            layers.append(maybe_spectral(nn.Linear(features, hidden), spectral_norm))
            if i > 0:
                layers.append(_AsMaps(norm(hidden)))
            layers.append(activation())
            if dropout:  # Goodfellow et al. train the MLP discriminator with dropout
                layers.append(nn.Dropout(dropout))
            features = hidden
        self.features = nn.Sequential(*layers)
        self.head = maybe_spectral(nn.Linear(features, 1), spectral_norm)
        self.projection = Projection(num_classes, conditioning, features, spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, with_features: bool = False):
        h = self.features(self.label_input(x, labels))  # (B, 4w)
        logits = self.head(h).flatten() + self.projection(h, labels)
        return (logits, h) if with_features else logits
