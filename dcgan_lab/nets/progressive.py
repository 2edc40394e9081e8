"""Progressive growing (Karras et al. 2018): G and D start at 4x4 and gain one resolution per phase.

Every resolution's layers exist from the start (so one optimizer holds them all); `grow(resolution, alpha)`
selects how far the networks run. During a fade-in the new top layer is blended with the upsampled (G) or
downsampled (D) output of the previous resolution: out = (1 - alpha) * old + alpha * new.
The current resolution and alpha are buffers, so checkpoints (and the EMA copy) carry them.
"""
from __future__ import annotations

from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn

from dcgan_lab.nets.blocks import ActivationFactory, MinibatchStddev, NormFactory, maybe_spectral, resolutions
from dcgan_lab.nets.conditioning import LabelledSequential
from dcgan_lab.nets.contract import DiscriminatorArgs, DiscriminatorBase, GeneratorArgs, GeneratorBase, Grows
from dcgan_lab.nets.resnet import residual_channels


class GrowthSchedule:
    """Images seen -> (resolution, alpha).

    Phase 0 trains `start_resolution` for `stable_images`; each later phase fades the next resolution in
    over `fade_images` (alpha 0 -> 1), then trains it for `stable_images`. The last resolution stays.
    """

    def __init__(self, final_resolution: int, start_resolution: int = 4, fade_images: int = 10000,
                 stable_images: int = 10000):
        self.resolutions = [r for r in resolutions(final_resolution) if r >= start_resolution]
        self.fade_images, self.stable_images = fade_images, stable_images

    def __call__(self, images_seen: int) -> tuple[int, float]:
        t = images_seen - self.stable_images
        if t < 0:
            return self.resolutions[0], 1.0
        phase_length = self.fade_images + self.stable_images
        phase = 1 + t // phase_length
        if phase >= len(self.resolutions):
            return self.resolutions[-1], 1.0
        return self.resolutions[phase], min(1.0, (t % phase_length) / self.fade_images)


class ProgressiveGenerator(Grows, GeneratorBase):
    """z (B, latent_dim) -> image (B, channels, r, r) in [-1, 1] at the current resolution r."""

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, spectral_norm: bool = False,
                 max_channels: int = 512, **contract: Unpack[GeneratorArgs]):
        super().__init__(**contract)
        self._init_growth()
        norm, image_size = self.label_norm(norm), self.image_size

        def ch(r: int) -> int:
            return residual_channels(r, image_size, width, max_channels)

        def conv(c_in: int, c_out: int, k: int = 3) -> nn.Module:
            return maybe_spectral(nn.Conv2d(c_in, c_out, k, 1, k // 2), spectral_norm)

        # (B, Z [+E]) -> (B, ch4, 4, 4)
        self.stem = nn.Sequential(
            maybe_spectral(nn.Linear(self.trunk_input_dim, ch(4) * 16), spectral_norm),
            nn.Unflatten(1, (ch(4), 4, 4)),
        )
        self.blocks = nn.ModuleDict({"4": LabelledSequential(norm(ch(4)), activation(), conv(ch(4), ch(4)), norm(ch(4)), activation())})
        for r in resolutions(image_size)[1:]:
            # (B, ch(r/2), r/2, r/2) -> (B, ch(r), r, r)
            self.blocks[str(r)] = LabelledSequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                conv(ch(r // 2), ch(r)), norm(ch(r)), activation(),
                conv(ch(r), ch(r)), norm(ch(r)), activation(),
            )
        self.to_rgb = nn.ModuleDict({str(r): conv(ch(r), self.channels, 1) for r in resolutions(image_size)})

    def trunk(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.stem(h)
        previous = h
        for r in resolutions(self._resolution):
            previous, h = h, self.blocks[str(r)](h, labels)
        out = self.to_rgb[str(self._resolution)](h)
        if self._alpha < 1 and self._resolution > 4:
            # fade-in: the previous resolution's image, upsampled, blended with the new layer's
            old = F.interpolate(self.to_rgb[str(self._resolution // 2)](previous), scale_factor=2, mode="nearest")
            out = old + self._alpha * (out - old)  # lerp by arithmetic: autocast may give old and out different dtypes
        return torch.tanh(out)


class ProgressiveDiscriminator(Grows, DiscriminatorBase):
    """image (B, channels, r', r') -> logits (B,), run from the current resolution r (inputs larger than r
    are average-pooled to r); with_features=True also returns the pooled 4x4 features (B, F)."""

    def __init__(self, *, width: int, norm: NormFactory, activation: ActivationFactory, spectral_norm: bool = False,
                 dropout: float = 0.0, minibatch_std: bool = True, max_channels: int = 512,
                 **contract: Unpack[DiscriminatorArgs]):
        super().__init__(**contract)  # minibatch_std: ProGAN's place, inside the trunk below, not the contract's
        self._init_growth()
        image_size = self.image_size

        def ch(r: int) -> int:
            return residual_channels(r, image_size, width, max_channels)

        def conv(c_in: int, c_out: int, k: int = 3) -> nn.Module:
            return maybe_spectral(nn.Conv2d(c_in, c_out, k, 1, k // 2), spectral_norm)

        # No norm right after from_rgb: D's first layer sees the raw pixels (DCGAN convention).
        self.from_rgb = nn.ModuleDict(
            {str(r): nn.Sequential(conv(self.in_channels, ch(r), 1), activation()) for r in resolutions(image_size)})
        self.blocks = nn.ModuleDict()
        for r in resolutions(image_size)[1:]:
            # (B, ch(r), r, r) -> (B, ch(r/2), r/2, r/2)
            layers = [conv(ch(r), ch(r)), norm(ch(r)), activation(), conv(ch(r), ch(r // 2)), norm(ch(r // 2)), activation()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            self.blocks[str(r)] = nn.Sequential(*layers, nn.AvgPool2d(2))
        # minibatch stddev (Karras et al. sec. 3): one extra 4x4 map holding the batch's mean feature std, so D
        # can see a batch without variety; (B, ch4 + 1, 4, 4) -> (B, ch4, 4, 4) -> pooled (B, ch4)
        std = [MinibatchStddev()] if minibatch_std else []
        self.final = nn.Sequential(*std, conv(ch(4) + minibatch_std, ch(4)), activation())
        self.end_with_head(ch(4), spectral_norm)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        r = self._resolution
        if x.shape[-1] != r:
            x = F.adaptive_avg_pool2d(x, r)  # (B, C [+K], r', r') -> (B, C [+K], r, r); label maps stay one-hot
        h = self.from_rgb[str(r)](x)
        if r > 4:
            h = self.blocks[str(r)](h)
            if self._alpha < 1:
                # fade-in: the new block's output blended with the downsampled image through the old input layer
                old = self.from_rgb[str(r // 2)](F.avg_pool2d(x, 2))
                h = old + self._alpha * (h - old)
            for lower in reversed(resolutions(r // 2)[1:]):
                h = self.blocks[str(lower)](h)
        return self.final(h).sum(dim=(2, 3))  # (B, ch4, 4, 4) -> (B, ch4)
