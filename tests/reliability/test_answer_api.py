"""`Pipeline.answer` refuses what it cannot use by name, and lines up media with
questions: a list gives one item per question, anything else is shared by all."""

from __future__ import annotations

import pytest
from conftest import tiny_image_recipe, with_image_plugins, write_recipe
from PIL import Image

import modal_core
from modal_core.config.loader import load_recipe
from modal_core.errors import ModelInputError
from modal_core.plugins import PluginManager
from modal_core.training.run import train


@pytest.fixture(scope="module")
def model_and_image(tmp_path_factory):
    folder = tmp_path_factory.mktemp("answer-api")
    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    recipe = load_recipe(write_recipe(folder / "r.yaml", tiny_image_recipe(folder / "run")), plugins=plugins)
    checkpoint = train(recipe, plugins).checkpoint
    image = folder / "shape.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    return modal_core.load(checkpoint, plugins=plugins), image


def test_the_same_image_for_a_list_of_questions_is_shared(model_and_image):
    model, image = model_and_image
    both = model.answer(["what colour is it?", "what shape is it?"], image=str(image))
    assert both == [model.answer("what colour is it?", image=str(image)), model.answer("what shape is it?", image=str(image))]


def test_one_image_object_for_a_list_of_questions_is_shared_not_iterated(model_and_image):
    model, image = model_and_image
    picture = Image.open(image).convert("RGB")  # iterable, like an array: still one item
    assert model.answer(["a?", "b?"], image=picture) == [model.answer("a?", image=picture), model.answer("b?", image=picture)]


@pytest.mark.parametrize(
    ("question", "media", "message"),
    [
        (["a?", "b?"], {"image": ["{image}"]}, r"image_understanding: 1 item\(s\) for 2 question\(s\); give one per question"),
        (None, {}, "question: expected a string or a list of strings, got NoneType"),
        ("", {}, "prompts and questions must be non-empty strings"),
        ([], {}, "no prompt or question given"),
        (
            "q?",
            {"points": "x.ply"},
            r"no input modality of this model takes the keyword points=; its input modalities are \['image",
        ),
    ],
)
def test_what_answer_cannot_use_is_refused_by_name(model_and_image, question, media, message):
    model, image = model_and_image
    keywords = {
        key: [str(image) if v == "{image}" else v for v in value] if isinstance(value, list) else value for key, value in media.items()
    }
    with pytest.raises(ModelInputError, match=message):
        model.answer(question, **keywords)


def test_a_modality_the_model_lacks_is_named_with_those_it_has(model_and_image):
    model, _ = model_and_image
    with pytest.raises(ModelInputError, match=r"this model has no input modality 'eeg'; it has \['image_understanding'\]"):
        model.answer("q?", media={"eeg": "x.fif"})


def test_understand_refuses_a_flag_of_a_modality_the_checkpoint_lacks(model_and_image, tmp_path, capsys):
    import toy_plugin

    from modal_core.cli import main

    _, image = model_and_image
    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    plugins.register(toy_plugin, name="toy")  # a second installed input modality, flag --toy
    run = image.parent / "run"
    code = main(["understand", str(run), "--question", "what is it?", "--image", str(image), "--toy", "x.npy"], plugins=plugins)
    assert code == 1
    assert capsys.readouterr().err.strip() == "error: --toy: this checkpoint has no such input; it takes --image (image_understanding)"
