"""Generation settings outside their meaningful ranges are refused before any compute."""

from __future__ import annotations

import pytest
from test_model import assembled  # noqa: F401  (fixture)

from modal_core.data.chat import caption_to_image, question_answer
from modal_core.errors import ModelInputError
from modal_core.generation.decoding import generate_codes, generate_text

IMAGE_CASES = {
    "negative temperature": ({"temperature": -0.5}, "temperature must be a number in"),
    "huge temperature": ({"temperature": 50.0}, "temperature must be a number in"),
    "NaN temperature": ({"temperature": float("nan")}, "temperature must be a number in"),
    "temperature as text": ({"temperature": "hot"}, "temperature must be a number in"),
    "negative cfg": ({"cfg_scale": -1.0}, "cfg scale must be a number in"),
    "huge cfg": ({"cfg_scale": 1e4}, "cfg scale must be a number in"),
    "infinite cfg": ({"cfg_scale": float("inf")}, "cfg scale must be a number in"),
    "top_k zero": ({"top_k": 0}, "top_k must be >= 1"),
    "top_p zero": ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    "top_p above one": ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    "no images": ({"images_per_prompt": 0}, "images_per_prompt >= 1"),
    "more codes than the context": ({"num_positions": 500}, "exceeds the model's context of 128 positions"),
}


@pytest.mark.parametrize("case", IMAGE_CASES, ids=list(IMAGE_CASES))
def test_image_generation_settings_are_validated(assembled, case):  # noqa: F811
    built, _, collator = assembled
    settings, message = IMAGE_CASES[case]
    arguments = {"num_positions": 4, **settings}
    with pytest.raises(ModelInputError, match=message):
        generate_codes(built.model, collator, [caption_to_image("a red circle", None, "toy_codes")], "toy_codes", **arguments)


TEXT_CASES = {
    "no new tokens": ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    "answer longer than the context": ({"max_new_tokens": 400}, "exceeds the model's context of 128 positions"),
    "negative temperature": ({"temperature": -1.0}, "temperature must be a number in"),
}


@pytest.mark.parametrize("case", TEXT_CASES, ids=list(TEXT_CASES))
def test_answer_settings_are_validated(assembled, case):  # noqa: F811
    built, _, collator = assembled
    settings, message = TEXT_CASES[case]
    prompt = question_answer("what is it", None, [])
    with pytest.raises(ModelInputError, match=message):
        generate_text(built.model, collator, [prompt], **settings)
