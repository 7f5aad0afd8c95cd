"""Tiny local stage-3 data for fine-tuning tests, and a recipe that fine-tunes a
converted checkpoint on it the way `recipes/janus/stage3.yaml` does (understanding :
text : generation = 5 : 1 : 4)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from shard_files import write_shards

from modal_core.data.chat import question_answer
from modal_core.data.segments import Media
from modal_core_images.shapes import caption, questions, render_scene, scene_for_index

from .tiny_janus import IMAGE_SIZE

NUM_SCENES = 8
RECIPES = Path(__file__).resolve().parents[3] / "recipes" / "janus"
QUESTION = "what colour is the circle?"


def write_sft_data(root: Path) -> Path:
    """Shapes scenes at the tiny model's size as VQA, caption and text JSONL files."""
    (root / "images").mkdir(parents=True)
    vqa, captions, texts = [], [], []
    for index in range(NUM_SCENES):
        scene = scene_for_index(index, 0, "train", image_size=IMAGE_SIZE, num_objects=1)
        name = f"images/{index}.png"
        render_scene(scene).save(root / name)
        question, answer = questions(scene)[0]
        vqa.append({"image": name, "question": question, "answer": answer})
        captions.append({"image": name, "caption": caption(scene)})
        texts.append({"text": f"{caption(scene)}."})
    for name, records in (("sft_vqa", vqa), ("sft_captions", captions), ("sft_text", texts)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    _write_real_formats(root, vqa, captions, texts)
    return root


def _write_real_formats(root: Path, vqa: list[dict], captions: list[dict], texts: list[dict]) -> None:
    """The same scenes in the formats the Janus recipes read: a LLaVA conversation file
    (two turns per image), ShareGPT-style text conversations, and WebDataset shards of
    image-caption pairs and of text."""
    conversations = [
        {
            "id": str(index),
            "image": item["image"],
            "conversations": [
                {"from": "human", "value": f"<image>\n{item['question']}"},
                {"from": "gpt", "value": item["answer"]},
                {"from": "human", "value": "describe the picture."},
                {"from": "gpt", "value": pair["caption"]},
            ],
        }
        for index, (item, pair) in enumerate(zip(vqa, captions))
    ]
    (root / "sft_conversations.json").write_text(json.dumps(conversations))
    chats = [{"conversations": [{"from": "human", "value": "say something."}, {"from": "gpt", "value": t["text"]}]} for t in texts]
    (root / "sft_text_conversations.jsonl").write_text("".join(json.dumps(chat) + "\n" for chat in chats))
    pairs = [{"__key__": f"{i:03d}", "png": (root / p["image"]).read_bytes(), "txt": p["caption"]} for i, p in enumerate(captions)]
    half = len(pairs) // 2
    write_shards(root / "shards", [pairs[:half], pairs[half:]], name="pairs")
    write_shards(root / "shards", [[{"__key__": f"{i:03d}", "txt": t["text"]} for i, t in enumerate(texts)]], name="text")


SHARD_PATTERNS = {"webdataset_image_text": "shards/pairs-{00000..00001}.tar", "webdataset_text": "shards/text-00000.tar"}
"""Where `write_sft_data` puts each shard data set's shards (relative to its folder)."""


def stage3_recipe(checkpoint: Path, data: Path, output_dir: Path, steps: int, overlay: str | None = None, **sections) -> Path:
    """A recipe file on top of the converted checkpoint's own recipe (architecture,
    chat format, stage-3 settings) and optionally a shipped overlay recipe
    (`recipes/janus/<overlay>.yaml`), with `init_from` the checkpoint, run on the CPU in
    float32. The learning rate is raised so that ten steps move a random tiny model."""
    bases = [str(checkpoint / "recipe.yaml")] + ([str(RECIPES / f"{overlay}.yaml")] if overlay else [])
    recipe = {
        "base": bases,
        "init_from": str(checkpoint),
        "output_dir": str(output_dir),
        "data": {
            "sources": [
                {"dataset": "vqa_jsonl", "weight": 5, "options": {"path": str(data / "sft_vqa.jsonl")}},
                {"dataset": "jsonl_text", "weight": 1, "options": {"path": str(data / "sft_text.jsonl")}},
                {"dataset": "image_text_jsonl", "weight": 4, "options": {"path": str(data / "sft_captions.jsonl"), "task": "generate"}},
            ],
            "batch_size": 4,
        },
        "backbone": {"dtype": "float32"},
        "optim": {"lr": 3.0e-3},
        "trainer": {
            "max_steps": steps,
            "accelerator": "cpu",
            "precision": "32-true",
            "activation_checkpointing": False,
            "progress_bar": False,
            "log_every_n_steps": 1,
        },
        **sections,
    }
    path = output_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe))
    return path


def data_loss(pipeline, data: Path, plugins) -> float:
    """Mean next-token loss of `pipeline`'s model over every sample of the tiny data."""
    sources = (("vqa_jsonl", "sft_vqa", {}), ("jsonl_text", "sft_text", {}), ("image_text_jsonl", "sft_captions", {"task": "generate"}))
    samples = []
    for dataset, name, options in sources:
        items = plugins.datasets()[dataset]({"path": str(data / f"{name}.jsonl"), **options}, 0, "train")
        samples += [items[index] for index in range(len(items))]
    with torch.no_grad():
        return float(pipeline.model(**pipeline.collator(samples).model_inputs()).loss)


def understanding_logits(pipeline, image) -> torch.Tensor:
    """Text-head logits (1, T, vocab) of one image question in the Janus chat format."""
    batch = pipeline.collator.left_padded([question_answer(QUESTION, None, [Media("image_understanding", image)])])
    with torch.no_grad():
        embeds, _ = pipeline.model.embed(batch.input_ids, batch.token_ids, batch.media)
        hidden = pipeline.model.transformer(embeds, batch.attention_mask, batch.position_ids).hidden
        return pipeline.model.logits("text", hidden)
