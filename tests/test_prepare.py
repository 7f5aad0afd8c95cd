"""`modal-core prepare`: cached codes and features train exactly like the raw items."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_recipe, write_recipe
from omegaconf import OmegaConf

import modal_core.preparation.run as preparation
from modal_core.checkpoints.run_folder import read_history
from modal_core.cli import main
from modal_core.config.loader import load_recipe
from modal_core.data.prepared import INDEX_FILE, PreparedDataset, shard_name
from modal_core.data.segments import Encoded, Media, Text
from modal_core.errors import DataError
from modal_core.training.api import train
from modal_core_images.shapes import render_scene, scene_for_index

UNDERSTANDING, GENERATION = "image_understanding", "vq_generation"


def _recipe(tmp_path: Path, name: str, sources: list | None = None, steps: int = 3) -> dict:
    recipe = tiny_image_recipe(tmp_path / name)
    recipe["trainer"]["max_steps"] = steps
    recipe["trainer"]["checkpoint_every_n_steps"] = 0
    if sources is not None:
        recipe["data"]["sources"] = sources
    return recipe


def _losses(run_dir: Path) -> list[float]:
    return [record["train/loss"] for record in read_history(run_dir / "history.jsonl") if "train/loss" in record]


def _prepare(tmp_path: Path, image_plugins, recipe: dict, output: Path, *flags: str) -> int:
    path = write_recipe(tmp_path / "prepare.yaml", recipe)
    return main(["prepare", str(path), "--output", str(output), "--shard-size", "10", *flags], plugins=image_plugins)


def test_training_on_prepared_codes_and_features_matches_training_on_the_images(tmp_path, image_plugins, capsys):
    raw = train(write_recipe(tmp_path / "raw.yaml", _recipe(tmp_path, "raw")), plugins=image_plugins)
    output = tmp_path / "prepared"
    assert _prepare(tmp_path, image_plugins, _recipe(tmp_path, "unused"), output, "--modalities", UNDERSTANDING, GENERATION) == 0
    sources = OmegaConf.load(output / "recipe.yaml").data.sources
    assert [source.dataset for source in sources] == ["prepared", "prepared"]
    printed = capsys.readouterr().out
    assert "data.sources[1] shapes: 64 samples" in printed and f"modal-core train {output / 'recipe.yaml'}" in printed

    # What is cached is what the encoders of the training run compute.
    vqa, generate = (PreparedDataset(source.options.path) for source in sources)
    assert len(vqa) == len(generate) == 64 and len(vqa.shards) == 7  # 64 samples, 10 per shard
    codes = next(s for s in generate[5].segments if isinstance(s, Media)).payload
    assert isinstance(codes, Encoded) and codes.value.shape == (16,) and not codes.value.is_floating_point()
    features = next(s for s in vqa[5].segments if isinstance(s, Media)).payload
    assert isinstance(features, Encoded) and features.value.shape == (16, 32) and features.value.dtype == torch.float32

    cached = train(output / "recipe.yaml", [f"output_dir={tmp_path / 'cached'}"], plugins=image_plugins)
    raw_losses, cached_losses = _losses(raw.run_dir), _losses(cached.run_dir)
    assert len(raw_losses) == 3
    assert cached_losses == pytest.approx(raw_losses, rel=1e-5, abs=1e-6)


def _jsonl_source(tmp_path: Path, count: int = 12) -> dict:
    folder = tmp_path / "pictures"
    folder.mkdir()
    lines = []
    for index in range(count):
        render_scene(scene_for_index(index, 0, "train", image_size=32)).save(folder / f"{index}.png")
        lines.append(json.dumps({"image": f"{index}.png", "caption": f"picture {index}"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return {"dataset": "image_text_jsonl", "options": {"path": str(folder / "captions.jsonl"), "task": "generate"}}


def test_prepared_samples_record_their_inputs_checksums_and_leave_other_sources_alone(tmp_path, image_plugins):
    source = _jsonl_source(tmp_path)
    text = {"dataset": "shapes_text", "options": {"num_sentences": 50}}
    output = tmp_path / "prepared"
    assert _prepare(tmp_path, image_plugins, _recipe(tmp_path, "unused", sources=[source, text]), output) == 0
    sources = OmegaConf.to_container(OmegaConf.load(output / "recipe.yaml").data.sources)
    assert sources[1] == {**text, "weight": 1.0}  # nothing to encode: the source as it was
    folder = Path(sources[0]["options"]["path"])
    with tarfile.open(folder / shard_name(0)) as tar:
        record = json.loads(tar.extractfile("000000003.sample.json").read())
    picture = tmp_path / "pictures" / "3.png"
    assert record["inputs"] == [{"segment": 1, "sha256": hashlib.sha256(picture.read_bytes()).hexdigest(), "file": str(picture.resolve())}]
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["samples"] == 12 and [shard["samples"] for shard in index["shards"]] == [10, 2]
    assert index["shards"][1]["sha256"] == hashlib.sha256((folder / shard_name(1)).read_bytes()).hexdigest()


def test_an_interrupted_preparation_resumes_at_its_first_missing_shard(tmp_path, image_plugins, monkeypatch):
    recipe = _recipe(tmp_path, "unused", sources=[_jsonl_source(tmp_path, count=25)])
    whole = tmp_path / "whole"
    assert _prepare(tmp_path, image_plugins, recipe, whole) == 0

    written = []
    real_write = preparation.write_shard

    def write_then_stop(path, samples):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path.name)
        return real_write(path, samples)

    monkeypatch.setattr(preparation, "write_shard", write_then_stop)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        _prepare(tmp_path, image_plugins, recipe, interrupted)
    folder = interrupted / "00-image_text_jsonl"
    with pytest.raises(DataError, match="not finished .20 samples in 2 shards"):
        PreparedDataset(folder)

    written.clear()
    monkeypatch.setattr(preparation, "write_shard", lambda path, samples: written.append(path.name) or real_write(path, samples))
    assert _prepare(tmp_path, image_plugins, recipe, interrupted) == 0
    assert written == [shard_name(2)]  # only the missing shard
    for number in range(3):
        assert (folder / shard_name(number)).read_bytes() == (whole / "00-image_text_jsonl" / shard_name(number)).read_bytes()


def test_preparation_refuses_to_replace_another_one_or_to_cache_a_training_encoder(tmp_path, image_plugins, capsys):
    output = tmp_path / "prepared"
    first = _recipe(tmp_path, "unused", sources=[_jsonl_source(tmp_path)])
    assert _prepare(tmp_path, image_plugins, first, output) == 0
    other = {**first, "seed": 1}  # other encoder weights
    assert _prepare(tmp_path, image_plugins, other, output) == 1
    assert "00-image_text_jsonl already holds another preparation" in capsys.readouterr().err
    assert _prepare(tmp_path, image_plugins, other, output, "--overwrite") == 0
    assert json.loads((output / "00-image_text_jsonl" / INDEX_FILE).read_text())["seed"] == 1

    trains_encoders = {**first, "train": ["backbone", "encoders", "adapters", "heads"]}
    assert _prepare(tmp_path, image_plugins, trains_encoders, tmp_path / "other") == 1
    assert "the encoders of ['vq_generation'] train in this recipe" in capsys.readouterr().err


def test_damaged_or_mismatched_prepared_data_gives_errors_naming_it(tmp_path, image_plugins):
    output = tmp_path / "prepared"
    assert _prepare(tmp_path, image_plugins, _recipe(tmp_path, "unused", sources=[_jsonl_source(tmp_path)]), output) == 0
    folder = output / "00-image_text_jsonl"
    shard = folder / shard_name(1)
    shard.write_bytes(shard.read_bytes()[:-600])
    with pytest.raises(DataError, match=f"{shard}: missing or not the size"):
        PreparedDataset(folder)

    (folder / INDEX_FILE).write_text("{}")
    with pytest.raises(DataError, match="not a modal-core prepared index"):
        PreparedDataset(folder)


def test_the_collator_checks_cached_items_against_the_model(image_plugins, tmp_path):
    from modal_core.assemble import assemble

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", _recipe(tmp_path, "unused")), [], image_plugins)
    built = assemble(recipe, image_plugins)
    collator = built.collator
    from modal_core.data.chat import caption_to_image

    good = caption_to_image("a red circle", Media(GENERATION, Encoded(torch.arange(16, dtype=torch.int32)), supervised=True), GENERATION)
    batch = collator([good])
    assert batch.media[GENERATION].encoded and batch.media[GENERATION].payload.tolist() == [list(range(16))]
    output = built.model(**batch.model_inputs())
    selected = batch.supervised[:, 1:] & (batch.token_head[:, 1:] == built.model.head_index(GENERATION))
    assert int(selected.sum()) == 16  # the cached codes are the targets of the image head
    assert torch.isfinite(output.loss)

    wrong_size = caption_to_image("a red circle", Media(GENERATION, Encoded(torch.arange(64)), supervised=True), GENERATION)
    with pytest.raises(DataError, match=r"cached item is torch.int64 \(64,\), expected codes \(16,\)"):
        collator([wrong_size])
    image = render_scene(scene_for_index(0, 0, "train", image_size=32))
    mixed = [good, caption_to_image("a red circle", Media(GENERATION, image, supervised=True), GENERATION)]
    with pytest.raises(DataError, match="mixes cached .* and raw items"):
        collator(mixed)


def test_a_bad_sample_is_kept_as_its_error_under_skip_and_stops_the_preparation_otherwise(tmp_path, image_plugins, capsys):
    source = _jsonl_source(tmp_path)
    (tmp_path / "pictures" / "4.png").unlink()
    recipe = _recipe(tmp_path, "unused", sources=[source])
    assert _prepare(tmp_path, image_plugins, recipe, tmp_path / "strict") == 1
    assert "captions.jsonl:5: image file not found" in capsys.readouterr().err

    recipe["data"]["on_bad_sample"] = "skip"
    assert _prepare(tmp_path, image_plugins, recipe, tmp_path / "lenient") == 0
    assert "12 samples, 1 bad" in capsys.readouterr().out
    prepared = PreparedDataset(tmp_path / "lenient" / "00-image_text_jsonl")
    assert isinstance(next(s for s in prepared[5].segments if isinstance(s, Media)).payload, Encoded)
    with pytest.raises(DataError, match=r"sample 000000004 was bad when prepared: .*captions.jsonl:5: image file not found"):
        prepared[4]


def test_a_webdataset_shard_source_is_prepared_record_by_record_like_the_same_images_from_a_folder(tmp_path, image_plugins):
    from shard_files import write_shards

    source = _jsonl_source(tmp_path, count=7)
    records = [json.loads(line) for line in Path(source["options"]["path"]).read_text().splitlines()]
    pictures = tmp_path / "pictures"
    shards = [[], []]
    for number, record in enumerate(records):
        shards[number // 4].append({"__key__": f"{number:03d}", "png": (pictures / record["image"]).read_bytes(), "txt": record["caption"]})
    write_shards(tmp_path / "shards", shards)
    streamed = {"dataset": "webdataset_image_text", "options": {"path": str(tmp_path / "shards" / "shard-{00000..00001}.tar")}}
    output = tmp_path / "prepared"
    assert _prepare(tmp_path, image_plugins, _recipe(tmp_path, "unused", sources=[source, streamed]), output, "--batch-size", "3") == 0

    from_folder = PreparedDataset(output / "00-image_text_jsonl")
    from_shards = PreparedDataset(output / "01-webdataset_image_text")
    assert len(from_shards) == 7 and [shard["samples"] for shard in from_shards.shards] == [7]
    for number in range(7):
        folder_sample, shard_sample = from_folder[number], from_shards[number]
        assert [s for s in shard_sample.segments if isinstance(s, Text)] == [s for s in folder_sample.segments if isinstance(s, Text)]
        folder_codes, shard_codes = (
            [s for s in sample.segments if isinstance(s, Media)][0].payload.value for sample in (folder_sample, shard_sample)
        )
        assert torch.equal(folder_codes, shard_codes)


def test_a_full_disk_while_writing_a_shard_is_one_error_and_leaves_no_partial_shard(tmp_path, monkeypatch):
    import errno

    from modal_core.data import prepared
    from modal_core.errors import StorageError

    class FullDisk(tarfile.TarFile):
        def addfile(self, info, fileobj=None):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepared.tarfile, "open", lambda **kwargs: FullDisk(**{k: v for k, v in kwargs.items() if k != "format"}))
    shard = tmp_path / shard_name(0)
    with pytest.raises(StorageError, match=f"no space left on device while writing {shard}"):
        prepared.write_shard(shard, [{"000000000.sample.json": b"{}"}])
    assert list(tmp_path.iterdir()) == []
