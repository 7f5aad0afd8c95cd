"""`modal-core plan`: parameters and memory per GPU of a recipe, without weights.

The model is built on PyTorch's meta device (shapes and dtypes, no storage) by the
assembler, as training builds it but reading no weights: the backbone from its config
and each modality's builders with pretrained-weight paths cleared, so a 7B plan runs
in seconds on a laptop. Memory is an estimate of the steady state of
one training step on one GPU:

- weights: every parameter at its dtype (the backbone's `dtype` when loaded from a
  path; `*-true` precisions convert everything); FSDP FULL_SHARD / DeepSpeed stage 3
  divide them by the number of shards and add two gathered blocks (one computing, one
  prefetched; in bfloat16 under FSDP with `bf16-mixed`);
- gradients: one per trainable weight, sharded by FSDP and DeepSpeed stages 2-3; DDP
  keeps a second copy in its communication buckets;
- optimizer: AdamW's two moments per trainable weight, sharded like gradients;
- activations: per micro-batch of `batch_size x max_length` tokens, what the
  backbone's layers keep for the backward pass (all of each layer, or only its input
  with activation checkpointing, plus one layer being recomputed) and the logits of the
  largest head; frozen encoders run without gradients and keep nothing;
- a fixed allowance for the CUDA context and allocator fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from modal_core.assemble import build_model, special_tokens_of
from modal_core.config.loader import modality_options
from modal_core.data.text_tokenizer import load_tokenizer
from modal_core.errors import RecipeError
from modal_core.model.lora import train_lora
from modal_core.model.unified import UnifiedModel
from modal_core.plugins import PluginManager
from modal_core.scale.blocks import block_classes

GIB = 1024**3
FRAMEWORK_OVERHEAD = int(1.5 * GIB)
"""CUDA context, cuBLAS workspaces and allocator fragmentation (typical, not measured)."""
ADAMW_STATES = 2
HALF_TRUE = {"bf16-true": torch.bfloat16, "16-true": torch.float16}


@dataclass
class MemoryPlan:
    """Bytes per GPU by kind, and what they were computed from."""

    parts: dict[str, int]
    world_size: int
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


@dataclass
class Plan:
    """What `modal-core plan` prints."""

    groups: dict[str, tuple[int, int]]
    """Parameter group -> (trainable, frozen) parameter counts."""
    memory: MemoryPlan
    tokens_per_step: int
    vocab_source: str
    positions: dict[str, str] = field(default_factory=dict)
    """Modality -> how many sequence positions one item takes (tiling's extra tokens included)."""

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.groups.values())

    @property
    def frozen(self) -> int:
        return sum(f for _, f in self.groups.values())


def meta_model(recipe: DictConfig, plugins: PluginManager, vocab_size: int) -> UnifiedModel:
    """The recipe's `UnifiedModel` on the meta device: real shapes and dtypes, no
    storage, and the parameters training would train marked trainable."""
    model = build_model(recipe, plugins, vocab_size, meta=True)
    model.set_trainable(list(recipe.train))
    if recipe.lora.rank:
        train_lora(model, list(recipe.train))
    return model


def vocabulary_size(recipe: DictConfig, plugins: PluginManager) -> tuple[int, str]:
    """The text vocabulary the backbone will hold, and where the number comes from."""
    specials = special_tokens_of(recipe, plugins)
    path = recipe.tokenizer.path
    if path and (Path(path) / "tokenizer.json").is_file():
        return len(load_tokenizer(path, specials)), f"tokenizer {path}"
    configured = recipe.backbone.config.get("vocab_size") if recipe.backbone.config else None
    if configured:
        return int(configured), "backbone.config.vocab_size (tokenizer not found locally)"
    return (
        int(recipe.tokenizer.train.vocab_size),
        "tokenizer.train.vocab_size, an upper bound: the tokenizer is trained at run time "
        "and comes out smaller on a corpus with fewer distinct merges",
    )


def world_size(settings: Any) -> int:
    """Processes of the run: devices per node x nodes."""
    devices = settings.devices
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or isinstance(devices, bool):
        devices = len(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else None
    if devices is None or devices < 1:
        raise RecipeError(f"plan: trainer.devices must be a positive number or a list of devices, got {settings.devices!r}")
    return devices * settings.num_nodes


def memory_per_gpu(model: UnifiedModel, recipe: DictConfig) -> MemoryPlan:
    """Estimated steady-state bytes on one GPU of one training step (see the module docstring)."""
    settings = recipe.trainer
    world = world_size(settings)
    precision = str(settings.precision)

    def size(p: nn.Parameter) -> int:
        return p.numel() * (torch.finfo(HALF_TRUE[precision]).bits // 8 if precision in HALF_TRUE else p.element_size())

    weights = sum(size(p) for p in model.parameters())
    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    weight_shards, state_shards = _shards(settings, world)
    parts = {
        "weights": math.ceil(weights / weight_shards),
        "gradients": math.ceil(trainable / state_shards),
        "optimizer (AdamW)": math.ceil(ADAMW_STATES * trainable / state_shards),
    }
    notes = []
    if settings.strategy == "ddp" and world > 1:
        parts["DDP gradient buckets"] = trainable
    if weight_shards > 1:
        blocks = block_classes(model)
        # FSDP2's bf16-mixed policy gathers float32 shards as bfloat16.
        gathered = (lambda p: 2 * p.numel()) if settings.strategy == "fsdp" and precision == "bf16-mixed" else size
        largest = max((sum(gathered(p) for p in m.parameters()) for m in model.modules() if isinstance(m, blocks)), default=0)
        parts["gathered blocks (2)"] = 2 * largest
    parts["activations"] = _activation_bytes(model, recipe)
    parts["CUDA context, fragmentation"] = FRAMEWORK_OVERHEAD
    if world > 1 and settings.strategy == "auto":
        notes.append("strategy auto with several devices runs as ddp")
    return MemoryPlan(parts, world, notes)


def _shards(settings: Any, world: int) -> tuple[int, int]:
    """(ways the weights are split, ways gradients and optimizer states are split)."""
    per_node = world // settings.num_nodes
    if settings.strategy == "fsdp":
        return {
            "FULL_SHARD": (world, world),
            "SHARD_GRAD_OP": (1, world),
            "HYBRID_SHARD": (per_node, per_node),
            "NO_SHARD": (1, 1),
        }[settings.fsdp_sharding]
    if settings.strategy == "deepspeed_stage_3":
        return world, world
    if settings.strategy == "deepspeed_stage_2":
        return 1, world
    return 1, 1


def _activation_bytes(model: UnifiedModel, recipe: DictConfig) -> int:
    """Activations kept for the backward pass of one micro-batch (Llama-style layers:
    per token, about 10 hidden-sized and 4 FFN-sized tensors per layer)."""
    config = model.backbone.config
    tokens = recipe.data.batch_size * recipe.data.max_length
    precision = str(recipe.trainer.precision)
    element = 4 if precision in ("32-true", "32") else 2
    hidden, layers = config.hidden_size, config.num_hidden_layers
    ffn = getattr(config, "intermediate_size", 4 * hidden)
    full_layer = tokens * element * (10 * hidden + 4 * ffn)
    if recipe.trainer.activation_checkpointing:
        per_model = layers * tokens * 4 * hidden + full_layer  # fp32 residual stream per layer + one recomputed layer
    else:
        per_model = layers * full_layer
    vocab = max([model.backbone.get_output_embeddings().out_features] + [_out_features(h) for h in model.heads.values()])
    logits = tokens * vocab * (element + 4 + 4)  # logits, their fp32 copy for the loss, its gradient
    return per_model + logits


def _out_features(head: nn.Module) -> int:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


def plan(recipe: DictConfig, plugins: PluginManager) -> Plan:
    """Parameters per group, memory per GPU and tokens per step of a recipe."""
    vocab, vocab_source = vocabulary_size(recipe, plugins)
    model = meta_model(recipe, plugins, vocab)
    groups = {}
    for name, module in model.parameter_groups().items():
        parameters = list(module.parameters())
        trainable = sum(p.numel() for p in parameters if p.requires_grad)
        groups[name] = (trainable, sum(p.numel() for p in parameters) - trainable)
    memory = memory_per_gpu(model, recipe)
    settings = recipe.trainer
    tokens = recipe.data.batch_size * settings.accumulate_grad_batches * memory.world_size * recipe.data.max_length
    return Plan(groups, memory, tokens, vocab_source, item_positions(recipe, plugins))


def item_positions(recipe: DictConfig, plugins: PluginManager) -> dict[str, str]:
    """Each modality's line on the positions one item takes, its begin/end tokens included."""
    lines = {}
    for name in recipe.modalities:
        spec, options = plugins.modality(name), modality_options(recipe, plugins, name)
        body = spec.positions_summary(options) if spec.positions_summary else f"{spec.num_positions(options)} positions per item"
        edges = sum(bool(token) for token in (spec.begin_token, spec.end_token))
        lines[name] = f"{body}; + {edges} begin/end token(s)" if edges else body
    return lines


def format_plan(result: Plan, recipe: DictConfig) -> str:
    """The plan as the CLI prints it."""
    settings = recipe.trainer
    lines = ["parameters", f"  {'group':<34}{'trainable':>16}{'frozen':>16}"]
    for name, (trainable, frozen) in result.groups.items():
        lines.append(f"  {name:<34}{trainable:>16,}{frozen:>16,}")
    lines.append(f"  {'total':<34}{result.trainable:>16,}{result.frozen:>16,}")
    lines.append(f"  (vocabulary from {result.vocab_source})")
    memory = result.memory
    lines.append(
        f"memory per GPU: strategy {settings.strategy}, precision {settings.precision}, {memory.world_size} GPU(s), "
        f"activation checkpointing {'on' if settings.activation_checkpointing else 'off'}"
    )
    for name, value in memory.parts.items():
        lines.append(f"  {name:<34}{value / GIB:>12.2f} GiB")
    lines.append(f"  {'total (estimate)':<34}{memory.total / GIB:>12.2f} GiB")
    lines.extend(f"  note: {note}" for note in memory.notes)
    if result.positions:
        lines.append(f"positions per item (data.max_length {recipe.data.max_length})")
        lines.extend(f"  {name:<34}{line}" for name, line in result.positions.items())
    micro = recipe.data.batch_size * recipe.data.max_length
    lines.append(
        f"tokens per optimizer step: {result.tokens_per_step:,} (at most; {recipe.data.batch_size} x {recipe.data.max_length} per "
        f"micro-batch x {settings.accumulate_grad_batches} accumulated x {memory.world_size} GPU(s)); {micro:,} per micro-batch"
    )
    return "\n".join(lines)
