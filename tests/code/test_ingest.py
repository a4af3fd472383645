import logging
import os
import re

import pytest
from sqlalchemy import func, select

from foldwise.db.models import DataPull, Label, RejectedRow, Sample, SampleLabel
from foldwise.db.session import session_scope
from foldwise.tasks.ingest import ingest
from foldwise.tasks.label_files import IngestError
from tests.conftest import seed_config, seed_source, write_image


def table_counts(url):
    with session_scope(url) as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (DataPull, Label, RejectedRow, Sample, SampleLabel)
        }


def labels_by_key(url):
    with session_scope(url) as session:
        return {
            sample.key: {label.name for label in sample.labels} for sample in session.scalars(select(Sample))
        }


def test_planet_format(tmp_path, database_url):
    seed_source(tmp_path, "planet")
    summary = ingest(seed_config("planet", tmp_path, database_url))
    assert (summary.n_rows, summary.n_added, summary.n_rejected) == (5, 5, 0)
    assert labels_by_key(database_url)["train_4"] == {"agriculture", "clear", "habitation", "primary", "road"}


def test_hpa_format_maps_numeric_ids_to_names(tmp_path, database_url):
    seed_source(tmp_path, "hpa")
    summary = ingest(seed_config("hpa", tmp_path, database_url))
    assert summary.n_added == 5
    assert labels_by_key(database_url)["29993"] == {"Cytosol", "Nucleoplasm"}  # "6 4"


def test_hpa_format_without_names_keeps_the_ids(tmp_path, database_url):
    seed_source(tmp_path, "hpa")
    ingest(seed_config("hpa", tmp_path, database_url))
    config = seed_config("hpa", tmp_path, database_url)
    config.data.label_names = None
    config.database_url = database_url + ""  # same DB: the ids are new labels on the same samples
    ingest(config)
    assert labels_by_key(database_url)["29993"] == {"6", "4"}


def test_pascal_format_honours_is_valid(tmp_path, database_url):
    seed_source(tmp_path, "pascal")
    summary = ingest(seed_config("pascal", tmp_path, database_url))
    assert summary.n_added == 5
    with session_scope(database_url) as session:
        pinned = dict(session.execute(select(Sample.key, Sample.pinned_to_gate_set)).all())
    assert pinned == {
        "000005.jpg": True,
        "000007.jpg": True,
        "000009.jpg": True,
        "000012.jpg": False,
        "000016.jpg": True,
    }
    assert labels_by_key(database_url)["000009.jpg"] == {"horse", "person"}


def test_reingest_adds_nothing_and_new_files_add(tmp_path, database_url):
    source = seed_source(tmp_path, "planet")
    config = seed_config("planet", tmp_path, database_url, "data.label_files=*.csv")
    first = ingest(config)
    again = ingest(config)
    assert (again.n_added, again.n_updated, again.n_unchanged) == (0, 0, 5)
    assert again.dataset_version == first.dataset_version
    write_image(source / "train-jpg" / "train_9.jpg")
    (source / "batch2.csv").write_text("image_name,tags\ntrain_9,cloudy\n")
    third = ingest(config)
    assert (third.n_added, third.n_unchanged, third.dataset_size) == (1, 5, 6)
    assert third.dataset_version != first.dataset_version
    assert table_counts(database_url)["data_pulls"] == 3


def test_changed_label_and_changed_image_update_the_sample(tmp_path, database_url):
    source = seed_source(tmp_path, "planet")
    config = seed_config("planet", tmp_path, database_url)
    ingest(config)
    label_file = source / "train_v2.csv"
    label_file.write_text(label_file.read_text().replace("train_0,haze primary", "train_0,cloudy"))
    write_image(source / "train-jpg" / "train_1.jpg", color=(1, 2, 3))
    os.utime(source / "train-jpg" / "train_1.jpg", ns=(1, 1))  # a new mtime, as a re-download gives
    summary = ingest(config)
    assert (summary.n_updated, summary.n_unchanged) == (2, 3)
    assert labels_by_key(database_url)["train_0"] == {"cloudy"}
    with session_scope(database_url) as session:
        updated = session.scalar(select(Sample.updated_pull_id).where(Sample.key == "train_1"))
    assert updated == summary.pull_id


BAD_ROWS = """image_name,tags
good,clear primary
missing,clear
corrupt,clear
empty,
unknown,clear volcano
../escape,clear
/etc/passwd,clear
good,haze
"""


def test_bad_rows_are_rejected_and_bad_images_quarantined_with_reasons(tmp_path, database_url, caplog):
    source = tmp_path / "source"
    write_image(source / "train-jpg" / "good.jpg")
    (source / "train-jpg" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_image(source / "escape.jpg")  # exists, but outside the image folder
    (source / "train_v2.csv").write_text(BAD_ROWS)
    with caplog.at_level(logging.WARNING):
        summary = ingest(seed_config("planet", tmp_path, database_url))
    assert summary.n_added == 1 and summary.n_quarantined == 2
    with session_scope(database_url) as session:
        stored = {(r.line, r.sample_key): r.reason for r in session.scalars(select(RejectedRow))}
        statuses = {s.key: (s.status, s.status_reason) for s in session.scalars(select(Sample))}
    rejected = {
        (5, "empty"): "no labels",
        (6, "unknown"): "unknown label(s) ['volcano']",
        (7, "../escape"): "escapes the image folder",
        (8, "/etc/passwd"): "escapes the image folder",
    }
    assert set(stored) == set(rejected)
    for where, fragment in rejected.items():
        assert fragment in stored[where] and fragment in caplog.text
    assert summary.n_rejected == len(rejected)
    assert statuses["missing"] == ("quarantined", "image file train-jpg/missing.jpg not found")
    assert statuses["corrupt"][0] == "quarantined" and "train-jpg/corrupt.jpg is" in statuses["corrupt"][1]
    assert "0x" not in statuses["corrupt"][1]  # the file is named, not a memory address
    assert statuses["good"] == ("active", None)
    assert labels_by_key(database_url)["good"] == {"haze"}  # the later row wins (data.on_conflict)

    again = ingest(seed_config("planet", tmp_path, database_url))
    assert (again.n_rejected, again.n_known_rejections, again.n_quarantined) == (0, len(rejected), 0)
    assert table_counts(database_url)["rejected_rows"] == len(rejected)  # recorded once


def test_unknown_numeric_id_and_bad_boolean(tmp_path, database_url):
    source = tmp_path / "source"
    for name in ("a", "b"):
        write_image(source / "train" / f"{name}.png")
    (source / "train.csv").write_text("Image,Label\na,1 42\nb,3\n")
    summary = ingest(seed_config("hpa", tmp_path, database_url))
    assert summary.n_added == 1
    assert "unknown label id(s) ['42']" in summary.rejections[0].reason

    write_image(source / "train" / "c.jpg")
    (source / "train.csv").write_text("fname,labels,is_valid\nc.jpg,car,maybe\n")
    pascal = ingest(seed_config("pascal", tmp_path, database_url))
    assert "is_valid='maybe' is not a boolean" in pascal.rejections[0].reason


def test_empty_labels_allowed_by_config(tmp_path, database_url):
    source = tmp_path / "source"
    write_image(source / "train-jpg" / "empty.jpg")
    (source / "train_v2.csv").write_text("image_name,tags\nempty,\n")
    summary = ingest(seed_config("planet", tmp_path, database_url, "data.allow_empty_labels=true"))
    assert summary.n_added == 1 and labels_by_key(database_url) == {"empty": set()}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,labels\na,clear\n", r"lacks the column\(s\) \['image_name', 'tags'\]"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xff\xfe\x00", "not UTF-8 text"),
        ("", "empty: no header row"),
    ],
)
def test_an_unreadable_label_file_is_rejected_whole_and_the_others_still_count(
    tmp_path, database_url, content, message
):
    source = seed_source(tmp_path, "planet")
    config = seed_config("planet", tmp_path, database_url, "data.label_files=*.csv")
    ingest(config)
    bad = source / "zz_new_batch.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    write_image(source / "train-jpg" / "a.jpg")
    (source / "zz_other_batch.csv").write_text("image_name,tags\na,clear\n")
    summary = ingest(config)
    assert summary.n_added == 1 and summary.n_retired == 0 and summary.dataset_size == 6
    assert [r.file for r in summary.rejections] == ["zz_new_batch.csv"]
    assert re.search(message, summary.rejections[0].reason)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,labels\na,clear\n", r"lacks the column\(s\) \['image_name', 'tags'\]"),
        ("", "empty: no header row"),
    ],
)
def test_when_no_label_file_can_be_read_the_pull_fails_and_changes_nothing(
    tmp_path, database_url, content, message
):
    source = seed_source(tmp_path, "planet")
    config = seed_config("planet", tmp_path, database_url)
    ingest(config)
    before = table_counts(database_url)
    (source / "train_v2.csv").write_text(content)
    with pytest.raises(IngestError, match=message):
        ingest(config)
    assert table_counts(database_url) == before


def test_no_label_files_is_a_clear_error(tmp_path, database_url):
    (tmp_path / "source" / "train-jpg").mkdir(parents=True)
    with pytest.raises(IngestError, match="no label files match 'train_v2.csv'"):
        ingest(seed_config("planet", tmp_path, database_url))
