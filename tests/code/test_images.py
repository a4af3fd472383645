"""Images read upright and in sRGB by the one decode path (`tasks/images.py`), JPEGs through
libjpeg-turbo as other formats through PIL."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from foldwise.tasks import images
from foldwise.tasks.images import decode_image

MAX_PIXELS = 100_000_000


def with_orientation(image: Image.Image, orientation: int, image_format: str) -> bytes:
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    options = {"quality": 95} if image_format in images.JPEG_FORMATS else {}
    if image_format == "MPO":  # a phone's: a second picture after the first
        options |= {"save_all": True, "append_images": [Image.new("RGB", image.size)]}
    image.save(buffer, image_format, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def reference(content: bytes) -> np.ndarray:
    """PIL's own reading of the file, turned upright by PIL."""
    with Image.open(io.BytesIO(content)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def gradient(width: int = 12, height: int = 8) -> Image.Image:
    """An image no flip or rotation leaves as it was."""
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows * 30, columns * 20, (rows * columns) % 255], axis=2).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("image_format", ["JPEG", "MPO", "PNG", "WEBP"])
def test_every_exif_orientation_is_read_as_exif_transpose_reads_it(orientation, image_format):
    content = with_orientation(gradient(), orientation, image_format)
    if image_format in images.JPEG_FORMATS:
        assert images.simplejpeg is not None and images.decode_jpeg(content, 0) is not None  # the fast path
    expected = reference(content)
    pixels = decode_image(content, "x", MAX_PIXELS)
    assert pixels.shape == expected.shape == ((12, 8, 3) if orientation >= 5 else (8, 12, 3))
    assert np.abs(pixels.astype(int) - expected).max() <= 1  # libjpeg-turbo and PIL's libjpeg: the same
    stored = decode_image(with_orientation(gradient(), 1, image_format), "x", MAX_PIXELS)
    assert (orientation == 1) == (pixels.shape == stored.shape and np.array_equal(pixels, stored))


def test_a_jpeg_decoded_scaled_down_is_turned_upright_too():
    content = with_orientation(gradient(64, 32), 6, "JPEG")
    pixels = decode_image(content, "x", MAX_PIXELS, min_size=8)
    assert pixels.shape == (16, 8, 3)  # libjpeg-turbo's scale 1/4, then turned: taller than wide
    small = np.asarray(Image.fromarray(reference(content)).resize((8, 16), Image.Resampling.BOX))
    assert np.abs(pixels.astype(int) - small).mean() < 8


def swapped_primaries_profile() -> bytes:
    """An RGB ICC profile that is not sRGB: sRGB's own, with the red and green primaries swapped (so
    that its pure red is sRGB's pure green) and another name."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack(">I", profile[128:132])
    entries = {}
    for index in range(count):
        start = 132 + 12 * index
        entries[bytes(profile[start : start + 4])] = start
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    profile[red + 4 : red + 12], profile[green + 4 : green + 12] = (
        profile[green + 4 : green + 12],
        profile[red + 4 : red + 12],
    )
    name = "sRGB".encode("utf-16-be")
    assert name in profile
    return bytes(profile).replace(name, "GRBs".encode("utf-16-be"))


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_an_icc_profile_is_converted_to_srgb(image_format):
    profile = swapped_primaries_profile()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buffer, image_format, icc_profile=profile, quality=95)
    red, green, blue = decode_image(buffer.getvalue(), "x", MAX_PIXELS)[4, 4].astype(int)
    assert green > 200 and red < 60 and blue < 60  # its red is sRGB's green


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_an_srgb_profile_leaves_the_pixels_as_they_are(image_format):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged, plain = io.BytesIO(), io.BytesIO()
    gradient().save(tagged, image_format, icc_profile=srgb, quality=95)
    gradient().save(plain, image_format, quality=95)
    assert np.array_equal(
        decode_image(tagged.getvalue(), "x", MAX_PIXELS), decode_image(plain.getvalue(), "x", MAX_PIXELS)
    )


def test_a_profile_that_cannot_be_read_is_ignored():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, "PNG", icc_profile=b"not a profile")
    assert decode_image(buffer.getvalue(), "x", MAX_PIXELS)[0, 0].tolist() == [10, 20, 30]
