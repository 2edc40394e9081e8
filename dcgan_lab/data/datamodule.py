"""One LightningDataModule for every dataset: the whole split as a uint8 tensor, batched by indexing."""
from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from dcgan_lab.errors import DataError


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], on whatever device the batch is already on."""
    if images.dtype != torch.uint8:
        return images
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (uint8 passes through), on the images' device: the pixels torchvision's
    save_image(normalize=True, value_range=(-1, 1)) writes. Every image the lab saves or measures is these pixels."""
    if images.dtype == torch.uint8:
        return images
    return ((images.float().clamp(-1, 1) + 1) / 2 * 255 + 0.5).clamp_(0, 255).to(torch.uint8)


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
        if self.images.is_cuda:
            # A pageable host-to-GPU copy waits for the GPU to finish its queue: the host would idle on every
            # batch. From pinned memory the index copy is queued like a kernel and the host runs ahead.
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        return self.images[index], self.labels[index]


class ResumableRandomSampler(Sampler[int]):
    """torch's RandomSampler order (a seed drawn from the global torch RNG when each epoch starts) that a
    checkpoint can carry: the epoch's seed and how many of its samples were trained. A run resumed mid-epoch
    (after Ctrl-C) then sees the rest of that epoch in the same order, without drawing a new seed."""

    def __init__(self, size: int, trained_samples: Callable[[], int]):
        self.size, self.trained_samples = size, trained_samples
        self.seed: int | None = None
        self._resume: tuple[int, int] | None = None  # (seed, samples to skip) for the next epoch only
        self.on_resumed: Callable[[], None] | None = None  # called when the resumed epoch starts

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        if self._resume is not None:
            self.seed, skip = self._resume
            self._resume = None
            if self.on_resumed is not None:
                self.on_resumed()
        else:
            self.seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed))
        yield from order[skip:].tolist()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "trained_samples": self.trained_samples()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") is not None and 0 < state["trained_samples"] < self.size:
            self._resume = (state["seed"], state["trained_samples"])

    @property
    def resumes_mid_epoch(self) -> bool:
        """Whether the next epoch is the rest of one a checkpoint interrupted (its seed already drawn)."""
        return self._resume is not None


def _keep_batch(batch):
    # The dataset already returns a collated batch.
    return batch


class ImageDataModule(L.LightningDataModule):
    def __init__(self, source: Callable, name: str, image_size: int, channels: int, batch_size: int,
                 num_workers: int = 0, num_classes: int = 0, augment: Callable | None = None,
                 class_names: Sequence[str] | None = None, distinct_images: bool = True, **_):
        super().__init__()
        self.source, self.name, self.augment = source, name, augment
        # False: the images are near-copies of one another (photo_patches' overlapping, mirrored patches), so no
        # real image is unseen by a run or far from its neighbours; metrics that compare with unseen images skip.
        self.distinct_images = distinct_images
        # What label k means, for grids' row captions (an image folder's class folders); None: its number says it
        self.class_names = [str(name) for name in class_names] if class_names else None
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.num_workers, self.num_classes = batch_size, num_workers, num_classes
        self._splits: dict[str, UInt8Images] = {}
        # The training order travels in checkpoints (LightningDataModule.state_dict): a resumed run sees the rest
        # of the interrupted epoch. Lightning restores it before it asks for the first training batch.
        self._sampler: ResumableRandomSampler | None = None
        self._sampler_state: dict | None = None

    def split(self, split: str = "train") -> UInt8Images:
        """The split as an in-memory dataset, loaded and resized once per process."""
        if split not in self._splits:
            images, labels = self.source(split=split, image_size=self.image_size, channels=self.channels)
            if images.shape[1] != self.channels:
                raise DataError(
                    f"dataset.channels={self.channels} but {self.name} images have {images.shape[1]} channel(s); "
                    f"set dataset.channels={images.shape[1]}"
                )
            if self.num_classes:
                self._check_labels(split, labels)
            self._splits[split] = UInt8Images(fit_to_size(images, self.image_size), labels)
        return self._splits[split]

    def _check_labels(self, split: str, labels: torch.Tensor | None) -> None:
        """dataset.num_classes=K says the data is labelled 0..K-1, every class in training: the metrics' classifier,
        a conditional G and classes_covered / kl_uniform all count K classes (a label outside stops the classifier
        with an IndexError; classes the data lacks would cap classes_covered and floor kl_uniform)."""
        k = self.num_classes
        if labels is None:
            raise DataError(f"dataset.num_classes={k} but {self.name} has no class labels; set dataset.num_classes=0")
        if not len(labels):
            return
        low, high, present = int(labels.min()), int(labels.max()), len(labels.unique())
        if low < 0 or high >= k or (split == "train" and present < k):
            fits = f"dataset.num_classes={high + 1} (or 0 to use no labels)" if low >= 0 else "dataset.num_classes=0"
            raise DataError(f"dataset.num_classes={k} does not fit {self.name}: its {split} images are labelled "
                            f"{low}..{high} ({present} classes); set {fits}")

    def setup(self, stage: str | None = None) -> None:
        data = self.split("train")
        self._check_size(data)  # before the run folder gets anything
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and device.type == "cuda" and self.num_workers == 0:
            # The whole set fits on the GPU (MNIST: 47 MB as uint8): batches are sliced there, no copies per step.
            data.images, data.labels = data.images.to(device), data.labels.to(device)

    def _check_size(self, data: UInt8Images) -> None:
        if len(data) < self.batch_size:
            raise DataError(f"{self.name} has {len(data)} training images, fewer than dataset.batch_size={self.batch_size}")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 batches become float [-1, 1] on their device, then get the real-image augmentation
        (conf/augment `real`: G learns the augmented distribution)."""
        images, labels = batch
        images = to_float(images)
        return (self.augment(images) if self.augment is not None else images), labels

    def train_dataloader(self) -> DataLoader:
        data = self.split("train")
        self._check_size(data)
        common = dict(batch_size=self.batch_size, drop_last=True, collate_fn=_keep_batch, num_workers=self.num_workers,
                      persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available() and not data.images.is_cuda)
        if self.trainer is None or self.trainer.world_size > 1:  # DDP shards with its own sampler
            return DataLoader(data, shuffle=True, **common)
        trainer = self.trainer

        def trained_samples() -> int:
            # Checkpoints are written at a batch's end (after its step): the processed batches of this epoch.
            # An epoch-end checkpoint resumes at the next epoch, which draws its own order.
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            return 0 if done >= trainer.num_training_batches else done * self.batch_size

        self._sampler = ResumableRandomSampler(len(data), trained_samples)
        if self._sampler_state is not None:
            self._sampler.load_state_dict(self._sampler_state)
            self._sampler_state = None
        # A DataLoader draws its workers' base seed from the global RNG whenever an epoch starts; an epoch resumed
        # mid-way already drew it before the checkpoint, so its iterator draws from a private generator instead.
        # After an epoch-end checkpoint the next epoch starts afresh and draws both, as in an uninterrupted run.
        resuming = self._sampler.resumes_mid_epoch
        loader = DataLoader(data, sampler=self._sampler, generator=torch.Generator() if resuming else None, **common)
        if resuming:
            self._sampler.on_resumed = lambda: setattr(loader, "generator", None)
        return loader

    def state_dict(self) -> dict:
        return {"sampler": self._sampler.state_dict()} if self._sampler is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._sampler_state = state_dict.get("sampler")
