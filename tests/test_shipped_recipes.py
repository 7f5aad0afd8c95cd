"""Every shipped recipe loads on a hermetic plugin manager and trains one tiny step, so
no shipped recipe can rot.

The training test runs each recipe as users run it, `load_recipe(path, overrides)`,
with overrides that keep its data sets, tasks, trainable groups, stage chain and
modality architecture but make everything tiny: one optimizer step on the CPU in
float32, a tiny backbone and modality sizes, tiny local files for every data path.
A recipe that starts from another one's output (`init_from`, a trained VQ tokenizer)
starts from that recipe's own tiny run; local model folders (`backbone.path`,
`tokenizer.path`, pretrained encoder weights) are replaced by tiny stand-ins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, TINY_BACKBONE, builtin_plugin_manager
from eeg.recordings import write_eegmmi_run
from omegaconf import DictConfig
from point_cloud.helpers import TINY_POINT_CLOUD, write_box_mesh

from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.data.text_tokenizer import save_tokenizer, train_tokenizer
from modal_core.plugins import PluginManager
from modal_core.training.run import TrainResult, train

RECIPES = (REPO / "recipes").resolve()

OVERLAYS = {
    "janus/stage3-lora.yaml": "janus/stage3.yaml",
    "janus/stage3-frozen-backbone.yaml": "janus/stage3.yaml",
    "janus/grpo.yaml": "janus/stage3.yaml",
}
"""Overlay recipe -> the shipped recipe it is layered on in the test. An overlay holds
no architecture or data; users put it after a converted checkpoint's recipe, whose
architecture and stage-3 data are those of `recipes/janus/stage3.yaml`."""

TINY_VQ = {
    "image_size": 32,
    "codebook_size": 64,
    "code_dim": 8,
    "base_channels": 32,
    "channel_multiplier": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "latent_channels": 32,
}
"""Tiny VQ sizes, of both VQ modalities (the shared-encoder arms read one tokenizer checkpoint)."""

TINY_MODALITIES: dict[str, dict[str, Any]] = {
    "image_understanding": {"image_size": 32, "patch_size": 8, "width": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "vq_generation": TINY_VQ,
    "vq_understanding": TINY_VQ,  # the shared-encoder arms: the generation tokenizer's sizes, one checkpoint
    "point_cloud": {**TINY_POINT_CLOUD, "mesh_points": 256},
    "eeg": {"width": 16, "num_heads": 2, "encoder_layers": 0, "queries_per_patch": 1},
}
"""Sizes (never the architecture) each modality gets in a tiny run."""
TINY_VOCAB = 64
"""Replaces a recipe's `backbone.config.vocab_size`; the backbone grows to the tokenizer's size."""
MAX_LENGTH = TINY_BACKBONE["config"]["max_position_embeddings"]
SMALL_DATA = {"num_sentences": 200, "size": 32}
"""Options of the built-in synthetic data sets that size them, and their tiny values."""


def shipped_recipes() -> list[Path]:
    """Every recipe file the project ships (found through the `recipes` folder or link)."""
    return sorted(RECIPES.rglob("*.yaml"))


def _name(path: Path) -> str:
    return path.relative_to(RECIPES).as_posix()


def _ancestors(path: Path) -> set[Path]:
    """Every recipe file `path` inherits from, directly or through its bases."""
    bases = yaml.safe_load(path.read_text()).get("base") or []
    direct = {(path.parent / base).resolve() for base in ([bases] if isinstance(bases, str) else bases)}
    return direct.union(*(_ancestors(base) for base in direct))


def _has_data(path: Path) -> bool:
    return bool(load_recipe(path).data.sources)


def trained_recipes() -> list[str]:
    """The recipes the training test runs: those with data, and the overlays."""
    return [_name(path) for path in shipped_recipes() if _has_data(path) or _name(path) in OVERLAYS]


class TinyData:
    """Tiny local files for the data sets that read files, made once on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def _once(self, key: str, make) -> Path:
        if key not in self._made:
            self._made[key] = make(self.root / key)
        return self._made[key]

    def _shapes_files(self) -> Path:
        from images.janus.sft_data import write_sft_data

        return self._once("shapes", write_sft_data)

    def _modelnet(self, root: Path) -> Path:
        for name in ("chair", "night_stand"):
            for part in ("train", "test"):
                write_box_mesh(root / name / part / f"{name}_0001.off", scale=1.0 if name == "chair" else 0.5)
        return root

    def _eegmmi(self, runs: list[int]) -> Path:
        def make(root: Path) -> Path:
            for subject in (1, 2):  # the last subject is held out
                for run in runs:
                    write_eegmmi_run(root, subject, run)
            return root

        return self._once(f"eegmmi-{'-'.join(map(str, runs))}", make)

    def tokenizer(self) -> Path:
        """A directory with a small byte-level BPE `tokenizer.json` (stands in for an LLM's)."""

        def make(root: Path) -> Path:
            lines = (self._shapes_files() / "sft_text.jsonl").read_text().splitlines()
            texts = (json.loads(line)["text"] for line in lines)
            save_tokenizer(train_tokenizer(texts, 300, []), root)
            return root

        return self._once("tokenizer", make)

    def path_for(self, dataset: str, options: DictConfig) -> Path:
        """The tiny stand-in for `options.path` of a file-reading data set."""
        shapes = {
            "image_text_jsonl": "sft_captions.jsonl",
            "vqa_jsonl": "sft_vqa.jsonl",
            "jsonl_text": "sft_text.jsonl",
            "image_folder": "images",
        }
        if dataset in shapes:
            return self._shapes_files() / shapes[dataset]
        if dataset == "image_conversations":
            text_only = str(options.path).endswith(".jsonl")
            return self._shapes_files() / ("sft_text_conversations.jsonl" if text_only else "sft_conversations.json")
        from images.janus.sft_data import SHARD_PATTERNS

        if dataset in SHARD_PATTERNS:
            return self._shapes_files() / SHARD_PATTERNS[dataset]
        if dataset == "pointcloud_folder":
            assert options.get("layout", "modelnet") == "modelnet", "add a tiny ShapeNet folder for layout: shapenet"
            return self._once("modelnet", self._modelnet)
        if dataset == "eegmmi_folder":
            return self._eegmmi(list(options.get("runs", [4])))
        raise AssertionError(f"data set {dataset!r} reads options.path: add a tiny file for it to TinyData.path_for")


class TinyRuns:
    """One tiny training run per shipped recipe, each made once; a run that starts from
    another shipped recipe's output makes that run first."""

    def __init__(self, root: Path, plugins: PluginManager) -> None:
        self.root = root
        self.plugins = plugins
        self.data = TinyData(root / "data")
        self.results: dict[str, TrainResult] = {}
        self.producers = {load_recipe(path).output_dir: _name(path) for path in shipped_recipes()}

    def recipe_file(self, name: str) -> Path:
        """The file users would train: the shipped recipe, or an overlay on its full recipe."""
        if name not in OVERLAYS:
            return RECIPES / name
        layered = self.root / "layered" / name.replace("/", "__")
        layered.parent.mkdir(parents=True, exist_ok=True)
        layered.write_text(yaml.safe_dump({"base": [str(RECIPES / OVERLAYS[name]), str(RECIPES / name)]}))
        return layered

    def run(self, name: str) -> TrainResult:
        """Train recipe `name` (relative to recipes/) for one tiny step."""
        if name not in self.results:
            path = self.recipe_file(name)
            recipe = load_recipe(path, self.overrides(name, load_recipe(path)), self.plugins)
            self.results[name] = train(recipe, self.plugins)
        return self.results[name]

    def produced(self, value: str) -> str | None:
        """The tiny run's checkpoint when `value` lies in a shipped recipe's output_dir."""
        for output_dir, producer in self.producers.items():
            if value == output_dir or value.startswith(output_dir.rstrip("/") + "/"):
                return str(self.run(producer).checkpoint)
        return None

    def overrides(self, name: str, recipe: DictConfig) -> list[str]:
        """`key=value` overrides that make `recipe` tiny, keeping what it trains and on what."""
        items = [
            f"output_dir={self.root / 'runs' / name.removesuffix('.yaml').replace('/', '__')}",
            "trainer.max_steps=1",
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "trainer.strategy=auto",
            "trainer.devices=1",
            "trainer.num_nodes=1",
            "trainer.accumulate_grad_batches=1",
            "trainer.log_every_n_steps=1",
            "trainer.progress_bar=false",
            "data.batch_size=2",
            f"data.max_length={min(recipe.data.max_length, MAX_LENGTH)}",
            "data.num_workers=0",
            "backbone.path=null",
            "backbone.dtype=float32",  # the weights of init_from, as 32-true trains them
            "tokenizer.train.num_sentences=200",
            *(f"backbone.config.{key}={value}" for key, value in TINY_BACKBONE["config"].items()),
        ]
        if "vocab_size" in recipe.backbone.config:
            items.append(f"backbone.config.vocab_size={TINY_VOCAB}")
        if recipe.data.val_samples:
            items += ["data.val_samples=2", "trainer.val_every_n_steps=1"]
        if recipe.init_from:
            checkpoint = self.produced(recipe.init_from)
            assert checkpoint, f"{name}: init_from {recipe.init_from} is no shipped recipe's output_dir"
            items.append(f"init_from={checkpoint}")
        if recipe.tokenizer.path:
            items.append(f"tokenizer.path={self.data.tokenizer()}")
        items += self._modality_overrides(recipe)
        items += self._data_overrides(recipe)
        return items

    def _modality_overrides(self, recipe: DictConfig) -> list[str]:
        items = []
        for modality, options in recipe.modalities.items():
            assert modality in TINY_MODALITIES, f"add tiny sizes of modality {modality!r} to TINY_MODALITIES"
            items += [f"modalities.{modality}.{key}={value}" for key, value in TINY_MODALITIES[modality].items()]
            for key in self.plugins.modality(modality).weight_paths:
                value = (options or {}).get(key)
                if value:  # a shipped run's output (a trained VQ tokenizer) or pretrained weights
                    items.append(f"modalities.{modality}.{key}={self.produced(value) or 'null'}")
        return items

    def _data_overrides(self, recipe: DictConfig) -> list[str]:
        items = []
        for index, source in enumerate(recipe.data.sources):
            prefix = f"data.sources.{index}.options"
            if "path" in source.options:
                path = self.data.path_for(source.dataset, source.options)
                items.append(f"{prefix}.path={path}")
                if "image_root" in source.options:  # the tiny files name their images relative to their folder
                    items.append(f"{prefix}.image_root={path.parent}")
            items += [f"{prefix}.{key}={value}" for key, value in SMALL_DATA.items() if key in source.options]
        return items


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> TinyRuns:
    return TinyRuns(tmp_path_factory.mktemp("shipped"), builtin_plugin_manager())


@pytest.mark.parametrize("path", shipped_recipes(), ids=_name)
def test_every_shipped_recipe_loads_hermetically(path):
    recipe = load_recipe(path, plugins=builtin_plugin_manager())
    assert recipe.description, f"{path} needs a one-line description for `modal-core recipes`"


def test_every_shipped_recipe_is_trained_here():
    """A recipe without data is trained through the recipes built on it, or is an overlay."""
    trained = set(trained_recipes())
    bases_of_trained = set().union(*(_ancestors(RECIPES / name) for name in trained))
    untested = [_name(path) for path in shipped_recipes() if _name(path) not in trained and path not in bases_of_trained]
    assert not untested, f"shipped recipes no tiny run covers (give them data, or list an overlay in OVERLAYS): {untested}"
    assert set(OVERLAYS) <= {_name(path) for path in shipped_recipes()}


@pytest.mark.slow
@pytest.mark.parametrize("name", trained_recipes())
def test_every_shipped_recipe_trains_one_tiny_step(name, tiny_runs):
    result = tiny_runs.run(name)
    assert any(result.checkpoint.glob("*.safetensors")), f"{name}: no checkpoint in {result.checkpoint}"
    losses = [row["train/loss"] for row in read_history(result.history) if "train/loss" in row]
    assert len(losses) == 1 and math.isfinite(losses[0]), f"{name}: train/loss of the step: {losses}"
