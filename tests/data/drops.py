"""A real source folder that takes drops, and what a test needs to check what each pull made of it."""

from __future__ import annotations

import io
import os
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from foldwise.config import FoldwiseConfig
from foldwise.db import models
from foldwise.db.models import ACTIVE, DataPull, RejectedRow, Sample, SampleEvent
from foldwise.db.session import session_scope
from foldwise.tasks.demo import DIGIT_NAMES
from foldwise.tasks.ingest import PullSummary, ingest
from tests.conftest import tiny_demo_config

HEADER = "image_name,tags\n"
MEMORY_ADDRESS = re.compile(r"at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{8,}")  # `<_io.BytesIO object at 0x7f...>`
TABLES = (DataPull, models.Label, RejectedRow, Sample, SampleEvent, models.SampleLabel)


def encoded(image: Image.Image, image_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def noise(size: int = 32, seed: int = 0) -> Image.Image:
    """An RGB image that does not compress away, so that half of its file is half of its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def huge_png(width: int, height: int) -> bytes:
    """A one-bit PNG of width x height black pixels, written row by row without a canvas in memory:
    a few KiB on disk, width * height pixels once decoded."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte, then one bit per pixel
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def peak_memory_mib(reset: bool = False) -> float:
    """This process's peak resident memory (Linux); with `reset`, the peak from now on."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024


class Drops:
    """A source folder in the demo's layout (labels_*.csv, images/<id>.png) and its database.

    `drop` writes the next label file; `pull` ingests and checks that the pull's record agrees with
    its summary (one transaction: all of it or nothing)."""

    def __init__(self, tmp_path: Path, database_url: str):
        self.tmp_path, self.url = tmp_path, database_url
        self.root = tmp_path / "source"
        self.images = self.root / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.overrides: list[str] = []
        self.n_drops = 0
        self.last: PullSummary | None = None  # the latest pull's summary

    def config(self) -> FoldwiseConfig:
        return tiny_demo_config(self.tmp_path, self.url, *self.overrides)

    def image(self, key: str, content: bytes | Image.Image | None = None) -> Path:
        """Write the image of `key` (a small good one by default)."""
        if content is None:
            content = noise(8, seed=len(key))
        path = self.images / f"{key}.png"
        path.write_bytes(encoded(content) if isinstance(content, Image.Image) else content)
        return path

    def drop(self, content: str | bytes, name: str | None = None) -> str:
        """Write the next label file (labels_NN.csv, later names sort later); returns its name."""
        self.n_drops += 1
        name = name or f"labels_{self.n_drops:02d}.csv"
        path = self.root / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return name

    def age(self, seconds: float = 3600) -> None:
        """Date every file of the source `seconds` back: delivered long ago, finished."""
        then = time.time() - seconds
        for path in self.root.rglob("*"):
            os.utime(path, (then, then), follow_symlinks=False)

    def good_drop(self, *keys: str, label: str = "two") -> str:
        for key in keys:
            self.image(key)
        return self.drop(HEADER + "".join(f"{key},{label}\n" for key in keys))

    def pull(self) -> PullSummary:
        summary = ingest(self.config())
        with session_scope(self.url) as session:
            pull = session.get_one(DataPull, summary.pull_id)
            n_active = session.scalar(select(func.count()).where(Sample.status == ACTIVE))
            n_recorded = session.scalar(select(func.count()).where(RejectedRow.pull_id == pull.id))
            recorded = (pull.n_added, pull.n_updated, pull.n_rejected, pull.n_quarantined, pull.n_retired)
        assert pull.finished_at is not None and pull.dataset_version == summary.dataset_version
        assert recorded == (
            summary.n_added,
            summary.n_updated,
            summary.n_rejected,
            summary.n_quarantined,
            summary.n_retired,
        )
        assert n_recorded == summary.n_rejected and n_active == summary.dataset_size
        assert pull.new_labels == summary.new_labels
        self.last = summary
        return summary

    def sample(self, key: str) -> Sample:
        with session_scope(self.url) as session:
            sample = session.scalar(select(Sample).where(Sample.key == key))
        assert sample is not None, f"no sample {key!r}"
        return sample

    def has_sample(self, key: str) -> bool:
        with session_scope(self.url) as session:
            return session.scalar(select(func.count()).where(Sample.key == key)) == 1

    def status(self, key: str) -> tuple[str, str | None]:
        sample = self.sample(key)
        return sample.status, sample.status_reason

    def labels(self, key: str) -> set[str]:
        with session_scope(self.url) as session:
            sample = session.scalar(select(Sample).where(Sample.key == key))
            return {label.name for label in sample.labels}

    def quarantine_reason(self, key: str) -> str:
        """The reason `key` is quarantined; it must name the image file."""
        status, reason = self.status(key)
        assert status == models.QUARANTINED, (key, status, reason)
        assert f"images/{key}.png" in reason, reason
        return reason

    def events(self, key: str) -> list[tuple[str, str]]:
        with session_scope(self.url) as session:
            query = (
                select(SampleEvent.kind, SampleEvent.detail)
                .join(Sample, Sample.id == SampleEvent.sample_id)
                .where(Sample.key == key)
                .order_by(SampleEvent.id)
            )
            return [tuple(row) for row in session.execute(query)]

    def rejected(self) -> list[RejectedRow]:
        with session_scope(self.url) as session:
            return list(session.scalars(select(RejectedRow).order_by(RejectedRow.id)))

    def vocabulary(self) -> set[str]:
        with session_scope(self.url) as session:
            return set(session.scalars(select(models.Label.name)))

    def counts(self) -> dict[str, int]:
        with session_scope(self.url) as session:
            return {
                table.__tablename__: session.scalar(select(func.count()).select_from(table))
                for table in TABLES
            }

    def messages(self) -> list[str]:
        """Every reason and detail recorded: rejections, quarantines, events."""
        with session_scope(self.url) as session:
            texts = list(session.scalars(select(RejectedRow.reason)))
            texts += [reason for reason in session.scalars(select(Sample.status_reason)) if reason]
            texts += list(session.scalars(select(SampleEvent.detail)))
        return texts


VOCABULARY = "data.vocabulary=[" + ", ".join(f'"{name}"' for name in DIGIT_NAMES) + "]"
