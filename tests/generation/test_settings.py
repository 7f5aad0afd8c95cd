"""`GenerationSettings`: a call's overrides over a model's defaults, the values that turn a
filter off, and the recipe section they come from."""

from __future__ import annotations

import dataclasses

import pytest

from modal_core.config.loader import load_recipe
from modal_core.config.schema import GenerationConfig
from modal_core.errors import ModelInputError, RecipeError
from modal_core.generation.settings import GUIDANCE_SCHEDULES, GenerationSettings

MODEL = GenerationSettings(cfg=4.0, cfg_schedule="linear", cfg_plausibility=0.1, temperature=0.9, top_k=8, top_p=0.95)


def test_none_keeps_the_models_setting_and_a_value_replaces_it():
    assert MODEL.with_overrides() == MODEL
    assert MODEL.with_overrides(cfg=None, temperature=None, top_k=None) == MODEL
    assert MODEL.with_overrides(cfg=2.0, cfg_schedule="constant") == dataclasses.replace(MODEL, cfg=2.0, cfg_schedule="constant")


def test_zero_plausibility_zero_top_k_and_unit_top_p_turn_the_filters_off():
    off = MODEL.with_overrides(cfg_plausibility=0, top_k=0, top_p=1.0)
    assert (off.cfg_plausibility, off.top_k, off.top_p) == (None, None, None)
    assert (off.cfg, off.cfg_schedule, off.temperature) == (4.0, "linear", 0.9)


def test_unknown_and_meaningless_settings_are_refused():
    with pytest.raises(TypeError, match="unknown generation settings \\['guidance'\\]"):
        MODEL.with_overrides(guidance=3.0)
    with pytest.raises(ModelInputError, match="temperature must be a number in \\[0, 10\\]"):
        MODEL.with_overrides(temperature=11.0)
    with pytest.raises(ModelInputError, match="cfg schedule must be one of"):
        GenerationSettings.from_mapping({"cfg_schedule": "cosine"})


def test_the_recipe_section_has_the_settings_keys_defaults_and_choices():
    section = {field.name: field for field in dataclasses.fields(GenerationConfig)}
    assert {name: field.default for name, field in section.items()} == GenerationSettings().as_dict()
    assert section["cfg_schedule"].metadata["choices"] == GUIDANCE_SCHEDULES


def test_a_recipe_with_a_bad_generation_key_names_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("output_dir: out\ngeneration:\n  cfg_plausibility: 1.5\n")
    with pytest.raises(RecipeError, match="generation.cfg_plausibility: must be <= 1, got 1.5"):
        load_recipe(recipe)
    recipe.write_text("output_dir: out\ngeneration:\n  cfg_schedule: cosine\n")
    with pytest.raises(RecipeError, match="generation.cfg_schedule: 'cosine' is not allowed; expected one of constant, linear"):
        load_recipe(recipe)


def test_as_overrides_reproduces_the_settings_over_any_models_defaults():
    plain = GenerationSettings(cfg=3.0)
    assert MODEL.with_overrides(**plain.as_overrides()) == plain  # the model's filters turned off, not kept
    assert GenerationSettings().with_overrides(**MODEL.as_overrides()) == MODEL


def test_the_preference_schedule_has_the_same_choices():
    from modal_core.config.schema import PreferenceConfig

    schedule = next(field for field in dataclasses.fields(PreferenceConfig) if field.name == "cfg_schedule")
    assert schedule.metadata["choices"] == GUIDANCE_SCHEDULES
