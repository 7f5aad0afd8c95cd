"""`modal-core ablate` end to end on one tiny arm: its dependencies are trained first and
wired in, its scores are those of its checkpoint, and a second run trains nothing."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import TINY_BACKBONE

from modal_core import recipes
from modal_core.config.loader import load_recipe
from modal_core.generation.pipeline import Pipeline
from modal_core_images.ablation import Ablation
from modal_core_images.evaluation.shapes_eval import evaluate_understanding

SHIPPED = recipes.shipped_dir()
TINY_VQ = {"codebook_size": 64, "base_channels": 32, "latent_channels": 32, "num_res_blocks": 1}
SMALL_TEXT = {"num_sentences": 200}


def _write(path, recipe: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))


def _tiny_folder(folder) -> None:
    """The shipped shared-VQ arm, and tiny stand-ins (in deps/) for the text LM and VQ runs it starts from."""
    steps = {"max_steps": 2, "checkpoint_every_n_steps": 0, "val_every_n_steps": 0, "log_every_n_steps": 1}
    _write(
        folder / "deps" / "text.yaml",
        {
            "base": str(SHIPPED / "quickstart" / "text.yaml"),
            "output_dir": "runs/tiny/text",
            "backbone": TINY_BACKBONE,
            "tokenizer": {"train": {"num_sentences": 300, "vocab_size": 300}},
            "data": {"sources": [{"dataset": "shapes_text", "options": SMALL_TEXT}], "batch_size": 4, "max_length": 48},
            "trainer": steps,
        },
    )
    _write(
        folder / "deps" / "vq.yaml",
        {
            "base": str(SHIPPED / "quickstart" / "vq.yaml"),
            "output_dir": "runs/tiny/vq",
            "modalities": {"vq_generation": TINY_VQ},
            "data": {
                "sources": [{"dataset": "shapes", "options": {"task": "image", "size": 32, "image_size": 32, "grid": 8}}],
                "batch_size": 4,
                "val_samples": 0,
            },
            "trainer": steps,
        },
    )
    arm = yaml.safe_load((SHIPPED / "ablation" / "shared-vq.yaml").read_text())
    for source in arm["data"]["sources"]:
        source["options"] = {**source["options"], "size": 32} if source["dataset"] == "shapes" else SMALL_TEXT
    _write(
        folder / "shared-vq.yaml",
        {
            **arm,
            "base": [str(SHIPPED / "ablation" / "parts" / "base.yaml"), str(SHIPPED / "ablation" / "parts" / "shared.yaml")],
            "init_from": "runs/tiny/text/checkpoints/last",
            "backbone": TINY_BACKBONE,
            "modalities": {"vq_generation": {**TINY_VQ, "tokenizer_path": "runs/tiny/vq/checkpoints/last"}},
            "trainer": steps,
        },
    )


@pytest.mark.slow
def test_ablate_trains_dependencies_first_and_scores_the_arm(tmp_path, image_plugins, capsys):
    _tiny_folder(tmp_path / "arms")
    out = tmp_path / "out"

    def ablation() -> Ablation:
        return Ablation(tmp_path / "arms", out, image_plugins, ("data.batch_size=3",), eval_scale=0.05, progress_bar=False)

    results = ablation().run((0,))
    arm = out / "seed0" / "shared-vq"
    saved = load_recipe(arm / "recipe.yaml")
    assert saved.init_from == str(out / "seed0" / "deps" / "text" / "checkpoints" / "last")
    tokenizer = str(out / "seed0" / "deps" / "vq" / "checkpoints" / "last")
    assert saved.modalities.vq_generation.tokenizer_path == tokenizer == saved.modalities.vq_understanding.tokenizer_path
    assert saved.data.batch_size == 3  # the arms' override
    assert load_recipe(out / "seed0" / "deps" / "text" / "recipe.yaml").data.batch_size == 4  # not the dependency's

    (result,) = results
    expected = evaluate_understanding(Pipeline.load(arm, plugins=image_plugins), 32, grid=8, count=20).accuracy
    assert result.arm == "shared-vq" and result.understanding_accuracy == expected
    assert result.generation_accuracy is not None and result.two_object_accuracy is not None
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"seed0/deps/text", "seed0/deps/vq", "seed0/shared-vq"}
    assert result.seconds == timings["seed0/shared-vq"]
    table = (out / "ablation.md").read_text()
    assert table.splitlines()[2].startswith(f"| shared-vq | {expected:.3f} | ") and "| seed0/deps/vq |" in table
    assert (out / "ablation.png").is_file()

    capsys.readouterr()
    assert ablation().run((0,)) == results  # nothing trained again: the same checkpoints, the same scores
    assert capsys.readouterr().out.count("already trained") == 3
