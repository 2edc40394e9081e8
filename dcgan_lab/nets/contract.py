"""The network contract: what every generator and discriminator provides, written once.

A model family (dcgan, mlp, resnet, progressive, ...) subclasses GeneratorBase and DiscriminatorBase and
builds only its trunk; the latent, the label input, D's head + projection term and `with_features` live here.
A new family is one network file (two subclasses) plus one conf/model/<family>.yaml.

Generator (GeneratorBase), keyword arguments latent_dim, image_size, channels, num_classes=0, conditioning,
embed_dim=32, plus the family's own (conf/model/shared/contract.yaml passes these to every family):
    latent_dim, image_size, channels, num_classes     attributes
    sample_latent(n, device=None, generator=None)     z ~ N(0, I): (n, latent_dim)
    forward(z, labels=None)                           z (B, latent_dim), labels (B,) int64 or None
                                                      -> images (B, channels, S, S) in [-1, 1]
  The family implements `trunk(h, labels)`: h (B, trunk_input_dim) is z, or [z, embed(y)] when G is conditioned
  by concatenation; it builds its norm layers with `self.label_norm(norm)`, which makes them conditional norms
  (per-class gain and bias, taking the labels) when G is conditioned through its norms.

Discriminator (DiscriminatorBase), keyword arguments image_size, channels, num_classes=0, conditioning,
minibatch_std=False, plus the family's own:
    image_size, channels, num_classes                 attributes
    forward(x, labels=None, with_features=False)      x (B, channels, S, S) -> logits (B,), no sigmoid;
                                                      with_features=True: (logits (B,), features (B, F)), flat
  The family implements `trunk(x)`: x (B, in_channels, S, S) -> h, either flat (B, F) or a map (B, F, H, W),
  and ends its constructor with `self.end_with_head(F, spectral_norm)`. With minibatch_std, the batch's mean
  feature std joins h as one more channel (or feature), so what follows reads F' = `self.head_features(F)` = F + 1
  (a family that gives its own head sizes it so). The head reads h (a linear layer on (B, F') unless the family
  gives its own); the projection term reads h summed over positions (B, F'); the features are h flattened.

Unconditional nets (num_classes=0) ignore labels; conditional ones refuse to run without them.
A family that grows (progressive) also mixes in Grows: `grow(resolution, alpha)`, S = the current resolution.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, NotRequired, TypedDict

import torch
from torch import nn

from dcgan_lab.nets.blocks import MinibatchStddev, NormFactory, maybe_spectral, resolutions
from dcgan_lab.nets.conditioning import ImageWithLabel, LatentWithLabel, Projection, conditional_norm


class GeneratorArgs(TypedDict):
    """The arguments every generator takes (beside its family's own)."""

    latent_dim: int
    image_size: int
    channels: int
    num_classes: NotRequired[int]  # 0 = unconditional
    conditioning: NotRequired[str]  # concat (label embedding joined to z) | cbn (conditional norms)
    embed_dim: NotRequired[int]  # label embedding size for conditioning=concat


class DiscriminatorArgs(TypedDict):
    """The arguments every discriminator takes (beside its family's own)."""

    image_size: int
    channels: int
    num_classes: NotRequired[int]
    conditioning: NotRequired[str]  # projection (Miyato & Koyama 2018) | concat (one-hot maps joined to x)
    minibatch_std: NotRequired[bool]  # the batch's feature std joins D's last features (Karras et al. 2018)


def _check_labels(net: nn.Module, labels: torch.Tensor | None) -> None:
    if net.num_classes and labels is None:
        raise ValueError(f"{type(net).__name__} is class-conditional (num_classes={net.num_classes}): pass labels (B,)")


class GeneratorBase(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, channels, S, S) in [-1, 1]; the family builds `trunk`."""

    default_conditioning = "concat"  # a family may prefer another (SNGAN's ResNet: cbn)

    def __init__(self, *, latent_dim: int, image_size: int, channels: int, num_classes: int = 0,
                 conditioning: str | None = None, embed_dim: int = 32):
        super().__init__()
        self.latent_dim, self.image_size, self.channels, self.num_classes = latent_dim, image_size, channels, num_classes
        self.conditioning = conditioning or self.default_conditioning
        self.label_input = LatentWithLabel(num_classes, self.conditioning, embed_dim)
        self.trunk_input_dim = latent_dim + self.label_input.extra_dim  # z (B, Z) -> h (B, Z [+ E])

    def label_norm(self, norm: NormFactory) -> NormFactory:
        """The family's norm factory, made conditional (a layer taking the labels) when G is conditioned by cbn."""
        return conditional_norm(norm, self.num_classes, self.conditioning)

    def sample_latent(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=device, generator=generator)

    def trunk(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement trunk(h, labels) -> images")

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        _check_labels(self, labels)
        return self.trunk(self.label_input(z, labels), labels)


class DiscriminatorBase(nn.Module):
    """x (B, channels, S, S) [+ labels (B,)] -> logits (B,) [, features (B, F)]; the family builds `trunk`."""

    def __init__(self, *, image_size: int, channels: int, num_classes: int = 0, conditioning: str = "projection",
                 minibatch_std: bool = False):
        super().__init__()
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.conditioning = conditioning
        self.label_input = ImageWithLabel(num_classes, conditioning)
        self.in_channels = channels + self.label_input.extra_channels  # what the trunk's first layer sees
        # A batch without variety (a collapsing G's) shows in one number that D's head can read.
        self.minibatch_std = MinibatchStddev() if minibatch_std else None

    def head_features(self, features: int) -> int:
        """What D's head and projection read, given the trunk's `features` (channels of a map, or a flat width)."""
        return features + (self.minibatch_std is not None)

    def end_with_head(self, features: int, spectral_norm: bool, head: nn.Module | None = None,
                      init: Callable[[nn.Module], None] | None = None) -> None:
        """D's ending, after the trunk is built: the head (default: linear (B, features) -> (B, 1)) and the
        projection term. `init` (e.g. dcgan_init) re-initialises the net before the projection embedding is
        made, which keeps its own N(0, 0.02)."""
        features = self.head_features(features)
        self.head = head if head is not None else maybe_spectral(nn.Linear(features, 1), spectral_norm)
        if init is not None:
            init(self)
        self.projection = Projection(self.num_classes, self.conditioning, features, spectral_norm)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement trunk(x) -> (B, F) or (B, F, H, W)")

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, with_features: bool = False):
        _check_labels(self, labels)
        h = self.trunk(self.label_input(x, labels))
        if self.minibatch_std is not None:
            h = self.minibatch_std(h)  # (B, F, ...) -> (B, F + 1, ...)
        pooled = h.sum(dim=(2, 3)) if h.dim() == 4 else h  # (B, F, H, W) -> (B, F)
        logits = self.head(h).flatten() + self.projection(pooled, labels)
        return (logits, h.flatten(1)) if with_features else logits


class Grows(nn.Module):
    """Mixin of growing families: (resolution, alpha) as buffers, so checkpoints and the EMA copy carry them,
    mirrored as Python numbers for the forward pass. Call `_init_growth()` after the base constructor."""

    def _init_growth(self) -> None:
        self.register_buffer("current_resolution", torch.tensor(4))
        self.register_buffer("alpha", torch.tensor(1.0))
        self._resolution, self._alpha = 4, 1.0
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync())

    def _sync(self) -> None:
        self._resolution, self._alpha = int(self.current_resolution), float(self.alpha)

    def grow(self, resolution: int, alpha: float) -> None:
        if resolution not in resolutions(self.image_size):
            raise ValueError(f"resolution {resolution} is not one of {resolutions(self.image_size)}")
        self.current_resolution.fill_(resolution)
        self.alpha.fill_(alpha)
        self._resolution, self._alpha = resolution, float(alpha)

    @property
    def resolution(self) -> int:
        return self._resolution


@contextlib.contextmanager
def evaluating(network: nn.Module) -> Iterator[nn.Module]:
    """The network in eval mode for the block (BatchNorm's running statistics, no dropout), then as it was:
    how grids, walks and metrics draw from G and read D in the middle of training."""
    was_training = network.training
    network.eval()
    try:
        yield network
    finally:
        network.train(was_training)
