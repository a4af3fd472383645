"""Photo-like test images made offline from scikit-learn's two bundled photographs: random crops,
flips and colour shifts, saved as JPEG, so that decoding and resizing cost what real photos cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def write_photos(folder: Path, n: int, side: int = 256, seed: int = 0, quality: int = 90) -> list[Path]:
    """`n` JPEGs of side x side pixels in `folder`, named p00000.jpg, ..."""
    rng = np.random.default_rng(seed)
    sources = load_sample_images().images
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        photo = sources[index % len(sources)]
        crop = int(rng.integers(side // 2, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - crop))
        left = int(rng.integers(0, photo.shape[1] - crop))
        pixels = photo[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        pixels = np.clip(pixels * rng.uniform(0.7, 1.3, 3), 0, 255).astype(np.uint8)
        path = folder / f"p{index:05d}.jpg"
        Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR).save(path, quality=quality)
        paths.append(path)
    return paths
