"""Bad data in a real training run: `raise` names the file, `skip` drops and logs it."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
import torch
from conftest import tiny_text_recipe, write_recipe
from PIL import Image
from test_image_plugins import TINY_IMAGES, image_plugins  # noqa: F401  (fixture)

from modal_core.assemble import BAD_SAMPLES_FILE
from modal_core.config.loader import load_recipe
from modal_core.data.bad_samples import read_bad_samples
from modal_core.data.shapes import render_scene, scene_for_index
from modal_core.errors import DataError
from modal_core.training.history import read_history
from modal_core.training.run import train


@pytest.fixture
def vqa_folder(tmp_path):
    """A VQA JSONL file with good images, a corrupt one, a text file posing as PNG,
    an empty file, a missing path, a question far too long for max_length, a
    decompression bomb, and malformed JSONL lines (bad JSON, not an object, missing key)."""
    folder = tmp_path / "data"
    folder.mkdir()
    records = []
    for index in range(6):
        render_scene(scene_for_index(index, 0, "train", image_size=32)).save(folder / f"good{index}.png")
        records.append({"image": f"good{index}.png", "question": "what colour is it?", "answer": "red"})
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "text.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    records += [
        {"image": "corrupt.png", "question": "q?", "answer": "a"},
        {"image": "text.png", "question": "q?", "answer": "a"},
        {"image": "empty.png", "question": "q?", "answer": "a"},
        {"image": "missing.png", "question": "q?", "answer": "a"},
        {"image": "good0.png", "question": "why " * 200, "answer": "a"},
    ]
    (folder / "bomb.png").write_bytes(_png_claiming_size(100_000, 100_000))
    records.append({"image": "bomb.png", "question": "q?", "answer": "a"})
    lines = [json.dumps(r) for r in records]
    lines += ['{"image": "good1.png", "question": "unclosed', '["a", "list"]', '{"image": "good2.png", "question": "no answer"}']
    (folder / "vqa.jsonl").write_text("\n".join(lines) + "\n\n")  # a trailing blank line is not a record
    return folder / "vqa.jsonl"


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR chunk CRC
    return bytes(data)


def _recipe(tmp_path, vqa, policy: str):
    recipe = tiny_text_recipe(
        tmp_path / policy,
        modalities={"image_understanding": TINY_IMAGES["image_understanding"]},
        data={
            "sources": [{"dataset": "vqa_jsonl", "options": {"path": str(vqa)}}],
            "batch_size": 4,
            "max_length": 64,
            "on_bad_sample": policy,
        },
        trainer={"max_steps": 10, "log_every_n_steps": 1, "progress_bar": False, "accelerator": "cpu"},
    )
    return write_recipe(tmp_path / f"{policy}.yaml", recipe)


def test_skip_policy_trains_and_logs_every_bad_file(tmp_path, vqa_folder, image_plugins):  # noqa: F811
    recipe = load_recipe(_recipe(tmp_path, vqa_folder, "skip"), plugins=image_plugins)
    result = train(recipe, image_plugins)
    assert len([r for r in read_history(result.history) if "train/loss" in r]) == 10
    logged = read_bad_samples(result.run_dir / BAD_SAMPLES_FILE)
    reasons = " ".join(entry["reason"] for entry in logged)
    sources = {entry["source"] for entry in logged}
    for name in ("corrupt.png", "text.png", "empty.png", "missing.png", "bomb.png"):
        assert name in reasons, name
    assert "over data.max_length=64" in reasons
    assert "decompression" in reasons or "pixels" in reasons
    jsonl = str(vqa_folder)
    assert f"{jsonl}:13: not valid JSON" in reasons
    assert f"{jsonl}:14: expected a JSON object, got list" in reasons
    assert f"{jsonl}:15: missing key(s) ['answer']" in reasons
    assert len(logged) == len({entry["source"] for entry in logged}) == 9  # each bad item logged once
    assert all(source.startswith(("vqa_jsonl[", str(vqa_folder))) for source in sources)


def test_raise_policy_names_the_file(tmp_path, vqa_folder, image_plugins):  # noqa: F811
    recipe = load_recipe(_recipe(tmp_path, vqa_folder, "raise"), plugins=image_plugins)
    with pytest.raises(DataError, match=r"(corrupt|text|empty|missing)\.png|max_length"):
        train(recipe, image_plugins)


def test_unknown_policy_is_a_recipe_error(tmp_path, vqa_folder, image_plugins):  # noqa: F811
    from modal_core.errors import RecipeError

    recipe = load_recipe(_recipe(tmp_path, vqa_folder, "ignore"), plugins=image_plugins)
    with pytest.raises(RecipeError, match="on_bad_sample"):
        train(recipe, image_plugins)


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_tokenizer_batches_follow_the_policy(tmp_path, vqa_folder, policy):
    """Training a modality's tokenizer (e.g. the VQ model) stacks raw media: a corrupt
    file is skipped and logged, or raised naming it."""
    from types import SimpleNamespace

    from modal_core.data.bad_samples import BadSamplePolicy
    from modal_core.data.images import ImageProcessor
    from modal_core.data.segments import Media, Sample
    from modal_core.training.tokenizer_module import PayloadCollator

    folder = vqa_folder.parent
    samples = [Sample((Media("vq", folder / name),), source=name) for name in ("good0.png", "corrupt.png", "good1.png")]
    log = tmp_path / "bad.jsonl"
    collate = PayloadCollator("vq", SimpleNamespace(processor=ImageProcessor(size=16)), BadSamplePolicy(policy, log))
    if policy == "raise":
        with pytest.raises(DataError, match="corrupt.png"):
            collate(samples)
        return
    batch = collate(samples)
    assert batch.shape == (2, 3, 16, 16)
    torch.testing.assert_close(batch[1], ImageProcessor(size=16)(folder / "good1.png"))
    assert [entry["source"] for entry in read_bad_samples(log)] == ["corrupt.png"]
