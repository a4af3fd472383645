"""Images to facts and cache: each row's image is hashed and, unless its content is already cached for an
active sample, decoded once into the image cache at every size the config needs.

With `data.near_duplicates`, each decoded image's perceptual hash (pHash) is computed from the same
pixels, so near duplicates can be grouped without reading any image again.

An image that cannot be decoded and changed within `data.settle_seconds` may still be being written:
it waits (`Arriving`) and its sample stays as it was until a later pull, instead of being quarantined.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from foldwise.config import FoldwiseConfig
from foldwise.db import samples as sample_store
from foldwise.db.models import QUARANTINED
from foldwise.tasks.cache import ImageCache, decode_size, make_items
from foldwise.tasks.images import UnreadableImage, decode_image, parallel_map, read_image_file
from foldwise.tasks.label_files import LabeledRow, SourceRows, settle_window


@dataclass(frozen=True)
class ImageFacts:
    """What a pull records of a usable image file."""

    content_hash: str
    file_size: int
    file_mtime_ns: int
    shape: tuple[int, int] | None = None  # height, width as decoded (upright), when this pull decoded it
    perceptual_hash: str | None = None  # 64-bit pHash in hex, when this pull decoded it (near_duplicates)


@dataclass(frozen=True)
class Arriving:
    """An image that cannot be decoded yet and changed just now: read again at the next pull."""

    reason: str


@dataclass(frozen=True)
class ImageCheck:
    """One image to check, and the hash under which it needs no decoding: an active sample's whose
    items are all in the cache already."""

    path: Path
    trusted_hash: str | None


HASH_SIDE = 32  # the grey square pHash reads
FLAT_GREY_LEVELS = 2.0  # a spread of grey levels below which an image has no pattern to hash


def perceptual_hash(pixels: np.ndarray) -> str:
    """The 64-bit pHash of upright pixels, in hex: close for re-encoded or resized copies of an image.
    '' for a near-uniform image: its pHash is rounding noise, the same for every near-uniform image
    whatever its colour, so such an image is grouped by its exact content only."""
    image = Image.fromarray(pixels)
    grey = np.asarray(
        image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR), dtype=float
    )
    if grey.std() < FLAT_GREY_LEVELS:
        return ""
    return str(imagehash.phash(image))


def inspect_image(
    check: ImageCheck,
    source_root: Path,
    max_pixels: int,
    sizes: list[int],
    settle_seconds: float,
    near_duplicates: bool,
) -> tuple[ImageFacts | Arriving | str, dict[int, np.ndarray] | None]:
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
    except UnreadableImage as error:
        return str(error), None
    try:
        pixels = decode_image(content, name, max_pixels, min_size=decode_size(sizes))
    except UnreadableImage as error:
        if time.time() - status.st_mtime < settle_seconds:
            return Arriving(f"{error} (changed within data.settle_seconds: still being written?)"), None
        return str(error), None
    facts = replace(facts, shape=pixels.shape[:2])
    if near_duplicates:
        facts = replace(facts, perceptual_hash=perceptual_hash(pixels))
    return facts, make_items(pixels, sizes)


def inspect_chunk(
    checks: list[ImageCheck],
    source_root: Path,
    max_pixels: int,
    sizes: list[int],
    settle_seconds: float,
    near_duplicates: bool,
) -> list[tuple[ImageFacts | Arriving | str, dict[int, np.ndarray] | None]]:
    """`inspect_image` of each check: one unit of work for a worker process."""
    return [
        inspect_image(check, source_root, max_pixels, sizes, settle_seconds, near_duplicates)
        for check in checks
    ]


def inspect_images(
    rows: list[LabeledRow], config: FoldwiseConfig, stored: dict[str, sample_store.StoredSample]
) -> tuple[list[ImageFacts | Arriving | str], int]:
    """Facts of every row's image, in order, and how many images were decoded. Each decoded image goes
    into the image cache at every size the config needs: it is never decoded again."""
    cache = ImageCache(config)

    near_duplicates = config.data.near_duplicates

    def trusted(sample: sample_store.StoredSample | None) -> str | None:
        """The hash of an active sample whose items are all cached (and its pHash known, when near
        duplicates are grouped: samples pulled before get theirs once), else None."""
        if sample is None or not sample.active or cache.missing(sample.content_hash):
            return None
        if near_duplicates and sample.perceptual_hash is None:
            return None
        return sample.content_hash

    checks = [ImageCheck(row.image_path, trusted(stored.get(row.key))) for row in rows]
    inspect = partial(
        inspect_chunk,
        source_root=config.source.path.resolve(),
        max_pixels=config.data.max_image_pixels,
        sizes=cache.sizes,
        settle_seconds=settle_window(config),
        near_duplicates=near_duplicates,
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


def perceptual_hashes(facts: dict[str, ImageFacts | Arriving | str]) -> dict[str, str]:
    """The pHash of each image content decoded in this pull, by content hash."""
    return {
        fact.content_hash: fact.perceptual_hash
        for fact in facts.values()
        if isinstance(fact, ImageFacts) and fact.perceptual_hash is not None
    }


def hold_arriving(
    source: SourceRows,
    facts: dict[str, ImageFacts | Arriving | str],
    stored: dict[str, sample_store.StoredSample],
) -> list[tuple[str, str]]:
    """Leave the samples whose images are still arriving as they were: an active one keeps its image
    (its row's labels still count), a quarantined one its reason, a new or retired one waits unread.
    Changes `source` and `facts` in place; returns (id, why) of each."""
    waiting = []
    for key, fact in list(facts.items()):
        if not isinstance(fact, Arriving):
            continue
        waiting.append((key, fact.reason))
        before = stored.get(key)
        if before is not None and before.active:
            facts[key] = ImageFacts(before.content_hash, before.file_size, before.file_mtime_ns)
        elif before is not None and before.status == QUARANTINED:
            facts[key] = before.status_reason or fact.reason
        else:
            del facts[key], source.rows[key]
    return waiting


def extreme_aspect_ratios(
    facts: dict[str, ImageFacts | Arriving | str], limit: float
) -> list[tuple[str, str]]:
    """(id, why) of the images decoded in this pull whose long side exceeds `limit` times the short one."""
    found = []
    for key, fact in facts.items():
        if isinstance(fact, ImageFacts) and fact.shape is not None:
            short, long = sorted(fact.shape)
            if long > limit * max(short, 1):
                found.append(
                    (
                        key,
                        f"{fact.shape[1]} x {fact.shape[0]} pixels: its centred square keeps "
                        f"{short / long:.1%} of it (data.max_aspect_ratio = {limit:g})",
                    )
                )
    return found
