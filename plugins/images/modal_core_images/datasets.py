"""Image data sets: the shapes world, and local folders / JSONL files.

Every factory takes `(options, seed, split)`. The `understanding` and `generation`
options name the modalities the samples use (defaults: the built-in image plugins), so a
plugin with another image encoder can reuse these data sets.

Local formats (paths inside a JSONL file are relative to the file's folder):

- `image_text_jsonl`: `{"image": "cats/1.jpg", "caption": "a cat on a mat"}` per line;
  `task: generate` (text-to-image) or `task: caption` (image-to-text).
- `vqa_jsonl`: `{"image": "...", "question": "...", "answer": "..."}` per line.
- `image_folder`: every image file under `path` (for tokenizer training).
- `image_conversations`: LLaVA / ShareGPT or OpenAI-style `messages` conversations
  (`modal_core.data.conversation_files`); `<image>` in a user turn is an image to
  understand, in an assistant turn an image to generate; paths are relative to the
  `image_root` option, or else to the file's folder.
- `webdataset_image_text`: image-caption pairs streamed from WebDataset tar shards
  (`{key}.jpg|jpeg|png|webp` with `{key}.txt`, or `{key}.json` holding `"caption"`, as
  `img2dataset` writes them); `path` is a shard, a brace pattern, an fsspec URL or a list.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from modal_core.data.chat import caption_to_image, question_answer, questions_answers
from modal_core.data.conversation_files import conversation_file
from modal_core.data.indexed import IndexedDataset
from modal_core.data.jsonl import read_jsonl
from modal_core.data.segments import Media, Sample
from modal_core.data.shards import ShardRecord
from modal_core.data.streaming import ShardSource
from modal_core.errors import DataError, RecipeError
from modal_core_images.hires_shapes import hires_shapes
from modal_core_images.modalities import GENERATION, UNDERSTANDING
from modal_core_images.processing import EncodedImage
from modal_core_images.shapes import caption, questions, render_scene, scene_for_index

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
DESCRIBE = "describe the picture."
DESCRIBE_SHAPE_FIRST = "name each shape, then its colour."


def _option(options: dict[str, Any], key: str, default: Any, allowed: tuple | None = None) -> Any:
    value = options.get(key, default)
    if allowed is not None and value not in allowed:
        raise RecipeError(f"data set option {key}: expected one of {allowed}, got {value!r}")
    return value


def shapes(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """The shapes world. Options: `task` (vqa | caption | generate | image), `size`
    (number of distinct samples, default 20000), `image_size` (64), `num_objects`
    (1, 2 or null for either), `grid` (snap objects to this many pixels, see
    `shapes.sample_scene`), `questions` (vqa: questions per image, default 1; more make
    a multi-turn chat of that many of the scene's questions, fewer where the scene has
    fewer), `order` (caption: `colour_first`, "a red circle ...", answering "describe the
    picture."; or `shape_first`, "a circle in red ...", answering "name each shape, then
    its colour."), and the modality names."""
    task = _option(options, "task", "vqa", ("vqa", "caption", "generate", "image"))
    size = int(_option(options, "size", 20000))
    image_size = int(_option(options, "image_size", 64))
    num_objects = _option(options, "num_objects", None, (None, 1, 2))
    grid = _option(options, "grid", None)
    understanding = _option(options, "understanding", UNDERSTANDING)
    generation = _option(options, "generation", GENERATION)
    shape_first = _option(options, "order", "colour_first", ("colour_first", "shape_first")) == "shape_first"
    per_image = int(_option(options, "questions", 1))
    if per_image < 1:
        raise DataError(f"shapes option questions: expected at least 1 question per image, got {per_image}")

    def make(index: int) -> Sample:
        scene = scene_for_index(index, seed, split, image_size=image_size, num_objects=num_objects, grid=grid)
        image = render_scene(scene)
        if task == "generate":
            return caption_to_image(caption(scene), Media(generation, image, supervised=True), generation)
        if task == "image":
            return Sample((Media(generation, image),))
        if task == "caption":
            instruction = DESCRIBE_SHAPE_FIRST if shape_first else DESCRIBE
            return question_answer(instruction, caption(scene, shape_first), [Media(understanding, image)])
        rng, pairs = random.Random(f"{seed}/{split}/{index}"), questions(scene)
        # One question keeps `choice`, so the default draws the questions it always drew.
        asked = [rng.choice(pairs)] if per_image == 1 else rng.sample(pairs, min(per_image, len(pairs)))
        return questions_answers(asked, [Media(understanding, image)])

    return IndexedDataset(size, make, f"shapes/{task}/{split}")


def shapes_prompts(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Text-to-image prompts for preference tuning (their item is left for the model to
    draw): captions of two-object scenes of `split` whose objects differ, minus every
    prompt the `shapes_geneval` suite asks at its defaults, so a reward never sees the
    prompts that evaluation scores (nor any one-object or counting prompt of the suite:
    those name one object or two identical ones). Options: `size` (prompts, default
    2000, repeating as scenes repeat), `generation` (the modality)."""
    from modal_core_images.evaluation.shapes_geneval import mini_prompts

    size = int(_option(options, "size", 2000))
    generation = _option(options, "generation", GENERATION)
    asked = {prompt["prompt"] for prompt in mini_prompts()}
    captions: list[str] = []
    index = 0
    while len(captions) < size:
        scene = scene_for_index(index, seed, split, num_objects=2)
        index += 1
        first, second = scene.ordered()
        text = caption(scene)
        if (first.colour, first.shape) != (second.colour, second.shape) and text not in asked:
            captions.append(text)
    return IndexedDataset(size, lambda i: caption_to_image(captions[i], None, generation), f"shapes_prompts/{split}")


def _resolve(base: Path, relative: str, where: str) -> Path:
    path = (base / relative).expanduser()
    if not path.is_file():
        raise DataError(f"{where}: image file not found: {path}")
    return path


def image_text_jsonl(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Image-caption pairs from a local JSONL file. Options: `path`, `task` (generate | caption)."""
    path = Path(_option(options, "path", None) or "")
    task = _option(options, "task", "generate", ("generate", "caption"))
    records = read_jsonl(path, required={"image": str, "caption": str})
    modalities = _option(options, "understanding", UNDERSTANDING), _option(options, "generation", GENERATION)

    def make(index: int) -> Sample:
        record = records[index]
        image = _resolve(path.parent, record["image"], records.where(index))
        return _image_caption_sample(image, record["caption"], task, *modalities)

    return IndexedDataset(len(records), make, str(path))


def _image_caption_sample(image: Any, text: str, task: str, understanding: str, generation: str) -> Sample:
    if task == "generate":
        return caption_to_image(text, Media(generation, image, supervised=True), generation)
    return question_answer(DESCRIBE, text, [Media(understanding, image)])


def webdataset_image_text(options: dict[str, Any], seed: int, split: str) -> ShardSource:
    """Image-caption pairs streamed from WebDataset tar shards. Options: `path` (a shard,
    a brace pattern such as `data/shards-{00000..00099}.tar`, an fsspec URL, or a list of
    these), `task` (generate | caption). A sample needs one image member
    (`.jpg`/`.jpeg`/`.png`/`.webp`, kept encoded until the collator decodes it) and its
    caption (`.txt`, else the `"caption"` string of `.json`)."""
    urls = _option(options, "path", None)
    if not urls:
        raise RecipeError("data set option path: name the shards (a .tar path, a brace pattern or an fsspec URL)")
    task = _option(options, "task", "generate", ("generate", "caption"))
    modalities = _option(options, "understanding", UNDERSTANDING), _option(options, "generation", GENERATION)

    def make(record: ShardRecord) -> Sample:
        extension = next((ext for ext in SHARD_IMAGE_EXTENSIONS if ext in record.members), None)
        if extension is None:
            expected = ", .".join(SHARD_IMAGE_EXTENSIONS)
            raise DataError(f"{record.where}: no image member (.{expected}); the sample has {sorted(record.members)}")
        image = EncodedImage(record.members[extension], f"{record.where}.{extension}")
        return _image_caption_sample(image, _shard_caption(record), task, *modalities)

    return ShardSource(urls, make, f"webdataset_image_text {urls}")


def _shard_caption(record: ShardRecord) -> str:
    if "txt" in record.members:
        return record.value("txt")
    if "json" in record.members:
        metadata = record.value("json")
        text = metadata.get("caption") if isinstance(metadata, dict) else None
        if isinstance(text, str):
            return text
        raise DataError(f'{record.where}.json: expected an object with a "caption" string')
    raise DataError(f'{record.where}: no caption (a .txt member, or .json with "caption"); the sample has {sorted(record.members)}')


def vqa_jsonl(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Visual question answering from a local JSONL file. Options: `path`."""
    path = Path(_option(options, "path", None) or "")
    records = read_jsonl(path, required={"image": str, "question": str, "answer": str})
    understanding = _option(options, "understanding", UNDERSTANDING)

    def make(index: int) -> Sample:
        record = records[index]
        image = _resolve(path.parent, record["image"], records.where(index))
        return question_answer(record["question"], record["answer"], [Media(understanding, image)])

    return IndexedDataset(len(records), make, str(path))


def image_folder(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Every image under a local folder, as media of the generation modality. Options: `path`."""
    root = Path(_option(options, "path", None) or "")
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    generation = _option(options, "generation", GENERATION)
    return IndexedDataset(len(files), lambda i: Sample((Media(generation, files[i]),)), str(root))


def image_conversations(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Conversations about and with images from a LLaVA / ShareGPT JSON or JSONL file
    or an OpenAI-style messages JSONL file. Options: `path`, `image_root`, and
    `placeholders` / `generate` to map `<image>` to other modalities than the
    `understanding` / `generation` ones."""
    understanding = _option(options, "understanding", UNDERSTANDING)
    generation = _option(options, "generation", GENERATION)
    return conversation_file(options, root_option="image_root", placeholders={"<image>": understanding}, generate={"<image>": generation})


IMAGE_DATASETS = {
    "shapes": shapes,
    "shapes_prompts": shapes_prompts,
    "hires_shapes": hires_shapes,
    "image_text_jsonl": image_text_jsonl,
    "vqa_jsonl": vqa_jsonl,
    "image_folder": image_folder,
    "image_conversations": image_conversations,
    "webdataset_image_text": webdataset_image_text,
}
