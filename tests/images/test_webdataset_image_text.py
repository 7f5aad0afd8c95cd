"""`webdataset_image_text`: image-caption pairs from WebDataset shards, as the JSONL loader
reads them, and every bad input of a shard in a real training run."""

from __future__ import annotations

import io
import json

import pytest
import torch
from conftest import tiny_text_recipe, write_recipe
from shard_files import write_shards
from test_image_plugins import TINY_IMAGES

from modal_core.checkpoints.run_folder import BAD_SAMPLES_FILE, read_history
from modal_core.config.loader import load_recipe
from modal_core.data.bad_samples import read_bad_samples
from modal_core.data.segments import Media, Text
from modal_core.data.shards import read_shard
from modal_core.errors import DataError
from modal_core.training.run import train
from modal_core_images.datasets import image_text_jsonl, webdataset_image_text
from modal_core_images.processing import ImageInputError, ImageProcessor
from modal_core_images.shapes import caption, render_scene, scene_for_index


def _image(index: int, fmt: str) -> tuple[bytes, str]:
    scene = scene_for_index(index, 0, "train", image_size=32)
    buffer = io.BytesIO()
    render_scene(scene).save(buffer, format=fmt)
    return buffer.getvalue(), caption(scene)


@pytest.fixture
def pairs(tmp_path):
    """Eight image-caption pairs as image files + a JSONL file, and as two shards
    (PNG with .txt captions, JPEG with img2dataset-style .json captions)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    lines, shards = [], [[], []]
    for index in range(8):
        fmt, extension = ("PNG", "png") if index < 4 else ("JPEG", "jpg")
        data, text = _image(index, fmt)
        (folder / f"{index:03d}.{extension}").write_bytes(data)
        lines.append(json.dumps({"image": f"{index:03d}.{extension}", "caption": text}))
        member = {"txt": text} if index < 4 else {"json": json.dumps({"caption": text, "width": 32})}
        shards[index // 4].append({"__key__": f"{index:03d}", extension: data, **member})
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    write_shards(tmp_path / "shards", shards)
    return folder / "pairs.jsonl", str(tmp_path / "shards" / "shard-{00000..00001}.tar")


@pytest.mark.parametrize("task", ["generate", "caption"])
def test_shard_samples_match_the_jsonl_loader_on_the_same_images(pairs, task):
    jsonl, pattern = pairs
    from_jsonl = image_text_jsonl({"path": str(jsonl), "task": task}, 0, "train")
    source = webdataset_image_text({"path": pattern, "task": task}, 0, "train")
    records = [record for shard in source.shards for record in read_shard(shard)]
    assert [record.key for record in records] == [f"{i:03d}" for i in range(8)]
    processor = ImageProcessor(size=32)
    for index, record in enumerate(records):
        expected, got = from_jsonl[index], source.make(record)
        assert [s for s in got.segments if isinstance(s, Text)] == [s for s in expected.segments if isinstance(s, Text)]
        (want,), (have,) = ([s for s in sample.segments if isinstance(s, Media)] for sample in (expected, got))
        assert (have.modality, have.supervised) == (want.modality, want.supervised)
        assert torch.equal(processor(have.payload), processor(want.payload))
        assert got.chat == expected.chat


def test_a_corrupt_image_member_is_named_by_shard_and_member(tmp_path):
    good, text = _image(0, "PNG")
    (shard,) = write_shards(tmp_path, [[{"__key__": "a", "png": good[:60], "txt": text}]])
    (record,) = read_shard(str(shard))
    (media,) = [s for s in webdataset_image_text({"path": str(shard)}, 0, "train").make(record).segments if isinstance(s, Media)]
    with pytest.raises(ImageInputError, match=f"{shard}:a.png: the image is corrupt or truncated"):
        ImageProcessor(size=32)(media.payload)


def test_a_sample_without_caption_or_image_is_a_data_error_naming_it(tmp_path):
    good, _ = _image(0, "PNG")
    samples = [{"__key__": "nocap", "png": good}, {"__key__": "noimg", "txt": "a cat"}, {"__key__": "badjson", "png": good, "json": "[1]"}]
    (shard,) = write_shards(tmp_path, [samples])
    source = webdataset_image_text({"path": str(shard)}, 0, "train")
    nocap, noimg, badjson = read_shard(str(shard))
    with pytest.raises(DataError, match=rf"{shard}:nocap: no caption \(a \.txt member, or \.json"):
        source.make(nocap)
    with pytest.raises(DataError, match=rf"{shard}:noimg: no image member \(\.jpg, \.jpeg, \.png, \.webp\)"):
        source.make(noimg)
    with pytest.raises(DataError, match=f'{shard}:badjson.json: expected an object with a "caption" string'):
        source.make(badjson)


def _bad_shards(tmp_path) -> str:
    """A shard of good pairs with a corrupt image and a sample without caption; a file
    that is not a tar; a truncated shard; three good shards (so each of 2 readers has one)."""
    good = [_image(index, "PNG") for index in range(6)]
    first = [{"__key__": f"g{i}", "png": data, "txt": text} for i, (data, text) in enumerate(good[:3])]
    first += [{"__key__": "corrupt", "png": good[0][0][:70], "txt": "x"}, {"__key__": "nocaption", "png": good[1][0]}]
    last = [{"__key__": f"g{i}", "png": data, "txt": text} for i, (data, text) in enumerate(good[3:], start=3)]
    paths = write_shards(tmp_path / "shards", [first, [], [], last, last, last])
    paths[1].write_bytes(b"not a tar at all\n" * 100)
    (whole,) = write_shards(tmp_path / "whole", [[{"__key__": "t0", "png": good[0][0], "txt": "y"}] * 1])
    paths[2].write_bytes(whole.read_bytes()[:1800])
    return str(tmp_path / "shards" / "shard-{00000..00005}.tar")


def _recipe(tmp_path, pattern: str, policy: str):
    sources = [{"dataset": "webdataset_image_text", "options": {"path": pattern, "task": task}} for task in ("generate", "caption")]
    recipe = tiny_text_recipe(
        tmp_path / policy,
        modalities=TINY_IMAGES,
        train=["backbone", "adapters", "heads"],
        data={
            "sources": sources,
            "batch_size": 4,
            "max_length": 128,
            "num_workers": 2,
            "on_bad_sample": policy,
        },
        trainer={"max_steps": 12, "log_every_n_steps": 1, "progress_bar": False, "accelerator": "cpu"},
    )
    return write_recipe(tmp_path / f"{policy}.yaml", recipe)


def test_skip_trains_on_the_good_pairs_and_logs_every_bad_shard_input(tmp_path, image_plugins):
    pattern = _bad_shards(tmp_path)
    result = train(load_recipe(_recipe(tmp_path, pattern, "skip"), plugins=image_plugins), image_plugins)
    assert len([r for r in read_history(result.history) if "train/loss" in r]) == 12
    logged = {entry["source"]: entry["reason"] for entry in read_bad_samples(result.run_dir / BAD_SAMPLES_FILE)}
    shard = str(tmp_path / "shards" / "shard-{:05d}.tar").format
    assert logged[f"{shard(0)}:corrupt"].startswith(f"{shard(0)}:corrupt.png: the image is corrupt")
    assert logged[f"{shard(0)}:nocaption"].startswith(f"{shard(0)}:nocaption: no caption")
    assert logged[shard(1)].startswith(f"{shard(1)}: not a tar file")
    assert logged[f"{shard(2)}:t0.png"].startswith(f"{shard(2)}: truncated or corrupt at member 't0.png'")
    assert len(logged) == 4


def test_raise_stops_naming_the_shard(tmp_path, image_plugins):
    pattern = _bad_shards(tmp_path)
    with pytest.raises(DataError, match=r"shard-0000[0-2]\.tar"):
        train(load_recipe(_recipe(tmp_path, pattern, "raise"), plugins=image_plugins), image_plugins)
