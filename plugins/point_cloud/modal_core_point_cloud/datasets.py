"""Point-cloud data sets: the synthetic shapes world, its text, and local ModelNet40 /
ShapeNet folders. Every factory takes `(options, seed, split)`.

Local folder layouts (nothing is downloaded; `path` is a local directory):

- ModelNet40 (or ModelNet10), as unpacked from its zip::

      ModelNet40/<class>/train/<class>_0001.off
      ModelNet40/<class>/test/<class>_0627.off

  split `train` reads `train/`, any other split reads `test/`.
- ShapeNetCore (v1 or v2)::

      ShapeNetCore.v2/<synset id>/<model id>/models/model_normalized.obj   (v2)
      ShapeNetCore.v1/<synset id>/<model id>/model.obj                     (v1)
      ShapeNetCore.v2/taxonomy.json   (optional: synset id -> class name)

  ShapeNet has no official split here: a model is held out when a hash of its id
  falls in the first `heldout_percent` percent.
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from modal_core.data.chat import ASSISTANT, USER, question_answer
from modal_core.data.indexed import IndexedDataset, TextDataset
from modal_core.data.segments import Media, Sample
from modal_core.errors import DataError, RecipeError
from modal_core_point_cloud.synthetic import DESCRIBE, SHAPE_QUESTIONS, SHAPES, render_points, scene_for_index

MODALITY = "point_cloud"
TASKS = ("qa", "caption", "shape_qa")


def _options(options: dict[str, Any], dataset: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults` overridden by `options`, rejecting keys the data set does not know."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise RecipeError(f"data set {dataset}: unknown option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **options}


def _choice(value: Any, key: str, allowed: tuple) -> Any:
    if value not in allowed:
        raise RecipeError(f"data set option {key}: expected one of {allowed}, got {value!r}")
    return value


SHAPES_DEFAULTS = {
    "task": "qa",
    "size": 20000,
    "points": 1024,
    "colours": False,
    "shapes": list(SHAPES),
    "occlusion_probability": 0.5,
    "max_occlusion": 0.3,
    "jitter": 0.01,
    "modality": MODALITY,
}


def _scene_settings(settings: dict[str, Any]) -> dict[str, Any]:
    shapes = tuple(settings["shapes"])
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown or not shapes:
        raise RecipeError(f"data set option shapes: unknown or no shapes {unknown}; choose among {list(SHAPES)}")
    if not 0.0 <= settings["max_occlusion"] < 0.9:
        raise RecipeError(f"data set option max_occlusion must be within [0, 0.9), got {settings['max_occlusion']}")
    return {
        "shapes": shapes,
        "occlusion_probability": float(settings["occlusion_probability"]),
        "max_occlusion": float(settings["max_occlusion"]),
        "jitter": float(settings["jitter"]),
    }


def pointcloud_shapes(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """The synthetic shapes world. Options: `task` (`qa`: shape, tall and, with
    `colours`, colour questions; `shape_qa`: shape questions only; `caption`), `size`
    (distinct scenes, default 20000), `points` (surface points per scene, 1024),
    `colours` (ask about colours), `shapes` (a subset of the shapes),
    `occlusion_probability`, `max_occlusion`, `jitter`, `modality`."""
    settings = _options(options, "pointcloud_shapes", SHAPES_DEFAULTS)
    task = _choice(settings["task"], "task", TASKS)
    scene_settings = _scene_settings(settings)
    points, colours, modality = int(settings["points"]), bool(settings["colours"]), settings["modality"]

    def make(index: int) -> Sample:
        scene = scene_for_index(index, seed, split, **scene_settings)
        media = [Media(modality, render_points(scene, points))]
        if task == "caption":
            return question_answer(DESCRIBE, scene.caption(colours), media)
        pairs = [(q, scene.shape) for q in SHAPE_QUESTIONS] if task == "shape_qa" else scene.questions(colours)
        question, answer = random.Random(f"{seed}/{split}/{index}/question").choice(pairs)
        return question_answer(question, answer, media)

    return IndexedDataset(int(settings["size"]), make, f"pointcloud_shapes/{task}/{split}")


def pointcloud_text(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Chat-formatted questions, answers and captions of the shapes world, as text (for
    training a tokenizer). Options: `num_sentences` (default 5000), `colours`, `shapes`."""
    defaults = {"num_sentences": 5000, "colours": False, "shapes": list(SHAPES)}
    settings = _options(options, "pointcloud_text", defaults)
    scene_settings = _scene_settings({**SHAPES_DEFAULTS, "shapes": settings["shapes"]})
    colours = bool(settings["colours"])
    texts = []
    for index in range(int(settings["num_sentences"])):
        scene = scene_for_index(index, seed, split, **scene_settings)
        pairs = [(DESCRIBE, scene.caption(colours)), *scene.questions(colours)]
        question, answer = pairs[index % len(pairs)]
        texts.append(f"{USER}: {question}\n\n{ASSISTANT}: {answer}")
    return TextDataset(texts, source="pointcloud_text")


def _class_name(folder_name: str) -> str:
    return folder_name.replace("_", " ")


def modelnet_files(root: Path, split: str) -> list[tuple[Path, str]]:
    """(file, class name) of every OFF file of a ModelNet folder for `split`."""
    part = "train" if split == "train" else "test"
    files = sorted(root.glob(f"*/{part}/*.off"))
    return [(path, _class_name(path.parent.parent.name)) for path in files]


def shapenet_files(root: Path, split: str, heldout_percent: int) -> list[tuple[Path, str]]:
    """(file, class name) of every model of a ShapeNetCore folder for `split`."""
    names: dict[str, str] = {}
    taxonomy = root / "taxonomy.json"
    if taxonomy.is_file():
        try:
            names = {entry["synsetId"]: entry["name"].split(",")[0].strip() for entry in json.loads(taxonomy.read_text())}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DataError(f"{taxonomy}: not a ShapeNet taxonomy (a list of {{'synsetId', 'name'}} objects): {error}") from error
    items = []
    for model in sorted(p for p in root.glob("*/*") if p.is_dir()):
        mesh = next(iter(sorted(model.glob("models/*.obj")) + sorted(model.glob("*.obj"))), None)
        if mesh is None:
            continue
        heldout = zlib.crc32(model.name.encode()) % 100 < heldout_percent
        if heldout == (split != "train"):
            items.append((mesh, _class_name(names.get(model.parent.name, model.parent.name))))
    return items


def pointcloud_folder(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Labelled meshes from a local ModelNet40 or ShapeNetCore folder (layouts in the
    module docstring), asked "what shape is this?" with the class as the answer.
    Options: `path`, `layout` (`modelnet` | `shapenet`), `task` (`shape_qa` |
    `caption`: "describe the shape." -> "a chair"), `heldout_percent` (ShapeNet, 10),
    `modality`."""
    defaults = {"path": None, "layout": "modelnet", "task": "shape_qa", "heldout_percent": 10, "modality": MODALITY}
    settings = _options(options, "pointcloud_folder", defaults)
    layout = _choice(settings["layout"], "layout", ("modelnet", "shapenet"))
    task = _choice(settings["task"], "task", ("shape_qa", "caption"))
    root = Path(settings["path"] or "").expanduser()
    if not settings["path"] or not root.is_dir():
        raise DataError(f"pointcloud_folder: data folder not found: {settings['path']!r}; set the data set option `path`")
    if layout == "modelnet":
        items = modelnet_files(root, split)
    else:
        items = shapenet_files(root, split, int(settings["heldout_percent"]))
    if not items:
        expected = "<class>/{train,test}/*.off" if layout == "modelnet" else "<synset>/<model>/models/*.obj"
        raise DataError(f"pointcloud_folder: no {layout} meshes for split {split!r} under {root}; expected {expected}")
    modality = settings["modality"]

    def make(index: int) -> Sample:
        path, label = items[index]
        media = [Media(modality, path)]
        if task == "caption":
            return question_answer(DESCRIBE, f"a {label}", media)
        question = SHAPE_QUESTIONS[index % len(SHAPE_QUESTIONS)]
        return question_answer(question, label, media)

    return IndexedDataset(len(items), make, f"{root}/{split}")


POINT_CLOUD_DATASETS = {
    "pointcloud_shapes": pointcloud_shapes,
    "pointcloud_text": pointcloud_text,
    "pointcloud_folder": pointcloud_folder,
}
