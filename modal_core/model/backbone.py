"""Build or load the shared causal language model from a recipe's `backbone` block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from modal_core.errors import CheckpointError, RecipeError

BACKBONE_CONFIG_DIR = "backbone"
"""Checkpoint sub-folder holding the backbone's transformers `config.json`."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_backbone(
    path: str | None,
    model_type: str,
    config: dict[str, Any],
    vocab_size: int,
    dtype: str = "float32",
    read_weights: bool = True,
    embedding_init_std: float | None = None,
) -> PreTrainedModel:
    """A Hugging Face causal LM: loaded from the local directory `path`, or built from
    `model_type` + `config` keyword arguments. Its token embeddings are resized to hold
    `vocab_size` tokens (the tokenizer may add modality special tokens).

    With `read_weights=False` (a build on the meta device) no weights are read: `path`
    lends only its config.json, and without one `config` describes the architecture.
    `embedding_init_std` redraws the token embeddings of a backbone built from `config`
    (the padding row, if any, stays zero; a tied output layer shares them) and leaves
    every other layer as transformers initialised it."""
    _check_dtype(dtype)
    if path and read_weights:
        if not (Path(path) / "config.json").is_file():
            raise RecipeError(f"backbone.path: {path} is not a local Hugging Face model directory (no config.json)")
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=DTYPES[dtype])
    elif path and (Path(path) / "config.json").is_file():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, local_files_only=True), dtype=DTYPES[dtype])
    else:
        if not config:
            where = f"backbone.path {path} has no config.json and " if path else ""
            raise RecipeError(
                f"{where}backbone.config is empty: give the architecture (hidden_size, num_hidden_layers, ...) or a local "
                "backbone.path; transformers' defaults would build a 7B-parameter model"
            )
        try:
            hf_config = AutoConfig.for_model(model_type, **{"vocab_size": vocab_size, **config})
        except (ValueError, TypeError, StrictDataclassError) as error:  # transformers validates configs as strict dataclasses
            raise RecipeError(f"backbone.config: cannot build a {model_type!r} config ({' '.join(str(error).split())})") from error
        # A path's weights would load in `dtype` (so its plan counts them so); a new backbone starts in float32.
        model = AutoModelForCausalLM.from_config(hf_config, dtype=DTYPES[dtype] if path else torch.float32)
    if model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    if embedding_init_std is not None and not path and read_weights:
        _redraw_embeddings(model.get_input_embeddings(), embedding_init_std)
    return model


def backbone_from_config(directory: str | Path, dtype: str = "float32") -> PreTrainedModel:
    """An uninitialised-weights backbone of the architecture saved in `directory`."""
    if not (Path(directory) / "config.json").is_file():
        raise CheckpointError(f"{directory}/config.json is missing: the checkpoint does not describe its backbone")
    _check_dtype(dtype)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(directory), local_files_only=True), dtype=DTYPES[dtype])


def _redraw_embeddings(embeddings: torch.nn.Embedding, std: float) -> None:
    with torch.no_grad():
        embeddings.weight.normal_(0.0, std)
        if embeddings.padding_idx is not None:
            embeddings.weight[embeddings.padding_idx].zero_()


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise RecipeError(f"backbone.dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
