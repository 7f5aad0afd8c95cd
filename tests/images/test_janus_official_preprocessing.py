"""`preprocess: official` is bit-exact to deepseek-ai/Janus's `VLMImageProcessor` on images
of odd sizes and aspect ratios, with alpha, palettes, 16 bits, EXIF rotation and CMYK;
the expected tensors were produced once by the reference itself (see the fixture's
README.md; it is not imported here). `transformers` mode differs from it on 7 of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modal_core.errors import RecipeError
from modal_core_image_understanding.plugin import IMAGE_UNDERSTANDING, ImageUnderstandingOptions
from modal_core_images.processing import ImageProcessor

FIXTURE = Path(__file__).parent / "fixtures" / "janus_preprocessing"
EXPECTED = np.load(FIXTURE / "expected.npz")
SIZE = 24  # the reference was run with image_size=24, mean = std = 0.5
DIFFERENT_IN_TRANSFORMERS_MODE = {
    "rgb_200x199.png",  # shorter side 23.88: floored to 23, rounded to 24
    "rgb_63x64.png",
    "rgba_41x23.png",  # alpha dropped, not composited on white
    "la_19x33.png",
    "p_transparent_29x21.png",
    "gray16_27x45.png",  # clipped at 255, not rescaled
    "exif_rotated_30x18.jpg",  # not rotated upright
}


@pytest.mark.parametrize("name", EXPECTED.files)
def test_official_mode_is_bit_exact_to_vlm_image_processor(name):
    processor = ImageProcessor(size=SIZE, preprocess="official")
    expected = EXPECTED[name]
    assert processor(FIXTURE / name).numpy().tobytes() == expected.tobytes()  # from a file
    assert processor((FIXTURE / name).read_bytes()).numpy().tobytes() == expected.tobytes()  # from bytes
    with Image.open(FIXTURE / name) as image:
        assert processor(image).numpy().tobytes() == expected.tobytes()  # from an opened image


def test_transformers_mode_differs_where_the_two_processors_do():
    processor = ImageProcessor(size=SIZE, preprocess="transformers")
    differing = {name for name in EXPECTED.files if not np.array_equal(processor(FIXTURE / name).numpy(), EXPECTED[name])}
    assert differing == DIFFERENT_IN_TRANSFORMERS_MODE


def test_the_recipe_option_builds_the_processor_and_refuses_what_cannot_work():
    options = ImageUnderstandingOptions(image_size=SIZE, preprocess="official")
    processor = IMAGE_UNDERSTANDING.build_processor(options)
    assert processor.preprocess == "official" and "shorter side floored" in processor.describe()
    with pytest.raises(RecipeError, match="preprocess: expected one of modal-core, official, transformers, got 'janus'"):
        IMAGE_UNDERSTANDING.build_processor(ImageUnderstandingOptions(preprocess="janus"))
    with pytest.raises(RecipeError, match="preprocess official always pads; pad_to_square must be true"):
        IMAGE_UNDERSTANDING.build_processor(ImageUnderstandingOptions(preprocess="official", pad_to_square=False))
