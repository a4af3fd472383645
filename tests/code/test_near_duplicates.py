"""Near duplicates (re-encoded, resized copies) are grouped by perceptual hash, through a real pull."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from foldwise.config import load_config
from foldwise.db.folds import latest_fold_set
from foldwise.db.samples import StoredSample, stored_samples
from foldwise.db.session import session_scope
from foldwise.duplicates import duplicate_groups, near_pairs
from foldwise.tasks.demo import IMAGE_DIR, deliver_drop
from foldwise.tasks.folds import build_folds
from foldwise.tasks.image_checks import perceptual_hash
from foldwise.tasks.ingest import ingest
from tests.conftest import CONFIGS, SETTLED


def scene(seed: int) -> Image.Image:
    """A photo-like image: smooth colour fields with some texture, different for every seed."""
    rng = np.random.default_rng(seed)
    pixels = gaussian_filter(rng.normal(size=(192, 256, 3)), sigma=(12, 12, 0)) + rng.normal(
        0, 0.02, (192, 256, 3)
    )
    pixels = (pixels - pixels.min()) / np.ptp(pixels) * 255
    return Image.fromarray(pixels.astype(np.uint8))


def reencoded(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def sample(row: int, content_hash: str, perceptual_hash: str | None) -> StoredSample:
    return StoredSample(
        row, f"s{row}", "", content_hash, 0, 0, False, "active", None, frozenset(), perceptual_hash
    )


def test_near_uniform_images_of_other_colours_are_not_near_duplicates():
    """A flat image's pHash is rounding noise, alike for every flat image: it gets none."""
    flat = [np.full((64, 64, 3), colour, dtype=np.uint8) for colour in ((10, 80, 200), (200, 30, 30))]
    assert [perceptual_hash(pixels) for pixels in flat] == ["", ""]
    hashes = [perceptual_hash(np.asarray(scene(seed))) for seed in (1, 2)]
    assert all(len(value) == 16 for value in hashes) and hashes[0] != hashes[1]
    samples = [sample(row, f"c{row}", value) for row, value in enumerate(["", "", *hashes])]
    assert duplicate_groups(samples, near_distance=4) == [0, 1, 2, 3]


def test_banding_finds_exactly_the_pairs_within_the_distance():
    rng = np.random.default_rng(0)
    base = [int(value) for value in rng.integers(0, 2**63, 40)]
    # Each base hash with a few copies that differ in 1 to 6 random bits.
    hashes = base + [
        value ^ sum(1 << int(bit) for bit in rng.choice(64, flips, replace=False))
        for value in base
        for flips in (1, 3, 5, 6)
    ]
    for distance in (0, 2, 4, 6):
        brute = [
            (a, b)
            for a, b in itertools.combinations(range(len(hashes)), 2)
            if (hashes[a] ^ hashes[b]).bit_count() <= distance
        ]
        assert near_pairs(hashes, distance) == brute


def test_near_groups_chain_and_exact_copies_group_without_a_perceptual_hash():
    samples = [
        sample(0, "a", "0000000000000000"),
        sample(1, "b", "0000000000000007"),  # 3 bits from 0
        sample(2, "c", "000000000000003f"),  # 3 bits from 1, 6 from 0
        sample(3, "d", "ffffffffffffffff"),
        sample(4, "d", None),  # an exact copy of 3, not yet hashed
        sample(5, "e", None),
    ]
    assert duplicate_groups(samples, 4) == [0, 0, 0, 3, 3, 5]
    assert duplicate_groups(samples, 0) == [0, 1, 2, 3, 3, 5]
    assert duplicate_groups(samples, None) == [0, 1, 2, 3, 3, 5]


@pytest.mark.parametrize("near_duplicates", [True, False])
def test_reencoded_and_resized_copies_share_a_fold_after_a_real_pull(tmp_path, database_url, near_duplicates):
    config = load_config(
        CONFIGS / "demo.toml",
        [
            f"source.path={tmp_path / 'source'}",
            f"data_home={tmp_path}",
            f"database_url={database_url}",
            "gate.fraction=0",
            f"data.near_duplicates={str(near_duplicates).lower()}",
            SETTLED,
        ],
    )
    source = config.source.path
    deliver_drop(source, n_images=40)
    original, other = scene(0), scene(1)
    images = {
        "original": original,
        "reencoded": reencoded(original, quality=30),
        "resized": original.resize((128, 96), Image.Resampling.LANCZOS),
        "other": other,
    }
    for name, image in images.items():
        image.save(source / IMAGE_DIR / f"{name}.png")
    (source / "labels_scenes.csv").write_text("image_name,tags\n" + "".join(f"{n},one\n" for n in images))
    build_folds(config, ingest(config).dataset_version)
    with session_scope(database_url) as session:
        by_key = stored_samples(session=session, active_only=True)
        folds = latest_fold_set(session=session).folds
    hashes = {name: by_key[name].perceptual_hash for name in images}
    if not near_duplicates:
        assert set(hashes.values()) == {None}  # the cost is skipped
        return
    assert all(len(value) == 16 for value in hashes.values())
    samples = list(by_key.values())
    groups = dict(
        zip(
            (s.key for s in samples),
            duplicate_groups(samples, config.data.near_duplicate_distance),
            strict=True,
        )
    )
    assert groups["original"] == groups["reencoded"] == groups["resized"] != groups["other"]
    assert folds[by_key["original"].id] == folds[by_key["reencoded"].id] == folds[by_key["resized"].id]
