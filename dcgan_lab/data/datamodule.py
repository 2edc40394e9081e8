"""One LightningDataModule for every dataset: the whole split as a uint8 tensor, batched by indexing."""
from __future__ import annotations

from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dcgan_lab.errors import DataError


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], on whatever device the batch is already on."""
    if images.dtype != torch.uint8:
        return images
    return images.float().div_(127.5).sub_(1.0)


def fit_to_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """28x28 digits are zero-padded to 32 (as the DCGAN-on-MNIST convention); anything else is resized."""
    h = images.shape[-1]
    if h == size:
        return images
    if h == 28 and size == 32:
        return F.pad(images, (2, 2, 2, 2))
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp_(0, 255).to(torch.uint8)


class UInt8Images(Dataset):
    """(images, labels) held in memory. `__getitems__` lets the DataLoader slice a whole batch at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None):
        self.images = images
        self.labels = labels if labels is not None else torch.full((len(images),), -1, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _keep_batch(batch):
    # The dataset already returns a collated batch.
    return batch


class ImageDataModule(L.LightningDataModule):
    def __init__(self, source: Callable, name: str, image_size: int, channels: int, batch_size: int,
                 num_workers: int = 0, num_classes: int = 0, augment: Callable | None = None, **_):
        super().__init__()
        self.source, self.name, self.augment = source, name, augment
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.num_workers, self.num_classes = batch_size, num_workers, num_classes
        self._splits: dict[str, UInt8Images] = {}

    def split(self, split: str = "train") -> UInt8Images:
        """The split as an in-memory dataset, loaded and resized once per process."""
        if split not in self._splits:
            images, labels = self.source(split=split, image_size=self.image_size, channels=self.channels)
            if images.shape[1] != self.channels:
                raise DataError(
                    f"dataset.channels={self.channels} but {self.name} images have {images.shape[1]} channel(s); "
                    f"set dataset.channels={images.shape[1]}"
                )
            self._splits[split] = UInt8Images(fit_to_size(images, self.image_size), labels)
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        data = self.split("train")
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and device.type == "cuda" and self.num_workers == 0:
            # The whole set fits on the GPU (MNIST: 47 MB as uint8): batches are sliced there, no copies per step.
            data.images, data.labels = data.images.to(device), data.labels.to(device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 batches become float [-1, 1] on their device, then get the real-image augmentation
        (conf/augment `real`: G learns the augmented distribution)."""
        images, labels = batch
        images = to_float(images)
        return (self.augment(images) if self.augment is not None else images), labels

    def train_dataloader(self) -> DataLoader:
        data = self.split("train")
        if len(data) < self.batch_size:
            raise DataError(f"{self.name} has {len(data)} training images, fewer than dataset.batch_size={self.batch_size}")
        return DataLoader(
            data, batch_size=self.batch_size, shuffle=True, drop_last=True, collate_fn=_keep_batch,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available() and not data.images.is_cuda,
        )
