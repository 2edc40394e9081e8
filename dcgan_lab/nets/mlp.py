"""The original fully connected GAN (Goodfellow et al. 2014): G and D are MLPs on flattened images.

Hidden widths follow `width` (model.ngf / model.ndf): G widens 4w -> 8w -> 16w, D narrows 16w -> 8w -> 4w
(w = 64 gives the common 256-512-1024 layout). Norm factories work on (B, F, 1, 1), i.e. per feature: a norm that
normalises each feature over its one value (instance norm; group norm with one channel per group) outputs a constant,
so both constructors refuse it.
Weights keep PyTorch's default init: DCGAN's N(0, 0.02) shrinks activations layer by layer in narrow MLPs.
"""
from __future__ import annotations

from typing import Unpack

import torch
from torch import nn

from dcgan_lab.errors import ConfigError
from dcgan_lab.nets.blocks import ActivationFactory, NormFactory, maybe_spectral
from dcgan_lab.nets.conditioning import LabelledSequential, TakesLabels, call_with_labels
from dcgan_lab.nets.contract import DiscriminatorArgs, DiscriminatorBase, GeneratorArgs, GeneratorBase

MULTIPLIERS = (4, 8, 16)
WORKING_NORMS = "norm=batch, layer or none (norm=group needs a width of 3 or more: {width_key} >= 3)"


def _output_is_constant(layer: nn.Module, features: int) -> bool:
    """Whether the layer gives (B, features, 1, 1) the same output whatever the input (in training mode, on two
    random batches drawn from a generator of its own, so the seeded initialisation is left as it was)."""
    draws = torch.randn(2, 4, features, 1, 1, generator=torch.Generator().manual_seed(0))
    layer.train()
    with torch.no_grad():
        return torch.allclose(layer(draws[0]), layer(draws[1]), atol=1e-4)


def check_norm(norm: NormFactory, widths: list[int], norm_key: str, width_key: str) -> None:
    """Refuses a norm that normalises each of a width's features over a single value (on 1x1 maps): instance norm,
    group norm with one channel per group. Its output would be a constant: every sample the same."""
    for features in widths:
        layer = norm(features)  # a probe, not the network's layer (its running statistics stay untouched)
        if _output_is_constant(layer, features):
            name = getattr(getattr(norm, "func", norm), "__name__", type(layer).__name__)  # Hydra's partial: its function
            raise ConfigError(
                f"model=mlp cannot use {norm_key}={name}: on the MLP's 1x1 feature maps it normalises each of its "
                f"{features} features over a single value, so its output is constant and every sample would be the "
                f"same; with model=mlp use " + WORKING_NORMS.format(width_key=width_key) + ".")


class _AsMaps(TakesLabels):
    """Applies a 2-D norm layer to flat features: (B, F) -> (B, F, 1, 1) -> norm -> (B, F)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return call_with_labels(self.layer, x[:, :, None, None], labels).flatten(1)


class MLPGenerator(GeneratorBase):
    """z (B, latent_dim) -> image (B, channels, S, S) in [-1, 1]."""

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, spectral_norm: bool = False,
                 **contract: Unpack[GeneratorArgs]):
        super().__init__(**contract)
        check_norm(norm, [width * m for m in MULTIPLIERS], "norm.g", "model.ngf")
        norm = self.label_norm(norm)
        size, features = self.image_size, self.trunk_input_dim
        layers: list[nn.Module] = []
        for multiplier in MULTIPLIERS:
            hidden = width * multiplier
            layers += [maybe_spectral(nn.Linear(features, hidden), spectral_norm), _AsMaps(norm(hidden)), activation()]
            features = hidden
        # (B, 16w) -> (B, C*S*S) -> (B, C, S, S)
        layers += [
            maybe_spectral(nn.Linear(features, self.channels * size * size), spectral_norm),
            nn.Tanh(),
            nn.Unflatten(1, (self.channels, size, size)),
        ]
        self.body = LabelledSequential(*layers)

    def trunk(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.body(h, labels)


class MLPDiscriminator(DiscriminatorBase):
    """image (B, channels, S, S) -> logits (B,); the first layer is never normalised; features (B, 4w)."""

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, spectral_norm: bool = False,
                 dropout: float = 0.0, **contract: Unpack[DiscriminatorArgs]):
        super().__init__(**contract)
        check_norm(norm, [width * m for m in reversed(MULTIPLIERS[:-1])], "norm.d", "model.ndf")  # not the first layer
        features = self.in_channels * self.image_size * self.image_size
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
        self.end_with_head(features, spectral_norm)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 4w)
