"""Assemble a `UnifiedModel` and its data-side view from a validated recipe."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerFast

from modal_core.checkpoints.lean_load import assign_checkpoint, checkpoint_keys, parameters_on_meta
from modal_core.config.loader import modality_options
from modal_core.data.collator import NO_HEAD, ModalityRuntime
from modal_core.errors import CheckpointError
from modal_core.model.backbone import (
    BACKBONE_CONFIG_DIR,
    backbone_from_config,
    build_backbone,
)
from modal_core.model.lora import add_lora
from modal_core.model.unified import UnifiedModel
from modal_core.plugins import PluginManager


@dataclass
class AssembledModel:
    """A model with what is needed to feed it."""

    model: UnifiedModel
    modalities: dict[str, ModalityRuntime]


def special_tokens_of(recipe: DictConfig, plugins: PluginManager) -> list[str]:
    """Special tokens the recipe's modalities need in the text tokenizer."""
    tokens: list[str] = list(recipe.tokenizer.special_tokens)
    for name in recipe.modalities:
        tokens += plugins.modality(name).special_tokens
    return list(dict.fromkeys(tokens))


def build_model(
    recipe: DictConfig,
    tokenizer: PreTrainedTokenizerFast,
    plugins: PluginManager,
    checkpoint: Path | None = None,
    from_checkpoint: Collection[str] | None = None,
) -> AssembledModel:
    """Build the backbone, then every enabled modality's encoder, adapter and head, then
    the recipe's LoRA layers.

    With `checkpoint` (a modal-core checkpoint directory whose weights the caller
    assigns next, `lean_load.assign_checkpoint`), the parameter groups named in
    `from_checkpoint` (`backbone`, `encoders.<m>`, ...; None: all) read no pretrained
    weights and have their parameters on the meta device: the backbone is built from
    the checkpoint's saved config (in `backbone.dtype`), and a modality whose encoder
    comes from the checkpoint has its `weight_paths` options cleared. Other groups are
    built as without a checkpoint."""

    def lean(group: str) -> bool:
        return checkpoint is not None and (from_checkpoint is None or group in from_checkpoint)

    def building(group: str) -> contextlib.AbstractContextManager:
        return parameters_on_meta() if lean(group) else contextlib.nullcontext()

    backbone_config = recipe.backbone
    if lean("backbone"):
        with building("backbone"):
            backbone = backbone_from_config(checkpoint / BACKBONE_CONFIG_DIR, backbone_config.dtype)
    else:
        backbone = build_backbone(
            backbone_config.path,
            backbone_config.model_type,
            OmegaConf.to_container(backbone_config.config, resolve=True),
            vocab_size=len(tokenizer),
            dtype=backbone_config.dtype,
        )
    hidden_size = backbone.get_input_embeddings().embedding_dim
    encoders, adapters, heads, options = {}, {}, {}, {}
    for name in recipe.modalities:
        spec = plugins.modality(name)
        options[name] = modality_options(recipe, plugins, name)
        if lean(f"encoders.{name}"):
            for key in spec.weight_paths:
                setattr(options[name], key, None)
        with building(f"encoders.{name}"):
            encoders[name] = spec.build_encoder(options[name])
        with building(f"adapters.{name}"):
            adapters[name] = spec.build_adapter(options[name], hidden_size)
        if spec.build_head is not None:
            with building(f"heads.{name}"):
                heads[name] = spec.build_head(options[name], hidden_size)
    lora = recipe.lora
    if lora.rank:
        add_lora(backbone, lora.rank, lora.alpha, lora.dropout, list(lora.targets))
    model = UnifiedModel(backbone, encoders, adapters, heads)
    runtimes = {}
    for name in recipe.modalities:
        spec = plugins.modality(name)
        runtimes[name] = ModalityRuntime(
            spec=spec,
            processor=spec.build_processor(options[name]),
            num_positions=spec.num_positions(options[name]),
            head_index=model.head_index(name) if name in heads else NO_HEAD,
        )
    return AssembledModel(model, runtimes)


def build_from_checkpoint(
    recipe: DictConfig, tokenizer: PreTrainedTokenizerFast, plugins: PluginManager, checkpoint: Path
) -> tuple[AssembledModel, list[str]]:
    """The recipe's model with the weights of `checkpoint` (`init_from`), holding one
    copy of them: the parts the checkpoint has are built on the meta device and adopt
    its tensors one at a time (cast to the dtype they were built in). Parts it lacks (a
    new modality, LoRA factors) keep their fresh or pretrained weights; their keys are
    returned."""
    groups = {key.split(".")[0] if key.startswith("backbone.") else ".".join(key.split(".")[:2]) for key in checkpoint_keys(checkpoint)}
    assembled = build_model(recipe, tokenizer, plugins, checkpoint=checkpoint, from_checkpoint=groups)
    rows = assembled.model.backbone.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        raise CheckpointError(
            f"{checkpoint}: its token embeddings have {rows} rows but the tokenizer has {len(tokenizer)} tokens; "
            "the recipe adds special tokens the checkpoint was not trained with"
        )
    return assembled, assign_checkpoint(assembled.model, checkpoint, cast=True)
