"""Batch augmentation in one resampling pass, on whatever device the batch is on.

fastai's `aug_transforms`, as `augment` configures them, composed into one affine map per image and
applied with a single `grid_sample` from the presized item to the stage size (fastai resamples twice
and pays a tensor-subclass dispatch on every operation; docs/benchmarks.md has the figures):
- flips: horizontal with p=0.5 (`augment.flip`), or one of the 8 dihedral symmetries with p=0.5
  (`augment.flip_vert`);
- rotation up to `augment.max_rotate` degrees and zoom up to a factor of 1.1, each with p=0.75 (fastai's
  p_affine and max_zoom defaults);
- a random square crop of `augment.min_scale`..1 of the area (fastai's RandomResizedCropGPU with
  ratio 1; here drawn per image, where fastai draws one per batch);
- brightness and contrast up to `augment.max_lighting`, each with p=0.75, in logit space as fastai
  does;
bilinear, reflection padding, align_corners=True, as fastai; then the lighting, in place on the
resampled floats (fastai's order: the resampling touches the larger item, the lighting only the
output). Validation (no augmentation) resizes the whole item to the stage size the same way, which
is exactly fastai's validation transform.
A perspective warp (`augment.max_warp` > 0) has no affine form: then fastai's own transforms run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from foldwise.config import AugmentConfig

P_AFFINE, P_LIGHTING, P_FLIP, MAX_ZOOM = 0.75, 0.75, 0.5, 1.1
# fastai's dihedral_mat: for each of the 8 symmetries, the signs of x and y and whether axes swap.
DIHEDRAL_X = torch.tensor([1, -1, 1, -1, -1, 1, 1, -1], dtype=torch.float32)
DIHEDRAL_Y = torch.tensor([1, 1, -1, 1, -1, -1, 1, -1], dtype=torch.float32)
DIHEDRAL_KEEP = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.float32)


def happens(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def flip_matrices(n: int, augment: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    matrices = torch.eye(3).repeat(n, 1, 1)
    if augment.flip_vert:  # one of the 8 symmetries of the square
        index = torch.randint(0, 8, (n,), generator=generator)
        index = torch.where(happens(P_FLIP, n, generator), index, torch.zeros_like(index))
        xs, ys, keep = DIHEDRAL_X[index], DIHEDRAL_Y[index], DIHEDRAL_KEEP[index]
        matrices[:, 0, 0], matrices[:, 0, 1] = xs * keep, xs * (1 - keep)
        matrices[:, 1, 0], matrices[:, 1, 1] = ys * (1 - keep), ys * keep
    elif augment.flip:
        matrices[:, 0, 0] = torch.where(happens(P_FLIP, n, generator), -1.0, 1.0)
    return matrices


def rotation_matrices(n: int, augment: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    degrees = uniform(-augment.max_rotate, augment.max_rotate, n, generator) * happens(P_AFFINE, n, generator)
    theta = degrees * math.pi / 180
    matrices = torch.eye(3).repeat(n, 1, 1)
    matrices[:, 0, 0], matrices[:, 0, 1] = theta.cos(), theta.sin()
    matrices[:, 1, 0], matrices[:, 1, 1] = -theta.sin(), theta.cos()
    return matrices


def zoom_matrices(n: int, generator: torch.Generator) -> torch.Tensor:
    zoom = torch.where(happens(P_AFFINE, n, generator), uniform(1.0, MAX_ZOOM, n, generator), 1.0)
    scale = 1 / zoom
    matrices = torch.eye(3).repeat(n, 1, 1)
    matrices[:, 0, 0] = matrices[:, 1, 1] = scale
    matrices[:, 0, 2] = (1 - scale) * (2 * torch.rand(n, generator=generator) - 1)
    matrices[:, 1, 2] = (1 - scale) * (2 * torch.rand(n, generator=generator) - 1)
    return matrices


def crop_matrices(n: int, augment: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    side = uniform(augment.min_scale, 1.0, n, generator).sqrt()  # a square of that share of the area
    matrices = torch.eye(3).repeat(n, 1, 1)
    matrices[:, 0, 0] = matrices[:, 1, 1] = side
    matrices[:, 0, 2] = (1 - side) * (2 * torch.rand(n, generator=generator) - 1)
    matrices[:, 1, 2] = (1 - side) * (2 * torch.rand(n, generator=generator) - 1)
    return matrices


def affine_maps(n: int, augment: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """n x 2 x 3: output coordinates -> item coordinates. fastai applies flip, rotation and zoom
    (composed in that order) to the item, then crops the result: so the crop is applied first here."""
    affine = (
        flip_matrices(n, augment, generator)
        @ rotation_matrices(n, augment, generator)
        @ zoom_matrices(n, generator)
    )
    return (affine @ crop_matrices(n, augment, generator))[:, :2, :]


def lighting_draws(
    n: int, augment: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's brightness (0.5: unchanged) and contrast (1: unchanged), drawn as fastai draws them."""
    low = augment.max_lighting
    brightness = torch.where(
        happens(P_LIGHTING, n, generator), uniform(0.5 * (1 - low), 0.5 * (1 + low), n, generator), 0.5
    )
    contrast = torch.where(
        happens(P_LIGHTING, n, generator),
        uniform(math.log(1 - low), -math.log(1 - low), n, generator).exp(),
        1.0,
    )
    return brightness, contrast


def light(values: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """fastai's brightness then contrast, in logit space, on N x C x H x W values in [0, 1] (in place)."""
    shape = (-1, 1, 1, 1)
    brightness, contrast = brightness.to(values.device).view(shape), contrast.to(values.device).view(shape)
    return values.logit_(eps=1e-7).add_(torch.logit(brightness)).mul_(contrast).sigmoid_()


def normalise(values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(values - mean) / std per channel, in place; skipped for a model trained on [0, 1]."""
    if mean.any() or (std != 1).any():
        values.sub_(mean.to(values.device).view(1, 3, 1, 1)).div_(std.to(values.device).view(1, 3, 1, 1))
    return values


def sampling_grid(maps: torch.Tensor, size: int) -> torch.Tensor:
    """`F.affine_grid(maps, (n, c, size, size), align_corners=True)` without its batched matrix
    product over every output pixel: x and y are each one broadcast sum of a row and a column term."""
    line = torch.linspace(-1, 1, size, dtype=maps.dtype, device=maps.device)
    grid = torch.empty(maps.shape[0], size, size, 2, dtype=maps.dtype, device=maps.device)
    for axis in range(2):
        across = maps[:, axis, 0, None, None] * line.view(1, 1, size)
        down = maps[:, axis, 1, None, None] * line.view(1, size, 1) + maps[:, axis, 2, None, None]
        torch.add(across, down, out=grid[..., axis])
    return grid


def resample(images: torch.Tensor, maps: torch.Tensor, size: int) -> torch.Tensor:
    grid = sampling_grid(maps.to(images.device, images.dtype), size)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def augment_batch(
    images: torch.Tensor,
    size: int,
    augment: AugmentConfig,
    generator: torch.Generator,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """Images (N x 3 x H x W, uint8 or floats in 0..255) randomly transformed into normalised floats,
    N x 3 x size x size (a new tensor: `images` is only read)."""
    maps = affine_maps(images.shape[0], augment, generator)
    values = resample(images.float(), maps, size).div_(255)  # scaled after: the output is the smaller
    if augment.max_lighting:
        values = light(values, *lighting_draws(images.shape[0], augment, generator))
    return normalise(values, mean, std)


def resize_batch(images: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images (uint8 or floats in 0..255) resized whole to size x size and normalised, into a new
    tensor: fastai's validation transform."""
    identity = torch.eye(3)[:2].repeat(images.shape[0], 1, 1)
    return normalise(resample(images.float(), identity, size).div_(255), mean, std)
