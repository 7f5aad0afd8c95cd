"""`recipes/quickstart/hires.yaml` shrunk to tiny sizes: a short tiled run that learns,
then `modal-core understand` and the HTTP API on images of any size, saying how many
tiles they used."""

from __future__ import annotations

import pytest
from conftest import TINY_BACKBONE, with_image_plugins, write_recipe

from modal_core.checkpoints.run_folder import read_history
from modal_core.cli import main
from modal_core.config.loader import load_recipe
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import PluginManager
from modal_core.recipes import find
from modal_core.serve.inference import QuestionJob, understanding_runner
from modal_core.training.run import train
from modal_core_images.evaluation.hires_eval import heldout_accuracy
from modal_core_images.hires_shapes import COLOUR_QUESTION, hires_scene, render_hires

UNDERSTANDING = "image_understanding"


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hires")
    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    recipe = {
        "base": str(find("quickstart/hires")),
        "output_dir": str(folder / "run"),
        "tokenizer": {"train": {"num_sentences": 300, "vocab_size": 300}},
        "backbone": TINY_BACKBONE,
        "modalities": {UNDERSTANDING: {"width": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}},
        "data": {"batch_size": 8},
        "optim": {"warmup_steps": 2},
        "trainer": {"max_steps": 60, "progress_bar": False, "log_every_n_steps": 10},
    }
    result = train(load_recipe(write_recipe(folder / "tiny.yaml", recipe), plugins=plugins), plugins)
    return plugins, result, folder


@pytest.mark.slow
def test_a_short_tiled_run_learns_the_answer_format(tiled_run):
    _, result, _ = tiled_run
    losses = [row["train/loss"] for row in read_history(result.history) if "train/loss" in row]
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0]  # from a uniform guess over the vocabulary towards the answer words


@pytest.mark.slow
def test_understand_takes_any_image_size_and_says_how_many_tiles(tiled_run, capsys):
    plugins, result, folder = tiled_run
    path = folder / "wide.png"
    render_hires(hires_scene(0, 0, "heldout")).resize((48, 16)).save(path)
    assert (
        main(
            ["understand", str(result.checkpoint), "--image", str(path), "--question", COLOUR_QUESTION, "--max-new-tokens", "3"],
            plugins=plugins,
        )
        == 0
    )
    printed = capsys.readouterr()
    pipeline = Pipeline.load(result.checkpoint, plugins=plugins)
    assert printed.out.strip() == pipeline.answer(COLOUR_QUESTION, image=str(path), max_new_tokens=3)
    assert printed.err.strip().endswith(f"{UNDERSTANDING}: 4 tiles (1x3 grid + thumbnail)")
    job = QuestionJob(COLOUR_QUESTION, {UNDERSTANDING: path}, max_new_tokens=3)
    (answered,) = understanding_runner(pipeline)([job])
    assert answered.layouts == {UNDERSTANDING: "4 tiles (1x3 grid + thumbnail)"} and answered.answer == printed.out.strip()
    image = render_hires(hires_scene(1, 0, "heldout"))
    sizes = {
        (16, 16): "1 tile (1x1 grid: the thumbnail alone)",
        (33, 61): "3 tiles (2x1 grid + thumbnail)",
        (48, 16): "4 tiles (1x3 grid + thumbnail)",
    }
    for size, tiles in sizes.items():
        assert pipeline.input_layouts({UNDERSTANDING: image.resize(size)}) == {UNDERSTANDING: tiles}
    # Mixed grids decoded in one left-padded batch give each image's answer alone.
    images = [image.resize(size) for size in sizes]
    alone = [pipeline.answer(COLOUR_QUESTION, image=item, max_new_tokens=3) for item in images]
    assert pipeline.answer([COLOUR_QUESTION] * 3, image=images, max_new_tokens=3) == alone


@pytest.mark.slow
def test_heldout_accuracy_scores_exact_answers(tiled_run):
    plugins, result, _ = tiled_run
    pipeline = Pipeline.load(result.checkpoint, plugins=plugins)
    scored = heldout_accuracy(pipeline, count=4, batch_size=3)
    asked = [(q, a) for i in range(4) for q, a in hires_scene(i, 0, "heldout").questions()]
    answers = [
        pipeline.answer(q, image=render_hires(hires_scene(i // 2, 0, "heldout")), max_new_tokens=4) for i, (q, _) in enumerate(asked)
    ]
    hits = [answer == expected for answer, (_, expected) in zip(answers, asked)]
    assert scored.total == 8 and scored.accuracy == sum(hits) / 8
