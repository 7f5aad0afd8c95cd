"""Choice fields and bounds are checked when a recipe loads, naming the key and what is allowed."""

from __future__ import annotations

import pytest
from conftest import tiny_text_recipe, write_recipe

from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.schedule=cosin", r"optim\.schedule: 'cosin' is not allowed; expected one of constant, cosine"),
        ("trainer.strategy=horovod", r"trainer\.strategy: 'horovod' is not allowed; expected one of auto, ddp, fsdp"),
        ("trainer.precision=8-bit", r"trainer\.precision: '8-bit' is not allowed"),
        ("trainer.fsdp_sharding=HALF", r"trainer\.fsdp_sharding: 'HALF' is not allowed"),
        ("trainer.monitor_mode=best", r"trainer\.monitor_mode: 'best' is not allowed; expected one of min, max"),
        ("data.on_bad_sample=ignore", r"data\.on_bad_sample: 'ignore' is not allowed; expected one of raise, skip"),
        ("backbone.dtype=float8", r"backbone\.dtype: 'float8' is not allowed"),
        ("trainer.accelerator=banana", r"trainer\.accelerator: 'banana' is not allowed"),
        ("trainer.max_steps=0", r"trainer\.max_steps: must be >= 1, got 0"),
        ("trainer.max_steps=-1", r"trainer\.max_steps: must be >= 1, got -1"),
        ("optim.lr=-1", r"optim\.lr: must be >= 0, got -1"),
        ("data.batch_size=0", r"data\.batch_size: must be >= 1, got 0"),
        ("data.num_workers=-1", r"data\.num_workers: must be >= 0, got -1"),
        ("data.cfg_dropout=1.5", r"data\.cfg_dropout: must be <= 1, got 1.5"),
        ("data.sources.0.weight=0", r"data\.sources\[0\]\.weight: must be > 0, got 0"),
        ("trainer.gradient_clip_val=0", r"trainer\.gradient_clip_val: must be > 0, got 0"),
        ("trainer.accumulate_grad_batches=0", r"trainer\.accumulate_grad_batches: must be >= 1, got 0"),
        ("trainer.keep_last=0", r"trainer\.keep_last: must be >= 1 or -1"),
        ("trainer.keep_best=-1", r"trainer\.keep_best: must be >= 0, got -1"),
        ("tokenizer.train.vocab_size=0", r"tokenizer\.train\.vocab_size: must be >= 1, got 0"),
    ],
)
def test_a_bad_value_fails_at_load_time_naming_the_key(tmp_path, override, message):
    path = write_recipe(tmp_path / "recipe.yaml", tiny_text_recipe(tmp_path / "run"))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, [override])


def test_values_in_range_and_null_optionals_load(tmp_path):
    path = write_recipe(tmp_path / "recipe.yaml", tiny_text_recipe(tmp_path / "run"))
    recipe = load_recipe(path, ["optim.schedule=cosine", "trainer.gradient_clip_val=null", "trainer.keep_last=-1", "data.cfg_dropout=1"])
    assert (recipe.optim.schedule, recipe.trainer.gradient_clip_val, recipe.trainer.keep_last) == ("cosine", None, -1)


def test_fsdp_loads_on_cpu_but_not_with_a_loss_scaler(tmp_path):
    path = write_recipe(tmp_path / "recipe.yaml", tiny_text_recipe(tmp_path / "run"))
    assert load_recipe(path, ["trainer.strategy=fsdp", "trainer.precision=bf16-mixed"]).trainer.accelerator == "cpu"
    with pytest.raises(RecipeError, match=r"trainer\.precision: 16-mixed is not available with strategy fsdp"):
        load_recipe(path, ["trainer.strategy=fsdp", "trainer.precision=16-mixed"])
    with pytest.raises(RecipeError, match=r"trainer\.strategy: fsdp shards the unified model only"):
        load_recipe(path, ["trainer.strategy=fsdp", "modality_tokenizer=toy_codes"])
