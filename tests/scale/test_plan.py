"""`modal-core plan` against parameter counts and memory worked out by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, TINY_BACKBONE, tiny_text_recipe, write_recipe

from modal_core.cli import main
from modal_core.config.loader import load_recipe
from modal_core.scale.plan import FRAMEWORK_OVERHEAD, meta_model, plan, vocabulary_size

VOCAB = 300
HIDDEN, FFN = 32, 64
# Llama layer: q, k, v, o (4 h^2), gate/up/down (3 h f), two RMSNorm weights (2 h).
LAYER = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * FFN + 2 * HIDDEN
BACKBONE = 2 * VOCAB * HIDDEN + LAYER + HIDDEN  # untied embedding and LM head, final norm
TOY_VECTOR_ENCODER = 5 * 5 + 5
TOY_VECTOR_ADAPTER = 5 * HIDDEN + HIDDEN
TOY_CODES_ADAPTER = 16 * HIDDEN
TOY_CODES_HEAD = HIDDEN * 16 + 16


def _recipe(tmp_path: Path, **trainer) -> Path:
    recipe = tiny_text_recipe(
        tmp_path / "run",
        modalities={"toy_vector": {}, "toy_codes": {}},
        train=["adapters", "heads"],
        trainer=trainer,
    )
    return write_recipe(tmp_path / "plan.yaml", recipe)


def test_parameter_groups_match_hand_counts_and_stay_on_meta(tmp_path, toy_plugins):
    recipe = load_recipe(_recipe(tmp_path), plugins=toy_plugins)
    result = plan(recipe, toy_plugins)
    assert result.groups == {
        "backbone": (0, BACKBONE),
        "encoders.toy_codes": (0, 0),
        "encoders.toy_vector": (0, TOY_VECTOR_ENCODER),
        "adapters.toy_codes": (TOY_CODES_ADAPTER, 0),
        "adapters.toy_vector": (TOY_VECTOR_ADAPTER, 0),
        "heads.toy_codes": (TOY_CODES_HEAD, 0),
    }
    trainable = TOY_CODES_ADAPTER + TOY_VECTOR_ADAPTER + TOY_CODES_HEAD
    assert result.trainable == trainable and result.frozen == BACKBONE + TOY_VECTOR_ENCODER
    assert all(p.device.type == "meta" for p in meta_model(recipe, toy_plugins, VOCAB).parameters())
    # fp32: 4 bytes a weight and a gradient, 8 for AdamW's two moments.
    parts = result.memory.parts
    assert parts["weights"] == 4 * (trainable + BACKBONE + TOY_VECTOR_ENCODER)
    assert parts["gradients"] == 4 * trainable and parts["optimizer (AdamW)"] == 8 * trainable
    tokens = 8 * 48
    layer_activations = tokens * 4 * (10 * HIDDEN + 4 * FFN)
    logits = tokens * VOCAB * (4 + 4 + 4)
    assert parts["activations"] == layer_activations + logits
    assert result.memory.total == sum(parts.values()) and parts["CUDA context, fragmentation"] == FRAMEWORK_OVERHEAD
    assert result.tokens_per_step == tokens


def test_sharding_precision_and_checkpointing_change_the_estimate(tmp_path, toy_plugins):
    base = plan(load_recipe(_recipe(tmp_path), plugins=toy_plugins), toy_plugins).memory.parts
    settings = ["trainer.devices=4", "trainer.num_nodes=2", "trainer.accumulate_grad_batches=3"]
    ddp = plan(load_recipe(_recipe(tmp_path), [*settings, "trainer.strategy=ddp"], toy_plugins), toy_plugins)
    assert ddp.memory.world_size == 8 and ddp.tokens_per_step == 8 * 48 * 3 * 8
    assert ddp.memory.parts["DDP gradient buckets"] == base["gradients"]
    fsdp = plan(
        load_recipe(_recipe(tmp_path), [*settings, "trainer.strategy=fsdp", "trainer.accelerator=gpu"], toy_plugins), toy_plugins
    ).memory.parts
    assert fsdp["weights"] == -(-base["weights"] // 8) and fsdp["optimizer (AdamW)"] == -(-base["optimizer (AdamW)"] // 8)
    assert fsdp["gathered blocks (2)"] == 2 * 4 * LAYER  # two Llama layers in fp32
    fsdp_bf16 = plan(
        load_recipe(_recipe(tmp_path), [*settings, "trainer.strategy=fsdp", "trainer.precision=bf16-mixed"], toy_plugins), toy_plugins
    ).memory.parts
    assert fsdp_bf16["gathered blocks (2)"] == 2 * 2 * LAYER and fsdp_bf16["weights"] == fsdp["weights"]  # fp32 shards, bf16 gathers
    grad_op = plan(
        load_recipe(
            _recipe(tmp_path),
            [*settings, "trainer.strategy=fsdp", "trainer.accelerator=gpu", "trainer.fsdp_sharding=SHARD_GRAD_OP"],
            toy_plugins,
        ),
        toy_plugins,
    ).memory.parts
    assert grad_op["weights"] == base["weights"] and grad_op["gradients"] == -(-base["gradients"] // 8)
    half = plan(load_recipe(_recipe(tmp_path), ["trainer.precision=bf16-true"], toy_plugins), toy_plugins).memory.parts
    assert half["weights"] * 2 == base["weights"]
    checkpointed = plan(load_recipe(_recipe(tmp_path), ["trainer.activation_checkpointing=true"], toy_plugins), toy_plugins)
    tokens = 8 * 48
    assert checkpointed.memory.parts["activations"] == base["activations"] + tokens * 4 * HIDDEN  # 1 layer: input kept + 1 recomputed


def test_backbone_path_reads_only_its_config(tmp_path, toy_plugins):
    from transformers import AutoConfig

    directory = tmp_path / "llm"
    AutoConfig.for_model("llama", vocab_size=VOCAB, **TINY_BACKBONE["config"]).save_pretrained(directory)
    assert not any(directory.glob("*.safetensors"))  # no weights to read: the plan must not need them
    recipe = load_recipe(_recipe(tmp_path), [f"backbone.path={directory}", "backbone.dtype=bfloat16"], toy_plugins)
    result = plan(recipe, toy_plugins)
    assert result.groups["backbone"] == (0, BACKBONE)
    assert result.memory.parts["weights"] == 2 * BACKBONE + 4 * (result.trainable + TOY_VECTOR_ENCODER)


def test_cli_prints_the_plan(tmp_path, toy_plugins, capsys):
    assert main(["plan", str(_recipe(tmp_path)), "trainer.devices=2", "trainer.strategy=ddp"], toy_plugins) == 0
    out = capsys.readouterr().out
    assert re.search(rf"backbone\s+0\s+{BACKBONE:,}", out)
    assert "strategy ddp" in out and "2 GPU(s)" in out and "tokens per optimizer step: 768" in out
    # Planning needs neither the GPUs nor DeepSpeed installed: it is how a run is sized before renting them.
    assert main(["plan", str(_recipe(tmp_path)), "trainer.strategy=deepspeed_stage_3", "trainer.accelerator=gpu"], toy_plugins) == 0
    assert "strategy deepspeed_stage_3" in capsys.readouterr().out


SCALE_RECIPES = sorted(p for p in (REPO / "recipes" / "janus").glob("*.yaml") if "Planned:" in p.read_text())


@pytest.mark.parametrize("path", SCALE_RECIPES, ids=lambda p: p.name)
def test_shipped_scale_recipes_state_their_planned_memory(path, builtin_plugins):
    recipe = load_recipe(path, plugins=builtin_plugins)
    stated = float(re.search(r"Planned: ([\d.]+) GiB per GPU", recipe.description).group(1))
    planned = plan(recipe, builtin_plugins).memory.total / 1024**3
    assert planned == pytest.approx(stated, abs=0.05), f"{path.name}: update the description to {planned:.1f} GiB"


def test_there_are_four_scale_recipes():
    assert len(SCALE_RECIPES) == 4


def _llama_parameters(vocab: int, hidden: int, ffn: int, layers: int) -> int:
    """Untied embedding and LM head, per layer q/k/v/o, gate/up/down and two norms, final norm."""
    return 2 * vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * ffn + 2 * hidden) + hidden


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_janus_stages_plan_without_local_checkpoints(stage, builtin_plugins, capsys):
    """The recipes the docs point at plan on a machine without DeepSeek-LLM: the
    architecture comes from `backbone.config` of recipes/janus/base.yaml."""
    path = REPO / "recipes" / "janus" / f"{stage}.yaml"
    assert main(["plan", str(path)], builtin_plugins) == 0
    deepseek_1_3b = _llama_parameters(vocab=102400, hidden=2048, ffn=5632, layers=24)
    assert re.search(r"backbone\s+[\d,]+\s+[\d,]+", capsys.readouterr().out)
    groups = plan(load_recipe(path, plugins=builtin_plugins), builtin_plugins).groups
    assert sum(groups["backbone"]) == deepseek_1_3b


def test_a_local_backbone_folder_wins_over_the_janus_config(tmp_path, builtin_plugins):
    """recipes/janus/base.yaml names the 1.3B architecture for machines without the
    checkpoint; a local folder (model and tokenizer, as DeepSeek ships them) is what
    training builds and what the plan counts."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from modal_core.data.text_tokenizer import save_tokenizer, train_tokenizer
    from modal_core.model.backbone import build_backbone

    directory = tmp_path / "llm"
    save_tokenizer(train_tokenizer(["a red circle", "a blue square"] * 20, VOCAB, []), directory)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", vocab_size=VOCAB, **TINY_BACKBONE["config"])).save_pretrained(directory)
    local = [f"backbone.path={directory}", f"tokenizer.path={directory}"]
    recipe = load_recipe(REPO / "recipes" / "janus" / "stage2.yaml", local, builtin_plugins)
    assert recipe.backbone.config.hidden_size == 2048  # still in the recipe, but not read
    vocab, source = vocabulary_size(recipe, builtin_plugins)
    assert source == f"tokenizer {directory}"
    assert vocab <= VOCAB  # so the folder's config.json gives the embedding rows
    assert sum(plan(recipe, builtin_plugins).groups["backbone"]) == BACKBONE
    settings = recipe.backbone
    built = build_backbone(settings.path, settings.model_type, dict(settings.config), vocab_size=vocab, dtype=settings.dtype)
    assert built.config.hidden_size == HIDDEN and built.config.num_hidden_layers == 1
