"""Assemble a `UnifiedModel` and its data-side view from a validated recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerFast

from modal_core.config.loader import modality_options
from modal_core.data.collator import NO_HEAD, ModalityRuntime
from modal_core.model.backbone import (
    BACKBONE_CONFIG_DIR,
    backbone_from_config,
    build_backbone,
)
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
    recipe: DictConfig, tokenizer: PreTrainedTokenizerFast, plugins: PluginManager, checkpoint: Path | None = None
) -> AssembledModel:
    """Build the backbone, then every enabled modality's encoder, adapter and head.

    With `checkpoint` (a modal-core checkpoint directory the caller loads next) no
    pretrained weights are read: the backbone is built from the checkpoint's saved
    config and each modality's `weight_paths` options are cleared."""
    backbone_config = recipe.backbone
    if checkpoint is not None:
        backbone = backbone_from_config(checkpoint / BACKBONE_CONFIG_DIR)
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
        if checkpoint is not None:
            for key in spec.weight_paths:
                setattr(options[name], key, None)
        encoders[name] = spec.build_encoder(options[name])
        adapters[name] = spec.build_adapter(options[name], hidden_size)
        if spec.build_head is not None:
            heads[name] = spec.build_head(options[name], hidden_size)
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
