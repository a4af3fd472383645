"""The image cache: every validated image decoded once, kept pre-resized as uint8, shared by everything
that reads pixels afterwards: every fold and stage, lr_find, out-of-fold and gate set prediction, the
gate, TTA.

Items are the presized squares the stages need (`to_item`: stage size x `augment.presize`, rounded
up), keyed by the image's content hash, so an entry is valid whatever the database says and a
changed image is simply a new key. One store per item size under `data_home/cache/<size>px/`:
`pixels.u8`, an append-only file of rows of size x size x 3 bytes read as a numpy memmap, and
`index.json`, content hash -> row, replaced whole after the rows it names are written (a reader never
sees a row that is not there). Gathering a batch is one fancy-indexing copy from the page cache.

Ingest fills it as it validates images (the decode it needs anyway: an image is decoded once), so
that after a pull every active sample is in it at every size the config needs, and reclaims the rows
no active sample uses; `ensure_cached` adds what another model needs (the champion's sizes, for the
gate). Writers hold the training lock. A full disk while writing is a DiskError naming the store's
file, and leaves the store as it was.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from foldwise.config import FoldwiseConfig, StageConfig
from foldwise.files import atomic_file, reported_disk_errors
from foldwise.tasks.images import UnreadableImage, decode_image, parallel_map, read_image_file, to_item
from foldwise.tasks.logs import get_logger

COMPACT_WHEN_UNUSED = 0.25  # rewrite a store when more than this share of its rows is unused


def item_size(stage: StageConfig, presize: float) -> int:
    return math.ceil(stage.size * presize)


def item_sizes(config: FoldwiseConfig) -> list[int]:
    """The item sizes of every stage a run of this config may train (warm-start stages too)."""
    stages = [*config.train.stages, *(config.train.warm_start_stages or [])]
    return sorted({item_size(stage, config.augment.presize) for stage in stages})


def decode_size(sizes: Iterable[int]) -> int:
    """A JPEG is decoded at no less than twice the largest item: the resize then sees enough pixels
    to land within a grey level of a full decode, and decoding scaled is still cheaper."""
    return 2 * max(sizes)


def make_items(pixels: np.ndarray, sizes: list[int]) -> dict[int, np.ndarray]:
    return {size: to_item(pixels, size) for size in sizes}


def cache_write(path: Path) -> str:
    """What failed, in a full disk's message."""
    return f"cannot write the image cache {path}"


class ImageStore:
    """The items of one size: content hash -> a row of a memmapped uint8 array."""

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = folder, size
        self.data_path, self.index_path = folder / "pixels.u8", folder / "index.json"
        try:
            self.rows: dict[str, int] = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            self.rows = {}

    @property
    def row_bytes(self) -> int:
        return self.size * self.size * 3

    def __contains__(self, content_hash: str) -> bool:
        return content_hash in self.rows

    def add(self, items: dict[str, np.ndarray]) -> None:
        """Append items (content hash -> size x size x 3 uint8), then publish them in the index."""
        new = {key: item for key, item in items.items() if key not in self.rows}
        if not new:
            return
        first = None
        with reported_disk_errors(self.data_path, cache_write(self.data_path)):
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                with self.data_path.open("ab") as data:
                    first = data.tell() // self.row_bytes
                    data.truncate(first * self.row_bytes)  # a crash mid-append left a partial row: cut it
                    for item in new.values():
                        assert item.shape == (self.size, self.size, 3) and item.dtype == np.uint8
                        data.write(item.tobytes())
                    data.flush()
                    os.fsync(data.fileno())
                rows = self.rows | {key: first + offset for offset, key in enumerate(new)}
                self.write_index(rows)
            except Exception:
                if first is not None:  # a full disk, say: the rows go, as no index names them
                    os.truncate(self.data_path, first * self.row_bytes)
                raise
        self.rows = rows

    def write_index(self, rows: dict[str, int]) -> None:
        with atomic_file(self.index_path, cache_write(self.index_path)) as partial:
            partial.write_text(json.dumps(rows))

    def pixels(self) -> np.ndarray:
        """Every row, memory-mapped (read-only): N x size x size x 3."""
        if not self.rows:
            return np.zeros((0, self.size, self.size, 3), dtype=np.uint8)
        count = max(self.rows.values()) + 1
        return np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=(count, self.size, self.size, 3))

    def compact(self, keep: set[str]) -> int:
        """Rewrite the store with only the rows of `keep`; returns how many rows were reclaimed."""
        unused = [key for key in self.rows if key not in keep]
        if not unused or len(unused) <= COMPACT_WHEN_UNUSED * len(self.rows):
            return 0
        kept = [key for key in self.rows if key in keep]
        source = self.pixels()
        with atomic_file(self.data_path, cache_write(self.data_path)) as partial, partial.open("wb") as data:
            for key in kept:
                data.write(np.asarray(source[self.rows[key]]).tobytes())
            data.flush()
            os.fsync(data.fileno())
        del source
        self.rows = {key: row for row, key in enumerate(kept)}
        self.write_index(self.rows)
        return len(unused)


class ImageCache:
    """The stores of every item size a config needs."""

    def __init__(self, config: FoldwiseConfig, sizes: list[int] | None = None):
        self.root = config.data_home / "cache"
        self.sizes = sizes or item_sizes(config)
        self.stores = {size: ImageStore(self.root / f"{size}px", size) for size in self.sizes}

    def missing(self, content_hash: str) -> list[int]:
        return [size for size, store in self.stores.items() if content_hash not in store]

    def add(self, items: dict[str, dict[int, np.ndarray]]) -> None:
        """content hash -> {item size -> item}."""
        for size, store in self.stores.items():
            store.add({key: by_size[size] for key, by_size in items.items() if size in by_size})

    def store(self, size: int) -> ImageStore:
        if size not in self.stores:
            self.stores[size] = ImageStore(self.root / f"{size}px", size)
        return self.stores[size]


@dataclass(frozen=True)
class CachedImage:
    """What the cache needs to know of an image to decode it: its file, its name in messages, its hash."""

    path: str
    name: str
    content_hash: str


def decode_items(
    images: list[CachedImage], sizes: list[int], max_pixels: int
) -> list[dict[int, np.ndarray] | str]:
    """Items of each image at each size, or the reason it cannot be read (a worker's chunk)."""
    outcomes: list[dict[int, np.ndarray] | str] = []
    for image in images:
        try:
            content, _ = read_image_file(image.path, image.name)
            pixels = decode_image(content, image.name, max_pixels, min_size=decode_size(sizes))
        except UnreadableImage as error:
            outcomes.append(str(error))
        else:
            outcomes.append(make_items(pixels, sizes))
    return outcomes


def ensure_cached(config: FoldwiseConfig, images: list[CachedImage], sizes: list[int]) -> dict[str, str]:
    """Decode the images missing at any of these sizes into the cache (normally none: ingest caches
    what it validates). Returns the hashes that cannot be decoded any more, with why."""
    cache = ImageCache(config, sizes)
    missing = [image for image in images if cache.missing(image.content_hash)]
    if not missing:
        return {}
    decode = partial(decode_items, sizes=sizes, max_pixels=config.data.max_image_pixels)
    failures, batch = {}, {}
    for image, outcome in zip(missing, parallel_map(decode, missing), strict=True):
        if isinstance(outcome, str):
            failures[image.content_hash] = outcome
        else:
            batch[image.content_hash] = outcome
        if len(batch) >= 256:  # publish as it goes: bounded memory, and a crash keeps what was done
            cache.add(batch)
            batch = {}
    cache.add(batch)
    get_logger(__name__).info(
        "image cache: decoded %d image(s) it did not hold", len(missing) - len(failures)
    )
    return failures


def reclaim(config: FoldwiseConfig, keep: set[str]) -> int:
    """Remove the items of images no active sample uses any more (when they are enough to matter)."""
    root = config.data_home / "cache"
    if not root.is_dir():
        return 0
    stores = [ImageStore(folder, int(folder.name.removesuffix("px"))) for folder in root.glob("*px")]
    return sum(store.compact(keep) for store in stores)
