"""Perceptual G objective: feature matching in a frozen pretrained network (e.g. VGG16 relu3_3, Johnson et al.
2016), ||E phi(x) - E phi(G(z))||^2 / F. Weights come from a local file only: there is no download."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dcgan_lab.errors import ConfigError
from dcgan_lab.losses import feature_matching

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss:
    """(real, fake) images in [-1, 1] -> scalar loss. A plain object, not an nn.Module: the frozen network's
    weights stay out of the GAN's checkpoints and optimizers."""

    def __init__(self, network: str, layer: str, weights_path: str, min_size: int = 32):
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor

        path = Path(weights_path)
        if not path.is_file():
            raise ConfigError(
                f"loss.perceptual.weights_path={weights_path} does not exist: the perceptual loss needs {network} "
                f"weights on disk (nothing is downloaded); put the file there or set loss.perceptual_weight=0."
            )
        model = torchvision.models.get_model(network, weights=None)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, KeyError) as exc:
            raise ConfigError(f"loss.perceptual.weights_path={weights_path} does not hold {network} weights ({str(exc).splitlines()[0]})") from exc
        self.network = create_feature_extractor(model, return_nodes={layer: "features"}).eval().requires_grad_(False)
        self.min_size = min_size

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1|3, H, W) in [-1, 1] -> (B, F) features of the pretrained network."""
        self.network.to(images.device)
        x = (images + 1) / 2
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grayscale -> RGB
        if x.shape[-1] < self.min_size:
            x = F.interpolate(x, size=self.min_size, mode="bilinear", align_corners=False)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return self.network((x - mean) / std)["features"].flatten(1)

    def __call__(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real_features = self.features(real)
        return feature_matching(real_features, self.features(fake))
