import csv
from collections import Counter

from PIL import Image

from foldwise.tasks.demo import DIGIT_NAMES, IMAGE_SIZE, deliver_drop, delivered_drops


def test_drops_arrive_one_after_another_with_skewed_labels(tmp_path):
    first = deliver_drop(tmp_path, seed=1, n_images=300)
    second = deliver_drop(tmp_path, seed=1, n_images=50)
    assert (first.number, second.number) == (1, 2)
    assert delivered_drops(tmp_path) == [1, 2]
    rows = list(csv.DictReader(first.label_file.open()))
    assert len(rows) == 300
    counts = Counter(label for row in rows for label in row["tags"].split())
    assert set(counts) <= set(DIGIT_NAMES)
    assert counts["zero"] > 4 * counts["nine"]  # skewed: some labels are rare
    assert all(1 <= len(row["tags"].split()) <= 3 for row in rows)
    with Image.open(tmp_path / "images" / f"{rows[0]['image_name']}.png") as image:
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"


def test_drops_are_deterministic(tmp_path):
    a = deliver_drop(tmp_path / "a", seed=3, n_images=20)
    b = deliver_drop(tmp_path / "b", seed=3, n_images=20)
    assert a.label_file.read_text() == b.label_file.read_text()
    assert (tmp_path / "a/images/d01_00007.png").read_bytes() == (
        tmp_path / "b/images/d01_00007.png"
    ).read_bytes()
