"""Comparing what a dashboard shows with the PNG the lab wrote: decoded pixels, not file names or sizes."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def pixels(png: Path | bytes) -> np.ndarray:
    """What a viewer shows: the decoded image as RGBA (a grey or RGB file gets its channels spread, alpha 255)."""
    with Image.open(png if isinstance(png, Path) else io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGBA"))


def assert_same_pixels(shown: Path | bytes, local: Path, what: str) -> None:
    shown_pixels, local_pixels = pixels(shown), pixels(local)
    assert shown_pixels.shape == local_pixels.shape, f"{what}: {shown_pixels.shape} shown, {local_pixels.shape} in {local}"
    differ = np.any(shown_pixels != local_pixels, axis=-1)
    assert not differ.any(), (
        f"{what}: {differ.sum()} of {differ.size} pixels differ from {local} "
        f"(shown: mean {shown_pixels[..., :3].mean():.2f}, max {shown_pixels[..., :3].max()}; "
        f"local: mean {local_pixels[..., :3].mean():.2f}, max {local_pixels[..., :3].max()})"
    )
