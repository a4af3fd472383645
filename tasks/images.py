"""Reading an image file into RGB pixels: the one way Foldwise decodes images, for ingest, training,
prediction and the gate alike.

- Any mode PIL reads becomes 8-bit RGB. 16-bit images (grey `I;16`, or `I` holding values above 255)
  are scaled by 255/65535 instead of clipped at 255; float images in [0, 1] are scaled by 255, other
  float or 32-bit images are stretched from their minimum to their maximum.
- An image of more than `max_pixels` pixels is refused from its header, before it is decoded
  (decompression bombs).
- Only a regular file is read: a named pipe would block for ever, a device might never end.
- JPEGs are decoded by libjpeg-turbo through simplejpeg when it is installed, scaled down while they
  are decoded when only a smaller size is needed (`min_size`) rather than decoded whole then resized.
  Anything it does not take (CMYK, a damaged file) goes to PIL, which decides.
- Every image is turned upright by its EXIF orientation (as `ImageOps.exif_transpose`), and converted
  to sRGB when it embeds another ICC profile. simplejpeg reads neither: PIL reads them from the
  header (without decoding), and the decoded pixels are turned and converted afterwards.
- `to_item` makes the item every model sees (presizing): the centred square, resized with PIL's
  bilinear filter, as fastai's `Resize` does.
- A problem is an `UnreadableImage` whose message names the file.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

try:
    import simplejpeg
except ImportError:  # PIL decodes JPEGs too, only slower
    simplejpeg = None

from foldwise.errors import FoldwiseError

SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
JPEG_FORMATS = {"JPEG", "MPO"}  # MPO: a phone's JPEG with more pictures after the first, the one read
ORIENTATION_TAG = 0x0112  # EXIF's Orientation
SRGB = ImageCms.createProfile("sRGB")
# The modes an embedded ICC profile is applied to, and the mode the transform reads them in.
ICC_MODES = {"RGB": "RGB", "RGBA": "RGB", "P": "RGB", "L": "L", "LA": "L", "CMYK": "CMYK"}


class UnreadableImage(FoldwiseError):
    """An image file that cannot be used; the message names it and says why."""


def to_rgb(image: Image.Image) -> np.ndarray:
    """H x W x 3 uint8 pixels of any PIL image, scaled (not clipped) from deeper modes."""
    if image.mode not in SIXTEEN_BIT_MODES and image.mode not in ("I", "F"):
        return np.asarray(image.convert("RGB"))
    values = np.asarray(image, dtype=np.float64)
    low, high = values.min(), values.max()
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values * (255.0 / 65535.0)
    elif low >= 0 and high <= (1 if image.mode == "F" else 255):
        scaled = values * (255.0 if image.mode == "F" else 1.0)
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def decode_jpeg(content: bytes, min_size: int) -> np.ndarray | None:
    """libjpeg-turbo's decode, at the smallest scale whose sides stay at least `min_size`; None when
    it cannot decode this file (PIL then does)."""
    try:
        return simplejpeg.decode_jpeg(content, colorspace="RGB", min_height=min_size, min_width=min_size)
    except ValueError:
        return None


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) an image declares; 1 (upright as stored) when it declares none."""
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, ValueError, SyntaxError, struct.error):  # a damaged EXIF block: the pixels still count
        return 1
    return orientation if orientation in range(1, 9) else 1


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as they are meant to be seen: `ImageOps.exif_transpose`'s flips and rotations."""
    match orientation:
        case 2:
            turned = pixels[:, ::-1]
        case 3:
            turned = pixels[::-1, ::-1]
        case 4:
            turned = pixels[::-1]
        case 5:
            turned = pixels.transpose(1, 0, 2)
        case 6:
            turned = np.rot90(pixels, -1)
        case 7:
            turned = pixels.transpose(1, 0, 2)[::-1, ::-1]
        case 8:
            turned = np.rot90(pixels, 1)
        case _:
            return pixels
    return np.ascontiguousarray(turned)


@functools.lru_cache(maxsize=16)
def srgb_transform(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from an embedded ICC profile to sRGB for images of `mode`; None when the profile
    is sRGB already, or cannot be used (the pixels are then taken as sRGB, as when none is embedded)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if ImageCms.getProfileDescription(source).strip().startswith("sRGB"):
            return None
        return ImageCms.buildTransform(source, SRGB, mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def to_srgb(image: Image.Image, profile: bytes | None) -> Image.Image:
    """`image` converted from its embedded ICC profile to sRGB (as RGB); as it is without one."""
    if not profile or image.mode not in ICC_MODES:
        return image
    mode = ICC_MODES[image.mode]
    transform = srgb_transform(profile, mode)
    if transform is None:
        return image
    try:
        return ImageCms.applyTransform(image.convert(mode), transform)
    except ImageCms.PyCMSError:  # a profile of another colour space than the pixels': ignored
        return image


def decode_image(content: bytes, name: str | Path, max_pixels: int, min_size: int = 0) -> np.ndarray:
    """Upright sRGB pixels of an encoded image, or UnreadableImage naming `name`. With `min_size`,
    the result may be smaller than the image, but no side under `min_size` (unless the image's own is)."""
    try:
        with Image.open(io.BytesIO(content)) as image:  # the header only: size, EXIF, ICC profile
            width, height = image.size
            if width * height > max_pixels:
                raise UnreadableImage(too_large(name, width, height, max_pixels))
            pixels = None
            if simplejpeg is not None and image.format in JPEG_FORMATS:
                pixels = decode_jpeg(content, min_size)
            profile = image.info.get("icc_profile")
            if pixels is None:
                image.load()
                pixels = to_rgb(to_srgb(image, profile))
            elif profile:
                pixels = np.asarray(to_srgb(Image.fromarray(pixels), profile))
            # After load: a PNG may keep its EXIF after the pixels.
            return upright(pixels, exif_orientation(image))
    except Image.DecompressionBombError as error:  # Pillow's own limit, met before ours when it is lower
        raise UnreadableImage(f"{name} is refused unread: {error}") from None
    except UnidentifiedImageError:
        raise UnreadableImage(f"{name} is not an image file that can be read (unknown format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise UnreadableImage(f"{name} is corrupt: {error}") from None


def too_large(name: str | Path, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{name} is {width} x {height} = {width * height:,} pixels, more than data.max_image_pixels "
        f"({max_pixels:,}): refused unread"
    )


def read_image_file(path: str | Path, name: str | Path) -> tuple[bytes, os.stat_result]:
    """The bytes of an image file and its status, or UnreadableImage naming `name`."""
    try:
        # Non-blocking, so that opening a named pipe returns at once and is refused below.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UnreadableImage(f"image file {name} not found") from None
    except OSError as error:
        raise UnreadableImage(f"image file {name} cannot be read: {error.strerror}") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        kind = "a directory" if stat.S_ISDIR(status.st_mode) else "not a regular file"
        raise UnreadableImage(f"image file {name} is {kind}: replace it with an image file")
    with os.fdopen(descriptor, "rb") as file:
        try:
            return file.read(), status
        except OSError as error:
            raise UnreadableImage(f"image file {name} cannot be read: {error.strerror}") from None


def read_image(path: Path, max_pixels: int) -> np.ndarray:
    content, _ = read_image_file(path, path)
    return decode_image(content, path, max_pixels)


def to_item(pixels: np.ndarray, size: int) -> np.ndarray:
    """The centred square of the image, resized to size x size (the presized item)."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR))


def parallel_map(
    function: Callable[[list], list], items: list, chunk: int = 32, processes_from: int = 64
) -> Iterator[Any]:
    """`function` over chunks of `items` in worker processes (in this one when there are few: starting
    workers costs more), results in order, a chunk at a time so that few are in memory at once.
    Decoding is CPU-bound Python and C: processes use every core."""
    chunks = [items[start : start + chunk] for start in range(0, len(items), chunk)]
    workers = min(len(chunks), os.cpu_count() or 1)
    if len(items) < processes_from or workers < 2:
        for part in chunks:
            yield from function(part)
        return
    # Spawned, not forked: the parent runs Prefect's and the heartbeat's threads.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for results in pool.map(function, chunks):
            yield from results
