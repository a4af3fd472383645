"""The bad-input corpus (issue 12): each case is a drop into a real source folder, on SQLite and PostgreSQL.

Every case starts from a source folder whose first drop (base_a: zero, base_b: one) is pulled. It then
delivers its drop (new label files, images, or changes to what is there), pulls, and asserts its own
outcome: the clear error, the row's rejection or the sample's quarantine, with the file named. Every
pull's record must agree with its summary (one transaction), and after each case a good drop must be
ingested, with no rejection recorded again and no message holding a memory address. The last test
trains once, through the real `retrain` flow, on a drop of good and bad inputs together.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from foldwise.db.folds import latest_fold_set
from foldwise.db.models import ACTIVE, QUARANTINED, RETIRED, DataPull, Prediction, Run, Sample
from foldwise.db.session import get_engine, session_scope
from foldwise.flows.retrain import retrain
from foldwise.tasks.cache import ImageCache, item_sizes
from foldwise.tasks.demo import deliver_drop
from foldwise.tasks.folds import build_folds
from foldwise.tasks.images import ORIENTATION_TAG, read_image, to_item
from foldwise.tasks.ingest import PullSummary
from foldwise.tasks.label_files import IngestError
from tests.conftest import ROOT
from tests.data.drops import (
    HEADER,
    MEMORY_ADDRESS,
    VOCABULARY,
    Drops,
    encoded,
    huge_png,
    noise,
    peak_memory_mib,
)
from tests.sources.namespaces import in_namespace, needs_namespaces, read_only, tmpfs

MAX_PIXELS = 100_000_000  # the default data.max_image_pixels
# What a case's pulls do besides adding and updating samples. Each case declares it, and the records of
# its pulls must show exactly that; a case that declares nothing is accepted whole.
REJECTS, QUARANTINES, RETIRES, RESTORES, REFUSES = "rejects", "quarantines", "retires", "restores", "refuses"
CASES: list[tuple[Callable[[Drops], None], frozenset[str]]] = []


def case(*outcome: str) -> Callable[[Callable[[Drops], None]], Callable[[Drops], None]]:
    def register(function: Callable[[Drops], None]) -> Callable[[Drops], None]:
        CASES.append((function, frozenset(outcome)))
        return function

    return register


class CaseDrops(Drops):
    """Drops that count the pulls refused with an error (they leave no record)."""

    def __init__(self, tmp_path, database_url: str):
        super().__init__(tmp_path, database_url)
        self.n_refused = 0

    def pull(self) -> PullSummary:
        try:
            return super().pull()
        except Exception:
            self.n_refused += 1
            raise


def outcome_since(drops: CaseDrops, pull_id: int) -> frozenset[str]:
    """What the pulls after `pull_id` did, from their records in the database."""
    with session_scope(drops.url) as session:
        pulls = session.scalars(select(DataPull).where(DataPull.id > pull_id)).all()
    counts = {
        REJECTS: sum(pull.n_rejected for pull in pulls),
        QUARANTINES: sum(pull.n_quarantined for pull in pulls),
        RETIRES: sum(pull.n_retired for pull in pulls),
        RESTORES: sum(pull.n_restored for pull in pulls),
        REFUSES: drops.n_refused,
    }
    return frozenset(kind for kind, count in counts.items() if count)


def rejected(drops: Drops, summary: PullSummary, file: str, line: int, fragment: str) -> str:
    """The reason the row (line 0: the file) was rejected in this pull, recorded once, naming the file."""
    [rejection] = [r for r in summary.rejections if (r.file, r.line) == (file, line)]
    assert fragment in rejection.reason, rejection.reason
    assert str(rejection).startswith(f"{file}:{line} " if line else f"{file} ")
    assert [r.reason for r in drops.rejected() if (r.file, r.line) == (file, line)] == [rejection.reason]
    return rejection.reason


def quarantined(drops: Drops, summary: PullSummary, key: str, fragment: str) -> str:
    """The reason `key` was quarantined in this pull; it names the image file."""
    reason = drops.quarantine_reason(key)
    assert f"images/{key}.png" in reason and fragment in reason, reason
    assert (key, reason) in summary.quarantined
    assert drops.events(key)[-1] == ("quarantined", reason)
    return reason


def one_bad_image(drops: Drops, content: bytes, fragment: str) -> str:
    """A drop of a bad image and a good one: the bad one quarantined, the good one added."""
    drops.image("bad", content)
    drops.image("good")
    drops.drop(HEADER + "bad,zero\ngood,one\n")
    summary = drops.pull()
    assert (summary.n_added, summary.n_quarantined, summary.dataset_size) == (1, 1, 3)
    assert drops.status("good") == (ACTIVE, None)
    return quarantined(drops, summary, "bad", fragment)


def one_bad_row(drops: Drops, row: str, fragment: str) -> str:
    """A drop of a bad row (line 2) and a good one: the bad one rejected, the good one added."""
    drops.image("good")
    name = drops.drop(HEADER + row + "good,one\n")
    summary = drops.pull()
    assert (summary.n_added, summary.n_rejected, summary.dataset_size) == (1, 1, 3)
    return rejected(drops, summary, name, 2, fragment)


def readable_image(drops: Drops, content: bytes) -> np.ndarray:
    """A drop of an image in an unusual mode: accepted, and read as 8-bit RGB."""
    drops.image("odd", content)
    drops.drop(HEADER + "odd,zero\n")
    summary = drops.pull()
    assert (summary.n_added, summary.n_quarantined) == (1, 0)
    assert drops.status("odd") == (ACTIVE, None)
    pixels = read_image(drops.images / "odd.png", MAX_PIXELS)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    return pixels


# Images -----------------------------------------------------------------------------------------


@case(QUARANTINES)
def corrupt_jpeg(drops):
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 8
    one_bad_image(drops, jpeg, "images/bad.png is not an image file that can be read (unknown format)")


@case(QUARANTINES)
def corrupt_png(drops):
    png = encoded(noise(16))
    damaged = png[:60] + bytes(40) + png[100:]  # zeros in the middle of the pixel data
    one_bad_image(drops, damaged, "images/bad.png is corrupt: broken data stream")


@case(QUARANTINES)
def truncated_png(drops):
    png = encoded(noise(32))
    one_bad_image(drops, png[: len(png) // 2], "images/bad.png is corrupt")


@case(QUARANTINES)
def truncated_jpeg(drops):
    jpeg = encoded(noise(32), "JPEG")
    one_bad_image(drops, jpeg[: len(jpeg) // 2], "images/bad.png is corrupt: image file is truncated")


@case(QUARANTINES)
def empty_image_file(drops):
    one_bad_image(drops, b"", "images/bad.png is not an image file that can be read (unknown format)")


@case(QUARANTINES)
def text_file_as_image(drops):
    one_bad_image(drops, b"image_name,tags\n", "is not an image file that can be read (unknown format)")


@case()
def cmyk_jpeg(drops):
    pixels = readable_image(drops, encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    red, green, blue = pixels[4, 4].astype(int)
    assert red > 220 and green < 40 and blue < 40


@case()
def rgba_png(drops):
    pixels = readable_image(drops, encoded(Image.new("RGBA", (8, 8), (10, 20, 30, 128))))
    assert pixels[0, 0].tolist() == [10, 20, 30]


@case()
def palette_png(drops):
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert readable_image(drops, encoded(image))[0, 0].tolist() == [200, 100, 50]


@case()
def grey_png(drops):
    pixels = readable_image(drops, encoded(Image.new("L", (8, 8), 77)))
    assert pixels.shape == (8, 8, 3) and (pixels == 77).all()


@case()
def one_pixel_png(drops):
    assert readable_image(drops, encoded(Image.new("RGB", (1, 1), (5, 6, 7)))).tolist() == [[[5, 6, 7]]]


@case()
def sixteen_bit_grey_png(drops):
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert deep.mode == "I;16"
    pixels = readable_image(drops, encoded(deep))
    assert pixels[0, :, 0].tolist() == [0, 128, 255]  # scaled by 255/65535, not clipped at 255


@case()
def jpeg_named_png(drops):
    readable_image(drops, encoded(noise(16), "JPEG"))  # the content decides, not the name


@case(QUARANTINES)
def decompression_bomb(drops):
    bomb = huge_png(20_000, 20_000)
    assert len(bomb) < 200_000  # 400 million pixels, written cheaply
    before = peak_memory_mib(reset=True)
    reason = one_bad_image(drops, bomb, "400000000 pixels")
    assert "refused unread" in reason
    assert peak_memory_mib() - before < 100  # decoding it would take 400 MiB at least


@case()
def phone_photo_with_exif_orientation(drops):
    """Stored sideways, declared so in EXIF (orientation 6): cached upright, as `exif_transpose` reads it."""
    rows, columns = np.mgrid[0:48, 0:32]
    upright = np.stack([rows * 5, columns * 7, (rows * columns) % 256], axis=2).astype(np.uint8)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))
    drops.image("phone", encoded(stored, "JPEG", quality=100, subsampling=0, exif=exif.tobytes()))
    drops.drop(HEADER + "phone,zero\n")
    assert drops.pull().n_added == 1
    config = drops.config()
    store = ImageCache(config).store(item_sizes(config)[-1])
    cached = store.pixels()[store.rows[drops.sample("phone").content_hash]].astype(int)
    with Image.open(drops.images / "phone.png") as image:
        expected = to_item(np.asarray(ImageOps.exif_transpose(image).convert("RGB")), store.size)
    assert np.abs(cached - expected).mean() < 1
    assert np.abs(cached - to_item(np.asarray(stored), store.size)).mean() > 20  # not as stored


@case()
def one_pixel_high_strip(drops):
    """Warned about (its centred square is one pixel of it), not refused."""
    drops.image("strip", Image.new("RGB", (500, 1), (9, 9, 9)))
    drops.drop(HEADER + "strip,zero\n")
    summary = drops.pull()
    assert summary.n_added == 1 and drops.status("strip") == (ACTIVE, None)
    reason = "500 x 1 pixels: its centred square keeps 0.2% of it (data.max_aspect_ratio = 10)"
    assert summary.extreme_aspect == [("strip", reason)] and "1 of extreme aspect ratio" in str(summary)
    assert drops.pull().extreme_aspect == []  # said once, when it is decoded


SETTLE_WINDOW = "data.settle_seconds=60"


def arriving_image(drops: Drops, key: str, content: bytes) -> Path:
    """Half of `content` written just now as the image of `key`, its row and every other file of the
    source long since delivered; a pull leaves it, unread, to a later pull."""
    drops.overrides.append(SETTLE_WINDOW)
    if not drops.has_sample(key):
        drops.drop(HEADER + f"{key},zero\n")
    drops.age()
    path = drops.image(key, content[: len(content) // 2])
    summary = drops.pull()
    assert (summary.n_added, summary.n_updated, summary.n_quarantined) == (0, 0, 0)
    [waiting] = summary.waiting
    assert (
        waiting.startswith(f"the image of {key}: images/{key}.png is corrupt") and "settle_seconds" in waiting
    )
    return path


@case(QUARANTINES)
def truncated_image_still_arriving_then_abandoned(drops):
    arriving_image(drops, "arriving", encoded(noise(32), "JPEG"))
    assert not drops.has_sample("arriving")
    drops.age(120)  # its writer gave up
    quarantined(drops, drops.pull(), "arriving", "images/arriving.png is corrupt")
    drops.overrides.remove(SETTLE_WINDOW)


@case()
def truncated_image_still_arriving_then_completed(drops):
    content = encoded(noise(32))
    arriving_image(drops, "arriving", content).write_bytes(content)
    done = drops.pull()
    assert (done.n_added, done.waiting) == (1, []) and drops.status("arriving") == (ACTIVE, None)
    drops.overrides.remove(SETTLE_WINDOW)


@case()
def image_of_a_sample_being_replaced(drops):
    """The sample keeps its image while the new one arrives, then changes to it."""
    before = drops.sample("base_a")
    content = encoded(noise(32, seed=5))
    path = arriving_image(drops, "base_a", content)
    assert drops.status("base_a") == (ACTIVE, None) and drops.sample("base_a").version == before.version
    path.write_bytes(content)
    assert drops.pull().n_updated == 1 and drops.events("base_a")[-1] == ("changed", "image changed")
    drops.overrides.remove(SETTLE_WINDOW)


@case(QUARANTINES)
def more_pixels_than_the_setting(drops):
    drops.overrides.append("data.max_image_pixels=1000")
    one_bad_image(
        drops, encoded(noise(64)), "64 x 64 = 4,096 pixels, more than data.max_image_pixels (1,000)"
    )


@case(QUARANTINES)
def missing_image(drops):
    drops.drop(HEADER + "ghost,zero\n")
    summary = drops.pull()
    assert summary.n_added == 0 and summary.dataset_size == 2
    quarantined(drops, summary, "ghost", "image file images/ghost.png not found")


@case(QUARANTINES, RESTORES)
def image_deleted_after_ingest_and_back(drops):
    version = drops.last.dataset_version
    path = drops.images / "base_a.png"
    content = path.read_bytes()
    path.unlink()
    gone = drops.pull()
    assert gone.dataset_size == 1 and gone.dataset_version != version
    quarantined(drops, gone, "base_a", "image file images/base_a.png not found")
    again = drops.pull()  # still gone: nothing new to say
    assert (again.n_quarantined, again.dataset_version) == (0, gone.dataset_version)
    path.write_bytes(content)
    back = drops.pull()
    assert (back.n_restored, back.dataset_size, back.dataset_version) == (1, 2, version)
    assert drops.status("base_a") == (ACTIVE, None)
    assert [kind for kind, _ in drops.events("base_a")] == ["added", "quarantined", "restored"]


@case()
def image_replaced_with_same_size_and_mtime(drops):
    path = drops.image("same", encoded(Image.new("RGB", (8, 8), (1, 2, 3)), compress_level=0))
    drops.drop(HEADER + "same,zero\n")
    drops.pull()
    before = drops.sample("same")
    stat = path.stat()
    replacement = encoded(Image.new("RGB", (8, 8), (200, 100, 50)), compress_level=0)
    assert len(replacement) == stat.st_size  # stored (uncompressed) PNGs of one size: same length
    path.write_bytes(replacement)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    summary = drops.pull()
    after = drops.sample("same")
    assert summary.n_updated == 1 and after.version == before.version + 1
    assert after.content_hash != before.content_hash and after.file_mtime_ns == before.file_mtime_ns
    assert drops.events("same")[-1] == ("changed", "image changed")


@case(QUARANTINES)
def image_is_a_directory(drops):
    (drops.images / "bad.png").mkdir()
    drops.image("good")
    drops.drop(HEADER + "bad,zero\ngood,one\n")
    quarantined(drops, drops.pull(), "bad", "image file images/bad.png is a directory")


@case(QUARANTINES)
def image_is_a_named_pipe(drops):
    fifo = drops.images / "bad.png"
    os.mkfifo(fifo)
    drops.image("good")
    drops.drop(HEADER + "bad,zero\ngood,one\n")

    def unblock() -> None:  # were the pull stuck reading the pipe, this ends the read (and the test fails)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader: nothing stuck

    timer = threading.Timer(10, unblock)
    timer.start()
    started = time.monotonic()
    try:
        summary = drops.pull()
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    quarantined(drops, summary, "bad", "image file images/bad.png is not a regular file")


@case(QUARANTINES)
def symlink_out_of_the_source(drops):
    outside = drops.tmp_path / "outside.png"
    outside.write_bytes(encoded(noise(8)))
    (drops.images / "bad.png").symlink_to(outside)
    drops.image("good")
    drops.drop(HEADER + "bad,zero\ngood,one\n")
    reason = quarantined(drops, drops.pull(), "bad", "outside the source folder: not followed")
    assert str(outside) in reason


@case()
def symlink_inside_the_source(drops):
    shared = drops.root / "shared" / "picture.png"
    shared.parent.mkdir()
    shared.write_bytes(encoded(noise(8)))
    (drops.images / "alias.png").symlink_to(shared)
    drops.drop(HEADER + "alias,zero\n")
    assert drops.pull().n_added == 1 and drops.status("alias") == (ACTIVE, None)


@case(QUARANTINES)
def symlink_loop(drops):
    (drops.images / "bad.png").symlink_to(drops.images / "bad.png")
    drops.image("good")
    drops.drop(HEADER + "bad,zero\ngood,one\n")
    quarantined(drops, drops.pull(), "bad", "cannot be read: Too many levels of symbolic links")


@case(QUARANTINES)
def id_too_long_for_a_file_name(drops):
    key = "k" * 300  # within the schema's 500 characters, beyond the file system's 255 bytes
    drops.drop(HEADER + f"{key},zero\n")
    summary = drops.pull()
    assert summary.n_quarantined == 1 and drops.status(key)[0] == QUARANTINED
    assert "cannot be read: File name too long" in drops.status(key)[1]


PULL_IN_A_PROCESS_WITHOUT_ROOTS_RIGHTS = """
import sys
from foldwise.config import FoldwiseConfig
from foldwise.tasks.ingest import ingest
summary = ingest(FoldwiseConfig.model_validate_json(sys.stdin.read()))
print(summary.pull_id)
"""


@case(QUARANTINES, RESTORES)
def unreadable_image(drops):
    """chmod 000. Root reads any file, so as root the pull runs in a process without the two
    capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    path = drops.image("locked")
    drops.drop(HEADER + "locked,zero\n")
    path.chmod(0)
    command = [sys.executable, "-c", PULL_IN_A_PROCESS_WITHOUT_ROOTS_RIGHTS]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv is not installed to drop root's right to read any file")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    done = subprocess.run(
        command, input=drops.config().model_dump_json(), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (
        drops.quarantine_reason("locked") == "image file images/locked.png cannot be read: Permission denied"
    )
    path.chmod(0o644)
    fixed = drops.pull()
    assert fixed.n_restored == 1 and drops.status("locked") == (ACTIVE, None)


@case(QUARANTINES, RESTORES)
def quarantined_image_is_retried_when_its_file_changes(drops):
    path = drops.image("later", b"\x89PNG\r\n\x1a\n not yet")
    drops.drop(HEADER + "later,zero\n")
    quarantined(drops, drops.pull(), "later", "images/later.png is not an image file")
    unchanged = drops.pull()
    assert (unchanged.n_quarantined, len(drops.events("later"))) == (0, 1)  # no new event, same reason
    path.write_bytes(encoded(noise(8)))
    fixed = drops.pull()
    assert (fixed.n_restored, fixed.dataset_size) == (1, 3)
    assert drops.status("later") == (ACTIVE, None)
    assert [kind for kind, _ in drops.events("later")] == ["quarantined", "restored", "changed"]


# Rows -------------------------------------------------------------------------------------------


@case(REJECTS)
def path_traversal(drops):
    (drops.root / "escape.png").write_bytes(encoded(noise(8)))  # exists, outside the image folder
    one_bad_row(drops, "../escape,zero\n", "image name escapes the image folder")
    assert not drops.has_sample("../escape")


@case(REJECTS)
def absolute_id(drops):
    one_bad_row(drops, "/etc/passwd,zero\n", "image name escapes the image folder")


@case(REJECTS)
def backslash_id(drops):
    one_bad_row(drops, "..\\escape,zero\n", "image name escapes the image folder")


@case(REJECTS)
def nul_byte_in_a_label(drops):
    one_bad_row(drops, "nul,zero\x00one\n", "the labels cell holds a control character")


@case(REJECTS)
def tab_in_a_label(drops):
    one_bad_row(drops, "tab,zero\tone\n", "the labels cell holds a control character: a tab")


@case(REJECTS)
def nul_byte_in_an_id(drops):
    one_bad_row(drops, "b\x00d,zero\n", "the id holds a control character")
    [row] = drops.rejected()
    assert row.sample_key == "b\\x00d"  # shown escaped: PostgreSQL stores no NUL


@case(REJECTS)
def nul_byte_in_a_row_with_a_field_too_many(drops):
    one_bad_row(drops, "b\x00d,zero,surplus\n", "has 3 fields, the header 2")


@case(REJECTS)
def label_over_200_characters(drops):
    one_bad_row(drops, "long," + "x" * 201 + "\n", "label(s) longer than 200 characters")


@case(REJECTS)
def label_over_200_characters_once_normalised(drops):
    one_bad_row(drops, "long," + "\u0958" * 150 + "\n", "longer than 200")  # NFC: 2 code points each


@case(REJECTS)
def id_over_500_characters(drops):
    one_bad_row(drops, "y" * 501 + ",zero\n", "the id has 501 characters, more than 500")


@case(REJECTS)
def a_field_too_many(drops):
    one_bad_row(drops, "extra,zero,surplus\n", "has 3 fields, the header 2")
    assert not drops.has_sample("extra")


@case(REJECTS)
def too_few_fields(drops):
    one_bad_row(drops, "few\n", "has 1 fields, the header 2")


@case(REJECTS)
def quoted_newline_in_a_cell(drops):
    drops.image("qn")
    one_bad_row(drops, '"qn","zero\none"\n', "the labels cell spans several lines")
    assert not drops.has_sample("qn") and "zero\none" not in drops.vocabulary()


@case(REJECTS)
def empty_id(drops):
    one_bad_row(drops, ",zero\n", "empty id")


@case()
def case_and_space_variants_of_a_label(drops):
    for key in ("v1", "v2", "v3"):
        drops.image(key)
    drops.drop(HEADER + 'v1,Zero\nv2,ZERO\n"v3"," zero  One "\n')
    summary = drops.pull()
    assert summary.n_added == 3 and summary.new_labels == []
    assert [drops.labels(key) for key in ("v1", "v2", "v3")] == [{"zero"}, {"zero"}, {"zero", "one"}]
    assert drops.vocabulary() == {"zero", "one"}


@case()
def unicode_forms_of_a_label(drops):
    drops.image("composed")
    drops.image("decomposed")
    drops.drop(HEADER + "composed,caf\u00e9\ndecomposed,cafe\u0301\n")
    summary = drops.pull()
    assert summary.new_labels == ["caf\u00e9"]
    assert drops.labels("composed") == drops.labels("decomposed") == {"caf\u00e9"}


@case(REJECTS)
def unknown_label_with_a_vocabulary(drops):
    drops.overrides.append(VOCABULARY)
    drops.image("volcano")
    one_bad_row(drops, "volcano,volcano\n", "unknown label(s) ['volcano'] (not in data.vocabulary)")


@case()
def unknown_label_without_a_vocabulary(drops):
    drops.image("volcano")
    drops.drop(HEADER + "volcano,zero Volcano\n")
    summary = drops.pull()  # checks data_pulls.new_labels too
    assert summary.new_labels == ["Volcano"] and "new labels: Volcano" in str(summary)
    assert drops.labels("volcano") == {"zero", "Volcano"}
    drops.image("lava")
    drops.drop(HEADER + "lava,volcano\n")
    assert drops.pull().new_labels == [] and drops.labels("lava") == {"Volcano"}


@case(REJECTS)
def empty_labels(drops):
    drops.image("blank")
    one_bad_row(drops, "blank,\n", "no labels (set data.allow_empty_labels=true to accept such rows)")


@case()
def empty_labels_allowed(drops):
    drops.overrides.append("data.allow_empty_labels=true")
    drops.image("blank")
    drops.drop(HEADER + "blank,\n")
    assert drops.pull().n_added == 1 and drops.labels("blank") == set()


@case()
def duplicate_identical_rows(drops):
    drops.image("dup")
    drops.drop(HEADER + "dup,one\ndup,one\nbase_a,zero\n")
    summary = drops.pull()
    assert (summary.n_added, summary.n_updated, summary.n_rejected) == (1, 0, 0)


@case()
def later_drop_corrects_a_label(drops):
    drops.drop(HEADER + "base_a,three\n")
    summary = drops.pull()
    assert (summary.n_updated, summary.n_rejected) == (1, 0)
    assert drops.labels("base_a") == {"three"} and drops.sample("base_a").version == 2
    assert drops.events("base_a")[-1] == ("changed", "labels zero -> three")


@case(REJECTS)
def later_drop_loses_with_first(drops):
    drops.overrides.append("data.on_conflict=first")
    name = drops.drop(HEADER + "base_a,three\n")
    summary = drops.pull()
    assert summary.n_updated == 0 and drops.labels("base_a") == {"zero"}
    rejected(
        drops, summary, name, 2, "conflicts with labels_01.csv:2, which wins (data.on_conflict = 'first')"
    )


@case(REJECTS, QUARANTINES)
def disagreeing_rows_with_reject(drops):
    drops.overrides.append("data.on_conflict=reject")
    name = drops.drop(HEADER + "base_a,three\n")
    summary = drops.pull()
    reason = "rows disagree on its labels (labels_01.csv:2, labels_02.csv:2; data.on_conflict = 'reject')"
    rejected(drops, summary, "labels_01.csv", 2, reason)
    rejected(drops, summary, name, 2, reason)
    assert drops.status("base_a") == (QUARANTINED, reason) and summary.dataset_size == 1


@case(RETIRES, RESTORES)
def label_row_removed(drops):
    version = drops.last.dataset_version
    (drops.root / "labels_01.csv").write_text(HEADER + "base_a,zero\n")
    summary = drops.pull()
    assert (summary.n_retired, summary.dataset_size) == (1, 1)
    assert drops.status("base_b") == (RETIRED, "no longer in any label file")
    assert drops.events("base_b")[-1] == ("retired", "no longer in any label file")
    (drops.root / "labels_01.csv").write_text(HEADER + "base_a,zero\nbase_b,one\n")
    back = drops.pull()
    assert (back.n_restored, back.dataset_version) == (1, version)


@case()
def label_row_removed_with_keep(drops):
    drops.overrides.append("data.on_removed=keep")
    (drops.root / "labels_01.csv").write_text(HEADER + "base_a,zero\n")
    summary = drops.pull()
    assert (summary.n_retired, summary.dataset_size) == (0, 2) and drops.status("base_b") == (ACTIVE, None)


@case(REJECTS)
def rejections_are_recorded_once(drops):
    drops.image("good")
    name = drops.drop(HEADER + "few\ngood,one\n")
    summaries = [drops.pull() for _ in range(5)]
    assert [s.n_rejected for s in summaries] == [1, 0, 0, 0, 0]
    assert [s.n_known_rejections for s in summaries] == [0, 1, 1, 1, 1]
    assert [(r.file, r.line) for r in drops.rejected()] == [(name, 2)]


# Label files ------------------------------------------------------------------------------------


@case()
def byte_order_mark(drops):
    drops.image("bom")
    drops.drop(b"\xef\xbb\xbf" + (HEADER + "bom,one\n").encode())
    summary = drops.pull()
    assert (summary.n_added, summary.n_rejected) == (1, 0) and drops.labels("bom") == {"one"}


@case()
def crlf_line_ends(drops):
    for key in ("crlf1", "crlf2"):
        drops.image(key)
    drops.drop("image_name,tags\r\ncrlf1,one\r\ncrlf2,zero one\r\n")
    summary = drops.pull()
    assert (summary.n_added, summary.n_rejected) == (2, 0)
    assert drops.labels("crlf2") == {"zero", "one"} and drops.vocabulary() == {"zero", "one"}


@case(REJECTS)
def wrong_header_next_to_good_files(drops):
    name = drops.drop("name,labels\nbase_b,zero\n")
    drops.good_drop("fresh")
    (drops.root / "labels_01.csv").write_text(HEADER + "base_a,zero\n")  # base_b's row removed
    summary = drops.pull()
    rejected(drops, summary, name, 0, f"label file {name} cannot be used: lacks the column(s)")
    # The unreadable file might hold base_b: nothing is retired while a label file cannot be read.
    assert (summary.n_added, summary.n_retired) == (1, 0) and drops.status("base_b") == (ACTIVE, None)


@case(REJECTS, REFUSES)
def only_label_file_unusable(drops):
    contents = [
        ("name,labels\nbase_a,zero\n", "lacks the column(s) ['image_name', 'tags']"),
        ("image_name,tags\nbase_a,z\xe9ro\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 24)"),
        ("", "empty: no header row"),
    ]
    for content, message in contents:
        before = drops.counts()
        (drops.root / "labels_01.csv").write_bytes(content.encode() if isinstance(content, str) else content)
        with pytest.raises(IngestError) as raised:
            drops.pull()
        assert str(raised.value).startswith("label file labels_01.csv cannot be used: ")
        assert message in str(raised.value)
        assert drops.counts() == before  # nothing written: not even a data_pulls row
    drops.good_drop("fresh")
    summary = drops.pull()
    assert (summary.n_added, summary.n_retired, summary.dataset_size) == (1, 0, 3)


@case(REJECTS)
def non_utf8_label_file(drops):
    name = drops.drop("image_name,tags\nlatin,z\xe9ro\n".encode("latin-1"))
    summary = drops.pull()
    rejected(drops, summary, name, 0, "not UTF-8 text (byte 0xe9 at offset 23): save it as UTF-8")


@case(REJECTS)
def empty_label_file(drops):
    name = drops.drop("")
    rejected(drops, drops.pull(), name, 0, f"label file {name} cannot be used: empty: no header row")


@case()
def header_only(drops):
    drops.drop(HEADER)
    summary = drops.pull()
    assert (summary.n_rows, summary.n_rejected, summary.n_retired, summary.dataset_size) == (2, 0, 0, 2)


@case(REJECTS)
def blank_lines(drops):
    drops.good_drop("bl1")
    name = drops.drop(HEADER + "\nbl2,one\n\n\nbl3,\n")
    drops.image("bl2")
    summary = drops.pull()
    assert summary.n_added == 2
    rejected(drops, summary, name, 6, "no labels")  # line numbers count the blank lines


@case()
def columns_in_another_order_and_an_extra_one(drops):
    drops.image("ordered")
    drops.drop('tags,notes,image_name\none,"a note, with a comma",ordered\n')
    assert drops.pull().n_added == 1 and drops.labels("ordered") == {"one"}


@case()
def label_file_that_is_a_directory(drops):
    (drops.root / "labels_99.csv").mkdir()
    summary = drops.pull()
    assert (summary.n_rows, summary.n_rejected, summary.n_retired, summary.dataset_size) == (2, 0, 0, 2)


@case()
def label_file_being_written(drops):
    drops.image("early")
    drops.drop(HEADER + "early,one\n", name="labels_03.csv.partial")  # not matched by labels_*.csv
    summary = drops.pull()
    assert (summary.n_rows, summary.n_added) == (2, 0) and not drops.has_sample("early")


@case()
def label_file_cut_mid_row_then_completed(drops):
    """A copy caught mid-row (`cut,ze`, no line break) invents no label `ze`: it waits, unread."""
    drops.image("whole")
    drops.image("cut")
    name = drops.drop(HEADER + "whole,one\ncut,ze")
    summary = drops.pull()
    assert (summary.n_rows, summary.n_added, summary.new_labels) == (2, 0, [])
    [waiting] = summary.waiting
    assert waiting.startswith(f"label file {name}: its last line has no line break")
    assert "ze" not in drops.vocabulary() and not drops.has_sample("cut")
    (drops.root / name).write_text(HEADER + "whole,one\ncut,zero\n")
    done = drops.pull()
    assert (done.n_added, done.new_labels, done.waiting) == (2, [], []) and drops.labels("cut") == {"zero"}


@case()
def label_file_rewritten_in_place_caught_short(drops):
    """While the only label file is incomplete, the samples it named before are neither retired nor
    changed."""
    version = drops.last.dataset_version
    path = drops.root / "labels_01.csv"
    path.write_text(HEADER + "base_a,zero\nbase_b,o")
    summary = drops.pull()
    assert (summary.change_summary(), summary.dataset_version) == ("no sample changed", version)
    assert drops.labels("base_b") == {"one"} and len(summary.waiting) == 1
    path.write_text(HEADER + "base_a,zero\nbase_b,one\n")
    done = drops.pull()
    assert (done.change_summary(), done.n_unchanged, done.waiting) == ("no sample changed", 2, [])


@case()
def label_file_still_changing_waits_for_the_next_pull(drops):
    """A writer that keeps adding whole rows: the pull waits data.settle_seconds for the file to stay
    unchanged, then leaves it to the next pull. Written whole just now, it is read after that wait."""
    drops.overrides.append("data.settle_seconds=1")
    drops.image("w1")
    drops.image("w2")
    name = drops.drop(HEADER + "w1,one\n")
    drops.age()
    started, stop = threading.Event(), threading.Event()

    def append_rows() -> None:
        with (drops.root / name).open("a") as handle:
            while True:
                handle.write("w1,one\n")
                handle.flush()
                started.set()
                if stop.wait(0.05):
                    return

    writer = threading.Thread(target=append_rows)
    writer.start()
    started.wait()
    try:
        summary = drops.pull()
    finally:
        stop.set()
        writer.join()
    assert (summary.n_added, summary.waiting) == (
        0,
        [f"label file {name}: it changed within data.settle_seconds (1 s): still being written"],
    )
    (drops.root / name).write_text(HEADER + "w1,one\nw2,zero\n")
    started = time.monotonic()
    done = drops.pull()
    assert (done.n_added, done.waiting) == (2, []) and time.monotonic() - started > 0.5
    drops.overrides.remove("data.settle_seconds=1")


@case(REFUSES)
def write_fails_halfway(drops):
    """A pull that fails after its first inserts (a full disk, say) leaves nothing behind."""
    if make_url(drops.url).get_backend_name() == "sqlite":
        create = [
            "CREATE TRIGGER refuse BEFORE INSERT ON sample_events BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        ]
        drop = "DROP TRIGGER refuse"
    else:
        create = [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'disk full'; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON sample_events EXECUTE FUNCTION refuse()",
        ]
        drop = "DROP TRIGGER refuse ON sample_events"
    with get_engine(drops.url).begin() as connection:
        for statement in create:
            connection.execute(text(statement))
    drops.good_drop("halfway", label="brand-new")
    before = drops.counts()
    with pytest.raises(Exception, match="disk full"):
        drops.pull()
    assert drops.counts() == before  # no sample, label, pull or event of the failed pull
    with get_engine(drops.url).begin() as connection:
        connection.execute(text(drop))
    summary = drops.pull()
    assert summary.n_added == 1 and summary.new_labels == ["brand-new"]


# A full disk and a refused write: the pull runs in a subprocess with a tmpfs or a read-only mount in its way

INGEST_ONCE = """
import sys
from pathlib import Path
from foldwise.tasks.ingest import ingest
from tests.conftest import tiny_demo_config
try:
    ingest(tiny_demo_config(Path(sys.argv[1]), sys.argv[2], *sys.argv[3:]))
except Exception as error:
    print(f"{type(error).__name__}: {error}")
"""


def pull_in_the_way(drops: CaseDrops, mounts: list[list[str]]) -> str:
    """A pull refused by what the mounts put in its way (seen by it alone): the error it raised."""
    needs_namespaces()
    before = drops.counts()
    command = [sys.executable, "-c", INGEST_ONCE, str(drops.tmp_path), drops.url, *drops.overrides]
    result = in_namespace(mounts, command, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout, result.stderr
    drops.n_refused += 1
    assert drops.counts() == before  # nothing recorded
    return result.stdout.splitlines()[-1]


def new_image_refused_then_pulled(drops: CaseDrops, mounts: list[list[str]]) -> str:
    """A drop of an image the cache does not hold, whose pull the mounts refuse; the next pull, without
    them, adds it. The error of the refused pull."""
    drops.image("refused", noise(8, seed=99))
    drops.drop(HEADER + "refused,zero\n")
    error = pull_in_the_way(drops, mounts)
    assert drops.pull().n_added == 1 and drops.status("refused") == (ACTIVE, None)
    return error


@case(REFUSES)
def full_disk_under_the_image_cache(drops):
    cache = drops.tmp_path / "cache"  # a 4 KiB tmpfs: the pull decodes every image into it again
    error = new_image_refused_then_pulled(drops, [tmpfs(cache, "4k")])
    assert error.startswith(f"DiskError: cannot write the image cache {cache}/"), error
    assert "No space left on device (" in error and "free on its file system); free some space there" in error


@case(REFUSES)
def read_only_image_cache(drops):
    cache = drops.tmp_path / "cache"
    error = new_image_refused_then_pulled(drops, read_only(cache))
    assert error.startswith(f"DiskError: cannot write the image cache {cache}/"), error
    assert "Read-only file system (" in error and "make it writable for this user" in error


# Duplicate images ---------------------------------------------------------------------------------


def copy_of_an_image(drops: Drops, labels: str, copy_labels: str) -> tuple[PullSummary, PullSummary]:
    """An image pulled, then its exact byte copy under a new id: accepted, one duplicate group more.
    The summaries of the pull before the copy and of the copy's."""
    drops.image("original", noise(8, seed=1001))  # unlike base_a and base_b (one image: a group already)
    drops.drop(HEADER + f"original,{labels}\n")
    before = drops.pull()
    drops.image("copy", (drops.images / "original.png").read_bytes())
    drops.drop(HEADER + f"copy,{copy_labels}\n")
    after = drops.pull()
    assert (after.n_added, after.n_quarantined, drops.status("copy")) == (1, 0, (ACTIVE, None))
    assert drops.sample("copy").content_hash == drops.sample("original").content_hash
    assert (after.n_duplicate_groups, after.n_duplicate_samples) == (
        before.n_duplicate_groups + 1,
        before.n_duplicate_samples + 2,
    )
    return before, after


@case()
def exact_copy_under_a_new_id_with_the_same_labels(drops):
    """Accepted, and kept with its original: the same fold, or the gate set with it."""
    deliver_drop(drops.root, n_images=20)  # enough samples for folds and a gate set
    before, summary = copy_of_an_image(drops, "one", "one")
    assert summary.n_conflicting_groups == before.n_conflicting_groups  # no new label noise
    build_folds(drops.config(), summary.dataset_version)
    with session_scope(drops.url) as session:
        folds = latest_fold_set(session=session).folds
    assert folds[drops.sample("copy").id] == folds[drops.sample("original").id]


@case()
def exact_copy_under_a_new_id_with_conflicting_labels(drops):
    """Accepted (which label is right is the user's call), and reported as label noise."""
    before, summary = copy_of_an_image(drops, "zero", "one")
    assert summary.n_conflicting_groups == before.n_conflicting_groups + 1
    assert f"{summary.n_conflicting_groups} with conflicting labels" in str(summary)


@pytest.mark.parametrize(("bad_input", "outcome"), CASES, ids=[function.__name__ for function, _ in CASES])
def test_bad_input(bad_input, outcome, tmp_path, database_url, caplog):
    drops = CaseDrops(tmp_path, database_url)
    for key in ("base_a", "base_b"):
        drops.image(key)
    drops.drop(HEADER + "base_a,zero\nbase_b,one\n")
    base = drops.pull()
    assert base.n_added == 2

    bad_input(drops)
    assert outcome_since(drops, base.pull_id) == outcome

    drops.good_drop(key := f"next{drops.n_drops + 1}")
    following = drops.pull()
    assert (following.n_added, following.n_rejected) == (1, 0)  # not blocked; nothing recorded again
    assert drops.status(key) == (ACTIVE, None)
    addresses = [message for message in drops.messages() if MEMORY_ADDRESS.search(message)]
    assert not addresses and not MEMORY_ADDRESS.search(caplog.text)


# Training on what is left -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_retrain_trains_on_the_good_rows_only(prefect_server, tmp_path, database_url):
    drops = Drops(tmp_path, database_url)
    drops.overrides.append("gate.fraction=0")  # every active sample in a fold, so every one predicted
    deliver_drop(drops.root, n_images=40)
    good = {
        "cmyk": encoded(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG"),
        "rgba": encoded(Image.new("RGBA", (24, 24), (10, 200, 30, 128))),
        "grey": encoded(Image.new("L", (24, 24), 90)),
        "pixel": encoded(Image.new("RGB", (1, 1), (5, 6, 7))),
        "deep": encoded(Image.fromarray(np.full((24, 24), 40_000, dtype=np.uint16))),
    }
    bad_images = {
        "corrupt": b"\xff\xd8\xff\xe0 not a jpeg",
        "truncated": encoded(noise(32))[:300],
        "bomb": huge_png(20_000, 20_000),
    }
    for key, content in (good | bad_images).items():
        drops.image(key, content)
    (drops.images / "folder.png").mkdir()
    bad_rows = [
        "ghost,zero",
        "folder,zero",
        "../escape,zero",
        "nul,zero\x00one",
        "long," + "x" * 201,
        "extra,zero,surplus",
        '"newline","zero\none"',
        "blank,",
    ]
    rows = [f"{key},zero" for key in good | bad_images] + bad_rows
    drops.drop(HEADER + "\n".join(rows) + "\n")
    first = drops.pull()
    assert (first.n_added, first.n_quarantined, first.n_rejected) == (45, 5, 6)
    deleted = sorted(drops.images.glob("d01_*.png"))[0]
    deleted.unlink()  # after the pull: the flow's own pull finds it gone

    summary = retrain(drops.config())

    assert summary.status == "succeeded"
    assert drops.quarantine_reason(deleted.stem) == f"image file images/{deleted.name} not found"
    with session_scope(database_url) as session:
        run = session.get_one(Run, summary.run_id)
        active = dict(session.execute(select(Sample.id, Sample.key).where(Sample.status == ACTIVE)).all())
        predicted = set(session.scalars(select(Prediction.sample_id).where(Prediction.run_id == run.id)))
    assert run.dataset_size == len(active) == 44  # 39 demo images, 5 in unusual modes
    assert predicted == set(active)  # trained (and predicted out of fold) on the good rows only
    assert set(good) <= set(active.values()) and not (set(bad_images) & set(active.values()))

    counts = drops.counts()
    again = drops.pull()
    changes = (again.n_added, again.n_updated, again.n_quarantined, again.n_retired, again.n_restored)
    assert changes == (0, 0, 0, 0, 0) and again.n_rejected == 0
    assert again.dataset_version == run.dataset_version
    assert {t: n for t, n in drops.counts().items() if t != "data_pulls"} == {
        t: n for t, n in counts.items() if t != "data_pulls"
    }
