"""Recipe loading: inheritance, overrides, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, tiny_text_recipe, write_recipe

from modal_core import recipes
from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "tiny.yaml", tiny_text_recipe(tmp_path / "run"))


def test_valid_recipe_loads_with_schema_defaults(recipe_file):
    recipe = load_recipe(recipe_file)
    assert recipe.trainer.max_steps == 8
    assert recipe.optim.schedule == "constant"  # schema default
    assert recipe.data.cfg_dropout == 0.1


def test_unknown_key_names_key_and_file(tmp_path):
    path = write_recipe(tmp_path / "typo.yaml", tiny_text_recipe(tmp_path, trainer={"max_stepz": 3}))
    with pytest.raises(RecipeError, match=r"typo\.yaml: unknown key 'trainer\.max_stepz'"):
        load_recipe(path)


def test_wrong_type_names_key_and_file(tmp_path):
    path = write_recipe(tmp_path / "bad.yaml", tiny_text_recipe(tmp_path, optim={"lr": "fast"}))
    with pytest.raises(RecipeError, match=r"bad\.yaml: key 'optim\.lr'.*fast"):
        load_recipe(path)


def test_missing_file():
    with pytest.raises(RecipeError, match="recipe file not found: .*nope.yaml"):
        load_recipe("nope.yaml")


def test_missing_base_file_names_it(tmp_path):
    path = write_recipe(tmp_path / "child.yaml", {"base": "parent.yaml"})
    with pytest.raises(RecipeError, match="recipe file not found: .*parent.yaml"):
        load_recipe(path)


def test_missing_required_value_names_key_and_file(tmp_path):
    recipe = tiny_text_recipe(tmp_path)
    del recipe["output_dir"]
    path = write_recipe(tmp_path / "noout.yaml", recipe)
    with pytest.raises(RecipeError, match=r"noout\.yaml: required key\(s\) output_dir"):
        load_recipe(path)


def test_bad_override_names_the_command_line(recipe_file):
    with pytest.raises(RecipeError, match="command-line overrides: unknown key 'trainer.nope'"):
        load_recipe(recipe_file, ["trainer.nope=1"])
    with pytest.raises(RecipeError, match="not of the form key=value"):
        load_recipe(recipe_file, ["trainer.max_steps"])


def test_override_precedence_base_file_command_line(tmp_path):
    write_recipe(tmp_path / "base.yaml", tiny_text_recipe(tmp_path, optim={"lr": 1.0, "warmup_steps": 7}, seed=5))
    child = write_recipe(tmp_path / "child.yaml", {"base": "base.yaml", "optim": {"lr": 2.0}, "description": "child"})
    recipe = load_recipe(child, ["optim.lr=3.0"])
    assert recipe.optim.lr == 3.0  # command line beats file
    assert load_recipe(child).optim.lr == 2.0  # file beats base
    assert recipe.optim.warmup_steps == 7 and recipe.seed == 5  # base fills the rest
    assert recipe.description == "child"


def test_inheritance_loop_is_an_error(tmp_path):
    write_recipe(tmp_path / "a.yaml", {"base": "b.yaml"})
    write_recipe(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(RecipeError, match="loops back"):
        load_recipe(tmp_path / "a.yaml")


def test_modality_options_are_validated_against_the_plugin_schema(tmp_path, toy_plugins):
    recipe = tiny_text_recipe(tmp_path, modalities={"toy_vector": {"positionz": 2}})
    path = write_recipe(tmp_path / "mod.yaml", recipe)
    with pytest.raises(RecipeError, match=r"mod\.yaml: modalities\.toy_vector: unknown key 'positionz'"):
        load_recipe(path, plugins=toy_plugins)
    recipe["modalities"] = {"sound": {}}
    with pytest.raises(RecipeError, match=r"no installed plugin provides modality 'sound'"):
        load_recipe(write_recipe(path, recipe), plugins=toy_plugins)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(path)


def test_the_checkout_recipes_folder_is_the_shipped_one():
    assert (REPO / "recipes").resolve() == recipes.shipped_dir().resolve()
    assert "quickstart/text.yaml" in recipes.names() and "janus/stage2.yaml" in recipes.names()


@pytest.mark.parametrize("name", ["quickstart/text", "quickstart/text.yaml", "recipes/quickstart/text.yaml"])
def test_find_takes_a_shipped_name_with_or_without_suffix(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: the name is what finds it
    assert recipes.find(name) == recipes.shipped_dir() / "quickstart" / "text.yaml"


def test_find_prefers_an_existing_file_to_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart").mkdir()
    write_recipe(tmp_path / "quickstart" / "text.yaml", tiny_text_recipe(tmp_path))
    assert recipes.find("quickstart/text.yaml") == Path("quickstart/text.yaml")
    assert recipes.find("quickstart/text") == recipes.shipped_dir() / "quickstart" / "text.yaml"  # no such file: the shipped one


def test_find_names_close_shipped_recipes_when_nothing_matches():
    with pytest.raises(
        RecipeError, match=r"recipe file not found: quickstart/txt is neither a file nor a shipped recipe; did you mean quickstart/text,"
    ):
        recipes.find("quickstart/txt")
    with pytest.raises(RecipeError, match=r"recipe file not found: nothing/like/it.yaml is neither .*\(`modal-core recipes` lists"):
        recipes.find("nothing/like/it.yaml")


def test_describe_lists_names_with_descriptions(tmp_path):
    write_recipe(tmp_path / "a.yaml", {"description": "first"})
    (tmp_path / "sub").mkdir()
    write_recipe(tmp_path / "sub" / "b.yaml", {})
    assert recipes.describe(tmp_path) == [("a.yaml", "first", None), ("sub/b.yaml", "", None)]


def test_override_can_index_into_a_list(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "output_dir: out\ndata:\n  sources:\n    - {dataset: shapes_text, options: {num_sentences: 10}}\n    - {dataset: jsonl_text}\n"
    )
    recipe = load_recipe(path, ["data.sources.1.options.path=corpus.jsonl", "data.sources.0.weight=2.5", "seed=3"])
    assert recipe.data.sources[1].options.path == "corpus.jsonl"
    assert recipe.data.sources[0].weight == 2.5 and recipe.data.sources[0].options.num_sentences == 10
    assert recipe.seed == 3
    with pytest.raises(RecipeError, match="data.sources has 2 item.s., so index 5 does not exist"):
        load_recipe(path, ["data.sources.5.weight=1"])
    with pytest.raises(RecipeError, match=r"unknown key .data.sources\[0\].wieght."):
        load_recipe(path, ["data.sources.0.wieght=1"])
    with pytest.raises(RecipeError, match="is not a list"):
        load_recipe(path, ["optim.0=1"])
