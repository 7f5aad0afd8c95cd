"""A checkpoint draws with its recipe's `generation:` settings wherever a call does not
say (`Pipeline.generate`, `modal-core generate`, the eval suites), and every setting can
be overridden, a filter turned off with 0."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import spy_on_drawing
from PIL import Image

from modal_core.cli import main
from modal_core.generation.pipeline import Pipeline
from modal_core.generation.settings import GenerationSettings
from modal_core_images.evaluation.generation_suites import evaluate_shapes_geneval

from .conftest import MODEL_GENERATION, image_plugins

PROMPTS = ["a red circle", "a blue square left of a green triangle"]
JANUS = {"cfg": 5.0, "cfg_schedule": "constant", "cfg_plausibility": 0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
"""Janus's guidance and plain sampling, every default of the model overridden."""


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint) -> Pipeline:
    return Pipeline.load(tiny_checkpoint, plugins=image_plugins())


def _pixels(images: list[list[Image.Image]]) -> list[bytes]:
    return [image.tobytes() for row in images for image in row]


def test_the_checkpoint_carries_its_recipes_generation_settings(pipeline):
    assert pipeline.generation == GenerationSettings(**MODEL_GENERATION)
    assert pipeline.generation.cfg == 5.0 and pipeline.generation.temperature == 1.0  # the keys the recipe left out


def test_generate_draws_with_the_models_settings_unless_told(pipeline, monkeypatch):
    drawn = spy_on_drawing(monkeypatch)
    default = _pixels(pipeline.generate(PROMPTS, n=3, seed=4))
    assert drawn == [pipeline.generation]
    assert default == _pixels(pipeline.generate(PROMPTS, n=3, seed=4, **MODEL_GENERATION, cfg=5.0, temperature=1.0))
    pipeline.generate(PROMPTS, n=3, seed=4, **JANUS)
    assert drawn[-1] == GenerationSettings()  # every default overridden, the filters off
    pipeline.generate(PROMPTS, n=3, seed=4, cfg_plausibility=0, temperature=0.5)
    assert drawn[-1] == GenerationSettings(cfg_schedule="linear", temperature=0.5)  # one override keeps the other defaults


def test_modal_core_generate_uses_the_models_settings_and_its_flags_override_them(tiny_checkpoint, pipeline, tmp_path, monkeypatch):
    def pixels(out, *flags: str) -> list[bytes]:
        argv = ["generate", str(tiny_checkpoint), "--prompt", PROMPTS[0], "--n", "2", "--seed", "4", "--out", str(out), *flags]
        assert main(argv, plugins=image_plugins()) == 0
        return [np.asarray(Image.open(path).convert("RGB")).tobytes() for path in sorted(out.glob("*.png"))]

    drawn = spy_on_drawing(monkeypatch)
    assert pixels(tmp_path / "default") == _pixels(pipeline.generate(PROMPTS[0], n=2, seed=4))
    assert drawn == [pipeline.generation] * 2
    flags = ["--cfg", "3", "--cfg-schedule", "constant", "--cfg-plausibility", "0", "--temperature", "0.5", "--top-k", "7"]
    pixels(tmp_path / "overridden", *flags)
    assert drawn[-1] == GenerationSettings(cfg=3.0, temperature=0.5, top_k=7)


def test_a_suite_draws_and_records_the_models_settings(pipeline, tmp_path, monkeypatch):
    drawn = spy_on_drawing(monkeypatch)
    options = {"per_tag": 1, "n": 1, "limit": 3}
    card = evaluate_shapes_geneval(pipeline, options, tmp_path / "model")["protocol"]["decoding"]
    assert (card["cfg"], card["cfg_schedule"], card["cfg_plausibility"]) == (5.0, "linear", 0.2)
    assert drawn == [pipeline.generation] * 3
    overrides = {"cfg_plausibility": "0", "cfg_schedule": "constant", "cfg": "2", "top_p": "0.9"}
    card = evaluate_shapes_geneval(pipeline, options | overrides, tmp_path / "off")["protocol"]["decoding"]
    assert (card["cfg"], card["cfg_schedule"], card["cfg_plausibility"], card["top_p"]) == (2.0, "constant", None, 0.9)
    assert drawn[3:] == [GenerationSettings(cfg=2.0, top_p=0.9)] * 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"cfg_schedule": "cosine"}, "cfg schedule must be one of ('constant', 'linear')"),
        ({"cfg_plausibility": 1.5}, "cfg plausibility must be a number in (0, 1]"),
        ({"cfg": -1.0}, "cfg scale must be a number in [0, 100]"),
        ({"top_k": -2}, "top_k must be >= 1"),
    ],
)
def test_a_bad_override_is_refused_naming_the_setting(pipeline, override, message):
    from modal_core.errors import ModelInputError

    with pytest.raises(ModelInputError) as error:
        pipeline.generate(PROMPTS[0], n=1, **override)
    assert message in str(error.value)
