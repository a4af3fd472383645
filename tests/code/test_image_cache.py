"""The decode-once image cache and the batches made from it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from fastai.data.block import DataBlock, MultiCategoryBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import IndexSplitter, Normalize
from fastai.vision.augment import Resize
from fastai.vision.core import imagenet_stats
from fastai.vision.data import ImageBlock
from PIL import Image

from foldwise.config import StageConfig
from foldwise.tasks import image_checks as ingest_module
from foldwise.tasks.batches import CachedBatches, batch_transforms
from foldwise.tasks.cache import ImageCache, ImageStore, item_sizes
from foldwise.tasks.images import to_item
from foldwise.tasks.ingest import ingest
from foldwise.tasks.train import build_learner, fit_stage, use_mixed_precision
from tests.conftest import tiny_demo_config


def write_photo(path, size, seed: int, kind: str = "JPEG") -> np.ndarray:
    """A smooth, photo-like image (noise alone would make JPEG and resizing meaningless)."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    channels = [
        np.sin(6 * x * rng.uniform(0.5, 2) + 4 * y * rng.uniform(0.5, 2) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    pixels = ((np.stack(channels, axis=2) + 1) * 127.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, kind, **({"quality": 92} if kind == "JPEG" else {}))
    return pixels


def deliver(source, names_sizes: dict[str, tuple[int, int]], kind: str = "JPEG", seed: int = 0) -> None:
    suffix = ".jpg" if kind == "JPEG" else ".png"
    for index, (name, size) in enumerate(names_sizes.items()):
        write_photo(source / "images" / f"{name}{suffix}", size, seed + index, kind)
    rows = "".join(f"{name},one two\n" for name in names_sizes)
    (source / f"labels_{seed:03d}.csv").write_text("image_name,tags\n" + rows)


def config_for(tmp_path, kind="JPEG", *extra):
    """The tiny demo config for images of `kind`. Its database is a SQLite file: the cache does not
    depend on the backend (ingest's records are tested on both in test_ingest.py), and most tests here
    touch no database at all."""
    suffix = ".jpg" if kind == "JPEG" else ".png"
    return tiny_demo_config(
        tmp_path, f"sqlite:///{tmp_path / 'foldwise.db'}", f"data.image_suffix={suffix}", *extra
    )


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_items_equal_a_direct_decode_and_resize(tmp_path, kind):
    config = config_for(tmp_path, kind)
    deliver(config.source.path, {"wide": (96, 160), "tall": (200, 120), "square": (256, 256)}, kind)
    ingest(config)
    cache = ImageCache(config)
    assert cache.sizes == item_sizes(config) == [20, 40]  # 16 and 32 px stages, presize 1.25
    suffix = ".jpg" if kind == "JPEG" else ".png"
    for name in ("wide", "tall", "square"):
        content = (config.source.path / "images" / f"{name}{suffix}").read_bytes()
        content_hash = __import__("hashlib").sha256(content).hexdigest()
        direct = np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
        for size in cache.sizes:
            store = cache.store(size)
            cached = np.asarray(store.pixels()[store.rows[content_hash]]).astype(int)
            difference = np.abs(cached - to_item(direct, size).astype(int))
            if kind == "PNG":
                assert difference.max() == 0
            else:  # libjpeg-turbo decodes at a reduced scale first: within a grey level on average
                assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 8


def test_a_pull_decodes_only_what_is_new_or_changed_and_retired_items_go(tmp_path, monkeypatch):
    decoded = []
    real_decode = ingest_module.decode_image

    def counting_decode(content, name, *args, **kwargs):
        decoded.append(str(name))
        return real_decode(content, name, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "decode_image", counting_decode)
    config = config_for(tmp_path)
    first = {f"a{i}": (64, 64) for i in range(12)}
    deliver(config.source.path, first, seed=0)
    assert ingest(config).n_decoded == 12 and len(decoded) == 12
    decoded.clear()
    assert ingest(config).n_decoded == 0 and decoded == []  # unchanged: hashed, not decoded
    deliver(config.source.path, {f"b{i}": (64, 64) for i in range(4)}, seed=100)
    assert ingest(config).n_decoded == 4 and sorted(decoded) == [f"images/b{i}.jpg" for i in range(4)]
    decoded.clear()
    write_photo(config.source.path / "images" / "a0.jpg", (64, 64), seed=999)  # a changed image
    assert ingest(config).n_decoded == 1 and decoded == ["images/a0.jpg"]

    # A new stage size: the items of that size are made by the next pull, for every image.
    bigger = config_for(tmp_path, "JPEG", "train.stages=[{size=16, epochs=1}, {size=48, epochs=1}]")
    decoded.clear()
    assert ingest(bigger).n_decoded == 16 and ImageCache(bigger).sizes == [20, 60]

    store = ImageStore(config.data_home / "cache" / "20px", 20)
    assert len(store.rows) == 17  # 16 images and the old content of a0
    (config.source.path / "labels_000.csv").write_text("image_name,tags\na0,one\n")  # 11 of the a's retired
    summary = ingest(config)
    assert summary.n_retired == 11
    kept = ImageStore(config.data_home / "cache" / "20px", 20)
    assert len(kept.rows) == 5  # a0 and the four b's: the rest reclaimed
    pixels = kept.pixels()
    assert pixels.shape == (5, 20, 20, 3) and all(0 <= row < 5 for row in kept.rows.values())


def test_a_torn_append_is_cut_and_the_index_never_names_a_missing_row(tmp_path):
    store = ImageStore(tmp_path / "20px", 20)
    items = {f"h{i}": np.full((20, 20, 3), i, dtype=np.uint8) for i in range(3)}
    store.add(items)
    with store.data_path.open("ab") as data:  # a crash in the middle of the next row
        data.write(b"\x07" * 500)
    reopened = ImageStore(tmp_path / "20px", 20)
    reopened.add({"h9": np.full((20, 20, 3), 9, dtype=np.uint8)})
    again = ImageStore(tmp_path / "20px", 20)
    assert json.loads(again.index_path.read_text()) == {"h0": 0, "h1": 1, "h2": 2, "h9": 3}
    assert [int(again.pixels()[row][0, 0, 0]) for row in again.rows.values()] == [0, 1, 2, 9]


def test_validation_batches_equal_fastais_own_pipeline(tmp_path):
    """Training from the cache sees what fastai's item pipeline would show the model."""
    config = config_for(tmp_path, "PNG", "model.pretrained=true")  # normalised too
    deliver(config.source.path, {f"p{i}": (50 + 7 * i, 64) for i in range(6)}, kind="PNG")
    ingest(config)
    paths = sorted((config.source.path / "images").glob("*.png"))
    size, item = 32, 40
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock(vocab=["one", "two"])),
        get_y=lambda path: ["one"],
        splitter=IndexSplitter(list(range(1, len(paths)))),  # fastai wants a training item
        item_tfms=Resize(item),
        batch_tfms=[*batch_transforms(size, config.augment), Normalize.from_stats(*imagenet_stats)],
    )
    theirs = block.dataloaders(paths, bs=len(paths), device=torch.device("cpu")).valid.one_batch()[0]
    store = ImageCache(config).store(item)
    hashes = [__import__("hashlib").sha256(path.read_bytes()).hexdigest() for path in paths]
    rows = np.array([store.rows[key] for key in hashes[1:]])
    ours = next(
        iter(
            CachedBatches(
                store.pixels(), rows, np.zeros((5, 2), np.float32), size, config, torch.device("cpu"), False
            )
        )
    )[0]
    assert ours.shape == theirs.shape == (5, 3, 32, 32)
    assert torch.allclose(ours, torch.as_tensor(theirs), atol=0.02)


def test_mixed_precision_and_channels_last_are_really_in_effect(tmp_path):
    """The GPU path's options, checked on the CPU (bf16 autocast is the same code there)."""
    config = config_for(tmp_path, "JPEG", "train.mixed_precision=on", "train.channels_last=true")
    pixels = np.random.default_rng(0).integers(0, 255, (8, 40, 40, 3), dtype=np.uint8)
    targets = np.zeros((8, 2), np.float32)
    batches = CachedBatches(pixels, np.arange(8), targets, 32, config, torch.device("cpu"), shuffle=True)
    learn = build_learner(DataLoaders(batches, batches), 2, config, torch.device("cpu"))
    seen = []
    convolution = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d))
    convolution.register_forward_hook(lambda module, inputs, output: seen.append(output))
    learn.fit(1, 1e-3)
    assert seen and seen[0].dtype == torch.bfloat16
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    plain = config_for(tmp_path, "JPEG", "train.mixed_precision=off", "train.channels_last=false")
    learn = build_learner(DataLoaders(batches, batches), 2, plain, torch.device("cpu"))
    seen.clear()
    next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(
        lambda module, inputs, output: seen.append(output)
    )
    learn.fit(1, 1e-3)
    assert seen[0].dtype == torch.float32 and not seen[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bf16_instructions", [True, False])
def test_automatic_mixed_precision_is_on_for_cuda_and_for_cpus_with_bf16_instructions(
    monkeypatch, bf16_instructions
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_instructions)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert use_mixed_precision("auto", torch.device("cpu")) is bf16_instructions
    assert use_mixed_precision("auto", torch.device("cuda"))
    assert use_mixed_precision("on", torch.device("cpu")) and not use_mixed_precision(
        "off", torch.device("cuda")
    )


def test_batches_that_are_not_shuffled_keep_the_order_they_were_given():
    """Predictions are matched to samples by position: a prediction loader must not reorder rows."""
    config = tiny_demo_config_for_order()
    pixels = np.arange(10, dtype=np.uint8)[:, None, None, None].repeat(20, 1).repeat(20, 2).repeat(3, 3)
    rows = np.array([7, 2, 9, 0, 5])
    targets = np.eye(5, dtype=np.float32)
    images, labels = next(
        iter(CachedBatches(pixels, rows, targets, 16, config, torch.device("cpu"), shuffle=False))
    )
    assert [round(float(image.mean()) * 255) for image in images] == [7, 2, 9, 0, 5]
    assert torch.equal(labels, torch.eye(5))


def tiny_demo_config_for_order():
    from foldwise.config import load_config
    from tests.conftest import CONFIGS

    return load_config(CONFIGS / "demo.toml", ["train.batch_size=8"])


def test_a_model_from_scratch_gets_the_linear_head_and_a_pretrained_one_fastais(tmp_path):
    """fastai's head (concat pooling, a hidden layer, dropout) is made to fine-tune a pretrained body;
    from scratch Foldwise uses the network's own classifier: average pooling and one linear layer."""
    batches = CachedBatches(
        np.zeros((4, 40, 40, 3), np.uint8),
        np.arange(4),
        np.zeros((4, 3), np.float32),
        32,
        config_for(tmp_path, "JPEG"),
        torch.device("cpu"),
        shuffle=False,
    )

    def head_layers(*overrides):
        config = config_for(tmp_path, "JPEG", *overrides)
        return [
            type(m).__name__
            for m in build_learner(DataLoaders(batches, batches), 3, config, torch.device("cpu")).model[1]
        ]

    assert head_layers("model.pretrained=false") == ["AdaptiveAvgPool2d", "Flatten", "Linear"]
    fastai_head = head_layers("model.pretrained=false", "model.head=fastai")
    assert fastai_head[0] == "AdaptiveConcatPool2d" and fastai_head.count("Linear") == 2
    assert "Dropout" in fastai_head
    pretrained = config_for(tmp_path, "JPEG", "model.pretrained=true").model
    assert pretrained.resolved_head() == "fastai"


@pytest.mark.slow  # two learning-rate searches and two epochs: the longest test of `make test-quick`
def test_lr_find_runs_on_the_model_as_its_stage_trains_it(tmp_path, monkeypatch):
    """lr_find's suggestion is for the stage's own model: after the freeze (head only) of a frozen
    stage of a pretrained body, after the unfreeze of the next one."""
    scratch = config_for(tmp_path, "JPEG", "model.pretrained=false")
    pretrained = config_for(tmp_path, "JPEG", "model.pretrained=true")  # freezing applies
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (16, 40, 40, 3), dtype=np.uint8)
    targets = rng.integers(0, 2, (16, 2)).astype(np.float32)
    batches = CachedBatches(pixels, np.arange(16), targets, 32, scratch, torch.device("cpu"), shuffle=True)
    learn = build_learner(DataLoaders(batches, batches), 2, scratch, torch.device("cpu"))
    first_convolution = next(m for m in learn.model[0].modules() if isinstance(m, torch.nn.Conv2d))
    body_trains_at_lr_find = []
    real_lr_find = learn.lr_find

    def spying_lr_find(**kwargs):
        body_trains_at_lr_find.append(first_convolution.weight.requires_grad)
        return real_lr_find(**kwargs, num_it=20)  # the real search, shorter

    monkeypatch.setattr(learn, "lr_find", spying_lr_find)
    for frozen in (True, False):
        assert fit_stage(learn, StageConfig(size=32, epochs=1, frozen=frozen), pretrained) > 0
    assert body_trains_at_lr_find == [False, True]
