"""Class conditioning shared by every G and D family.

G takes the label either as a learned embedding concatenated to z (Mirza & Osindero 2014) or through
conditional BatchNorm: per-class gain and bias on every norm layer (de Vries et al. 2017, Miyato & Koyama 2018).
D takes it either as one-hot maps concatenated to the image (cGAN) or by projection: logit += <embed(y), phi(x)>
(Miyato & Koyama 2018). Where these sit in a network is written once in dcgan_lab.nets.contract.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcgan_lab.nets.blocks import NormFactory, maybe_spectral

# model.g_conditioning: concat | cbn; model.d_conditioning: concat | projection (checked in dcgan_lab/schema.py)


class TakesLabels(nn.Module):
    """Marker: a layer whose forward is `(x, labels)`. LabelledSequential hands labels to these only."""


def call_with_labels(layer: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """layer(x, labels) for a layer that takes labels (TakesLabels), layer(x) for any other."""
    return layer(x, labels) if isinstance(layer, TakesLabels) else layer(x)


class LabelledSequential(nn.Sequential):
    """nn.Sequential that passes the labels to the layers that take them (same state_dict keys)."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = call_with_labels(layer, x, labels)
        return x


class ConditionalNorm(TakesLabels):
    """norm(x) * (1 + gain[y]) + bias[y]; gain and bias start at 0, so training starts unconditional."""

    def __init__(self, norm: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.norm = norm
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out = self.norm(x)
        # (B,) -> (B, C, 1, 1), or (B, C) for flat features
        shape = (-1, out.shape[1]) + (1,) * (out.dim() - 2)
        return out * (1 + self.gain(labels).view(shape)) + self.bias(labels).view(shape)


def conditional_norm(norm: NormFactory, num_classes: int, mode: str) -> NormFactory:
    """G's norm factory: unchanged, or wrapped into conditional norm when mode == 'cbn'."""
    if not num_classes or mode != "cbn":
        return norm
    return lambda channels: ConditionalNorm(norm(channels), channels, num_classes)


class LatentWithLabel(nn.Module):
    """z (B, Z) -> [z, embed(y)] (B, Z + E) when G is conditioned by concatenation; z itself otherwise."""

    def __init__(self, num_classes: int, mode: str, embed_dim: int):
        super().__init__()
        enabled = bool(num_classes) and mode == "concat"
        self.embedding = nn.Embedding(num_classes, embed_dim) if enabled else None
        self.extra_dim = embed_dim if enabled else 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embedding is None:
            return z
        return torch.cat([z, self.embedding(labels)], dim=1)


class ImageWithLabel(nn.Module):
    """x (B, C, H, W) -> [x, one_hot(y) maps] (B, C + K, H, W) when D is conditioned by concatenation."""

    def __init__(self, num_classes: int, mode: str):
        super().__init__()
        self.num_classes = num_classes if num_classes and mode == "concat" else 0
        self.extra_channels = self.num_classes

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.num_classes:
            return x
        maps = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
        return torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], dim=1)


class Projection(nn.Module):
    """Projection discriminator term <embed(y), phi(x)> (B,) for pooled features phi(x) (B, F); 0 when off."""

    def __init__(self, num_classes: int, mode: str, features: int, spectral_norm: bool = False):
        super().__init__()
        enabled = bool(num_classes) and mode == "projection"
        self.embedding = None
        if enabled:
            embedding = nn.Embedding(num_classes, features)
            nn.init.normal_(embedding.weight, 0.0, 0.02)
            self.embedding = maybe_spectral(embedding, spectral_norm)

    def forward(self, pooled: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | float:
        if self.embedding is None:
            return 0.0
        return (self.embedding(labels) * pooled).sum(dim=1)
