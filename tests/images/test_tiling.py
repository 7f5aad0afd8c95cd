"""Dynamic high resolution: grid choice against hand-computed cases, the tiles and their
layout, and mixed grids in one batch through the collator and the unified model."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf
from PIL import Image

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.schema import Recipe
from modal_core.data.chat import question_answer
from modal_core.data.collator import Collator
from modal_core.data.segments import Media
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.errors import DataError, RecipeError
from modal_core_images.hires_shapes import hires_scene, render_hires
from modal_core_images.processing import ImageProcessor
from modal_core_images.tiling import ROW_END, TILE_SEPARATOR, TiledImageProcessor, allowed_grids, choose_grid, tile_layout

UNDERSTANDING = "image_understanding"
TILED = {
    "image_size": 32,
    "patch_size": 8,
    "width": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "tiling": {"enabled": True, "max_tiles": 4},
}


def test_allowed_grids_are_every_grid_up_to_max_tiles_fewest_first():
    assert allowed_grids(4) == [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (2, 2), (4, 1)]
    assert allowed_grids(3, min_tiles=2) == [(1, 2), (2, 1), (1, 3), (3, 1)]
    with pytest.raises(ValueError, match="min_tiles 3, max_tiles 2"):
        allowed_grids(2, min_tiles=3)


@pytest.mark.parametrize(
    ("size", "max_tiles", "expected"),
    [
        ((96, 32), 4, (1, 3)),  # aspect 3: the 1 x 3 grid exactly
        ((32, 96), 4, (3, 1)),
        ((96, 32), 2, (1, 2)),  # 1 x 3 not allowed: 1 x 2 (aspect 2) is closest to 3
        ((64, 64), 4, (2, 2)),  # ties with 1 x 1; 64 * 64 > half of 2 x 2 tiles of 32 * 32 pixels
        ((40, 40), 4, (1, 1)),  # ties with 2 x 2; 40 * 40 < half of 4 * 32 * 32: stays one tile
        ((100, 40), 4, (1, 3)),  # aspect 2.5, as far from 2 as from 3; large enough for the bigger grid
        ((50, 20), 4, (1, 2)),  # aspect 2.5 too, but 50 * 20 is under half of 3 * 32 * 32
        ((300, 20), 4, (1, 4)),  # aspect 15: the widest grid
    ],
)
def test_grid_is_the_closest_aspect_ratio_with_ties_going_to_more_tiles_for_large_images(size, max_tiles, expected):
    assert choose_grid(*size, allowed_grids(max_tiles), tile_size=32) == expected


def test_layout_puts_a_separator_between_tiles_and_a_row_end_after_each_row():
    s, e = TILE_SEPARATOR, ROW_END
    assert tile_layout((1, 1), 16) == (16,)
    assert tile_layout((1, 3), 16) == (16, e, 16, s, 16, s, 16, e)
    assert tile_layout((2, 2), 4) == (4, e, 4, s, 4, e, 4, s, 4, e)
    assert tile_layout((3, 1), 4) == (4, e, 4, e, 4, e, 4, e)


def test_tiles_are_the_image_cut_on_its_grid_after_the_thumbnail():
    base = ImageProcessor(size=32)
    processor = TiledImageProcessor(base, tuple(allowed_grids(4)), per_tile=16)
    image = Image.effect_noise((96, 32), 60).convert("RGB")  # 96 x 32 is the 1 x 3 canvas already: no resampling
    item = processor(image)
    assert item.payload.shape == (4, 3, 32, 32)
    torch.testing.assert_close(item.payload[0], base(image))  # the thumbnail is the untiled image
    for index in range(3):
        torch.testing.assert_close(item.payload[1 + index], base(image.crop((32 * index, 0, 32 * index + 32, 32))))
    assert item.num_features == 64 and item.description == "4 tiles (1x3 grid + thumbnail)"
    square = processor(Image.new("RGB", (32, 32), (10, 200, 30)))
    assert square.payload.shape == (1, 3, 32, 32) and square.layout == (16,)


@pytest.fixture
def tiled(image_plugins):
    recipe = OmegaConf.merge(
        OmegaConf.structured(Recipe), {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": {UNDERSTANDING: TILED}}
    )
    specials = special_tokens_of(recipe, image_plugins)
    assert TILE_SEPARATOR in specials and ROW_END in specials
    tokenizer = train_tokenizer(["what colour is the small triangle? red", "how many crosses are there? two"] * 20, 300, specials)
    torch.manual_seed(0)
    built = assemble(recipe, image_plugins, tokenizer)
    return built, Collator(tokenizer, built.modalities, max_length=128)


def test_untiled_recipes_add_no_separator_tokens(image_plugins):
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), {"output_dir": "unused", "modalities": {UNDERSTANDING: {}}})
    assert TILE_SEPARATOR not in special_tokens_of(recipe, image_plugins)


def test_mixed_grids_in_one_batch_fill_exactly_their_placeholders_in_order(tiled):
    built, collator = tiled
    images = [Image.effect_noise(size, 60).convert("RGB") for size in ((96, 32), (32, 32), (64, 64), (32, 96))]
    samples = [question_answer("what colour is the small triangle?", "red", [Media(UNDERSTANDING, image)]) for image in images]
    batch = collator(samples)
    media = batch.media[UNDERSTANDING]
    tiles = [4, 1, 5, 4]  # 1 x 3 + thumbnail, 1 x 1, 2 x 2 + thumbnail, 3 x 1 + thumbnail
    assert media.payload.shape == (sum(tiles), 3, 32, 32)
    assert media.mask.sum(dim=1).tolist() == [16 * n for n in tiles]
    separator, row_end = (collator.token_id(t) for t in (TILE_SEPARATOR, ROW_END))
    begin = collator.token_id("<begin_of_image>")
    for row, (image, n) in enumerate(zip(images, tiles)):
        ids = batch.input_ids[row].tolist()
        start = ids.index(begin) + 1
        expected = []
        for part in built.modalities[UNDERSTANDING].processor(image).layout:
            expected += [separator] if part == TILE_SEPARATOR else [row_end] if part == ROW_END else [-1] * part
        laid_out = ids[start : start + len(expected)]
        assert [(-1 if media.mask[row, start + k] else token) for k, token in enumerate(laid_out)] == expected

    model = built.model
    embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
    features = model.adapters[UNDERSTANDING](model.encoders[UNDERSTANDING].encode(media.payload))  # (13, 16, hidden)
    torch.testing.assert_close(embeds[media.mask], features.reshape(-1, features.shape[-1]))
    # The third image's second tile (its top-left) lands right after its thumbnail's row end.
    third = batch.input_ids[2].tolist()
    first_tile = third.index(row_end) + 1
    torch.testing.assert_close(embeds[2, first_tile : first_tile + 16], features[4 + 1 + 1])
    output = model(**batch.model_inputs())
    output.loss.backward()
    assert model.encoders[UNDERSTANDING].vision.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_a_batch_mixing_tiled_items_and_ready_tensors_is_refused(tiled):
    _, collator = tiled
    samples = [
        question_answer("what colour is the small triangle?", "red", [Media(UNDERSTANDING, Image.new("RGB", (96, 32)))]),
        question_answer("what colour is the small triangle?", "red", [Media(UNDERSTANDING, torch.zeros(3, 32, 32))]),
    ]
    with pytest.raises(DataError, match="mixes items of varying size"):
        collator(samples)


def test_plan_line_counts_the_tiles_and_separators(image_plugins):
    from modal_core.config.loader import modality_options
    from modal_core.scale.plan import item_positions

    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), {"output_dir": "unused", "modalities": {UNDERSTANDING: TILED}})
    spec = image_plugins.modality(UNDERSTANDING)
    options = modality_options(recipe, image_plugins, UNDERSTANDING)
    # Most: 2 x 2 + thumbnail = 80 features, 2 separators, 3 row ends.
    assert spec.num_positions(options) == 80
    assert spec.positions_summary(options).startswith("16 to 85 positions per image")
    line = item_positions(recipe, image_plugins)[UNDERSTANDING]
    assert line.startswith("16 to 85 positions per image") and line.endswith("(69 more than untiled); + 2 begin/end token(s)")


def test_bad_tiling_options_are_named(image_plugins):
    from modal_core.config.loader import modality_options

    recipe = OmegaConf.merge(
        OmegaConf.structured(Recipe), {"output_dir": "unused", "modalities": {UNDERSTANDING: {"tiling": {"enabled": True, "max_tiles": 0}}}}
    )
    spec = image_plugins.modality(UNDERSTANDING)
    with pytest.raises(RecipeError, match="modalities.image_understanding.tiling: tiling needs 1 <= min_tiles <= max_tiles"):
        spec.build_processor(modality_options(recipe, image_plugins, UNDERSTANDING))


def test_hires_scenes_are_reproducible_and_answer_both_questions():
    scene = hires_scene(3, 0, "heldout")
    assert scene == hires_scene(3, 0, "heldout") and scene != hires_scene(3, 0, "train")
    assert hires_scene(3, 0, "heldout", cell=16).width == 2 * scene.width
    for index in range(50):
        scene = hires_scene(index, 0, "train")
        assert render_hires(scene).size == (scene.width, scene.height)
        assert len({o.colour for o in scene.objects}) == len(scene.objects)
        (_, colour), (_, count) = scene.questions()
        assert [o.colour for o in scene.objects if o.shape == "triangle"] == [colour]
        assert count == ("one", "two", "three")[sum(o.shape == "cross" for o in scene.objects) - 1]


def test_a_hires_sample_asks_both_questions_about_one_image(image_plugins):
    sample = image_plugins.datasets()["hires_shapes"]({"size": 4}, 0, "train")[1]
    media = [s for s in sample.segments if isinstance(s, Media)]
    assert len(media) == 1 and media[0].payload.size in ((48, 16), (16, 48), (32, 16))
    supervised = [s.text for s in sample.segments if getattr(s, "supervised", False)]
    scene = hires_scene(1, 0, "train")
    assert sorted(supervised) == sorted(f" {answer}<|end_of_sentence|>" for _, answer in scene.questions())
