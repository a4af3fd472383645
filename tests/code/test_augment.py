"""The batch augmentation's pieces against fastai's and PyTorch's own (tasks/augment.py)."""

import torch
import torch.nn.functional as F
from fastai.vision.augment import TensorImage

from foldwise.config import AugmentConfig
from foldwise.tasks.augment import affine_maps, light, sampling_grid


def test_the_sampling_grid_equals_pytorchs_affine_grid():
    generator = torch.Generator().manual_seed(0)
    maps = affine_maps(16, AugmentConfig(flip_vert=True, max_rotate=30, min_scale=0.5), generator)
    for size in (7, 64):
        expected = F.affine_grid(maps, [16, 3, size, size], align_corners=True)
        assert torch.allclose(sampling_grid(maps, size), expected, atol=1e-6)


def test_lighting_equals_fastais_brightness_then_contrast():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    brightness, contrast = torch.tensor([0.5, 0.3, 0.62, 0.45]), torch.tensor([1.0, 1.3, 0.8, 1.1])
    expected = (
        TensorImage(images.clone())
        .brightness(draw=brightness.tolist(), p=1.0)
        .contrast(draw=contrast.tolist(), p=1.0)
    )
    assert torch.allclose(light(images.clone(), brightness, contrast), expected, atol=1e-5)
    assert torch.allclose(light(images.clone(), torch.full((4,), 0.5), torch.ones(4)), images, atol=1e-5)
