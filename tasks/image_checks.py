"""Images to facts and cache: each row's image is hashed and, unless its content is already cached for an
active sample, decoded once into the image cache at every size the config needs."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from foldwise.config import FoldwiseConfig
from foldwise.db import samples as sample_store
from foldwise.tasks.cache import ImageCache, decode_size, make_items
from foldwise.tasks.images import UnreadableImage, decode_image, parallel_map, read_image_file
from foldwise.tasks.label_files import LabeledRow


@dataclass(frozen=True)
class ImageFacts:
    """What a pull records of a usable image file."""

    content_hash: str
    file_size: int
    file_mtime_ns: int


@dataclass(frozen=True)
class ImageCheck:
    """One image to check, and the hash under which it needs no decoding: an active sample's whose
    items are all in the cache already."""

    path: Path
    trusted_hash: str | None


def inspect_image(
    check: ImageCheck, source_root: Path, max_pixels: int, sizes: list[int]
) -> tuple[ImageFacts | str, dict[int, np.ndarray] | None]:
    """Hash the image and, unless its content is trusted, decode it whole into its cache items; a
    string says why it cannot be used. Links out of the source folder are not followed."""
    path = check.path
    name = path.relative_to(source_root) if path.is_relative_to(source_root) else path
    try:
        # os.path's, not Path.resolve: on Python 3.11 a link loop raises RuntimeError there.
        real = Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        return f"image file {name} not found", None
    except OSError as error:
        return f"image file {name} cannot be read: {error.strerror}", None
    if not real.is_relative_to(source_root):
        return f"image file {name} is a link to {real}, outside the source folder: not followed", None
    try:
        content, status = read_image_file(real, name)
        facts = ImageFacts(hashlib.sha256(content).hexdigest(), status.st_size, status.st_mtime_ns)
        if facts.content_hash == check.trusted_hash:
            return facts, None
        pixels = decode_image(content, name, max_pixels, min_size=decode_size(sizes))
    except UnreadableImage as error:
        return str(error), None
    return facts, make_items(pixels, sizes)


def inspect_chunk(
    checks: list[ImageCheck], source_root: Path, max_pixels: int, sizes: list[int]
) -> list[tuple[ImageFacts | str, dict[int, np.ndarray] | None]]:
    """`inspect_image` of each check: one unit of work for a worker process."""
    return [inspect_image(check, source_root, max_pixels, sizes) for check in checks]


def inspect_images(
    rows: list[LabeledRow], config: FoldwiseConfig, stored: dict[str, sample_store.StoredSample]
) -> tuple[list[ImageFacts | str], int]:
    """Facts of every row's image, in order, and how many images were decoded. Each decoded image goes
    into the image cache at every size the config needs: it is never decoded again."""
    cache = ImageCache(config)

    def trusted(sample: sample_store.StoredSample | None) -> str | None:
        """The hash of an active sample whose items are all cached, else None."""
        if sample is None or not sample.active or cache.missing(sample.content_hash):
            return None
        return sample.content_hash

    checks = [ImageCheck(row.image_path, trusted(stored.get(row.key))) for row in rows]
    inspect = partial(
        inspect_chunk,
        source_root=config.source.path.resolve(),
        max_pixels=config.data.max_image_pixels,
        sizes=cache.sizes,
    )
    facts, batch, n_decoded = [], {}, 0
    for fact, items in parallel_map(inspect, checks):
        facts.append(fact)
        if items is not None:
            batch[fact.content_hash] = items
            n_decoded += 1
        if len(batch) >= 256:  # bounded memory; the cache is keyed by content, so early writes are safe
            cache.add(batch)
            batch = {}
    cache.add(batch)
    return facts, n_decoded
