"""Convert transformers `JanusForConditionalGeneration` folders to modal-core
checkpoints and back.

Neither direction builds a model with weights: tensors stream from file to file (one
shard in memory on export, the checkpoint's tensors once on import), and the model they
must fit is built on the meta device only to check every name and shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from tqdm import tqdm
from transformers import AutoConfig, GenerationConfig, JanusConfig, PreTrainedTokenizerFast

from modal_core.assemble import build_model, special_tokens_of
from modal_core.checkpoints import store
from modal_core.checkpoints.store import RECIPE_FILE
from modal_core.config.loader import load_recipe
from modal_core.data.text_tokenizer import load_tokenizer
from modal_core.errors import CheckpointError
from modal_core.interop.weights_io import ShardWriter, iter_tensors, parse_size
from modal_core.model.backbone import BACKBONE_CONFIG_DIR, DTYPES
from modal_core.model.lora import fold_lora
from modal_core.plugins import PluginManager, get_plugin_manager
from modal_core_images.janus.architecture import janus_config_from_recipe, recipe_from_janus_config
from modal_core_images.janus.keys import hf_to_modal, modal_to_hf
from modal_core_images.janus.tokenizer_files import IMAGE_TOKENS, copy_tokenizer, save_processor
from modal_core_images.modalities import UNDERSTANDING

LM_HEAD = "lm_head.weight"
EMBED_TOKENS = "model.language_model.embed_tokens.weight"


def from_hf_janus(source: str | Path, out: str | Path, dtype: str | None = None, plugins: PluginManager | None = None) -> Path:
    """Convert a transformers Janus folder (config.json, safetensors, tokenizer) into a
    modal-core checkpoint at `out`; `dtype` (float32, bfloat16, float16) casts the
    weights, None keeps theirs. Returns `out`."""
    source = Path(source)
    config_path = source / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{source} has no config.json: expected a transformers JanusForConditionalGeneration folder")
    try:
        config = AutoConfig.from_pretrained(str(source), local_files_only=True)
    except Exception as error:  # transformers raises ValueError, OSError or its own validation errors
        raise CheckpointError(f"{config_path} is not a readable transformers config ({error})") from error
    if not isinstance(config, JanusConfig):
        raise CheckpointError(f"{config_path} describes a {type(config).__name__}, expected a JanusConfig (model_type 'janus')")
    processor = _json(source / "processor_config.json")
    generation = _json(source / "generation_config.json")
    return write_checkpoint(
        config,
        iter_tensors(source),
        tokenizer_source=source,
        out=Path(out),
        dtype=dtype,
        system_prompt=bool(processor.get("use_default_system_prompt", True)),
        pad_token_id=generation.get("pad_token_id"),
        source=str(source),
        plugins=plugins,
    )


def write_checkpoint(
    config: JanusConfig,
    tensors: Iterable[tuple[str, torch.Tensor]],
    tokenizer_source: Path,
    out: Path,
    dtype: str | None,
    system_prompt: bool,
    pad_token_id: int | None,
    source: str,
    plugins: PluginManager | None = None,
) -> Path:
    """Write a modal-core checkpoint from transformers-named Janus `tensors`."""
    if dtype is not None and dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    plugins = plugins or get_plugin_manager()
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tqdm(tensors, desc="converting weights", unit=" tensors", leave=False):
        state[hf_to_modal(key)] = tensor if dtype is None else tensor.to(DTYPES[dtype])
    tied = hf_to_modal(LM_HEAD) not in state
    if tied:  # transformers stores a tied LM head once, as the token embeddings
        state[hf_to_modal(LM_HEAD)] = state[hf_to_modal(EMBED_TOKENS)]
    recipe = recipe_from_janus_config(config, source, tied=tied, system_prompt=system_prompt)

    def fill(directory: Path) -> None:
        (directory / RECIPE_FILE).write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
        loaded = load_recipe(directory / RECIPE_FILE, plugins=plugins)
        specials = special_tokens_of(loaded, plugins)
        copy_tokenizer(tokenizer_source, directory, specials, pad_token_id)
        text_config = AutoConfig.for_model(config.text_config.model_type, **recipe["backbone"]["config"])
        text_config.save_pretrained(directory / BACKBONE_CONFIG_DIR)
        _check_fits(loaded, directory, state, plugins)
        store.save_model_state(state, directory)

    store.write_atomically(out, fill)
    return out


def _check_fits(recipe, directory: Path, state: dict[str, torch.Tensor], plugins: PluginManager) -> None:
    """Every tensor must have a place of the same shape in the model the recipe builds."""
    tokenizer = load_tokenizer(directory, special_tokens_of(recipe, plugins))
    model = build_model(recipe, plugins, len(tokenizer), meta=True, backbone_config=directory / BACKBONE_CONFIG_DIR)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not _non_persistent(model, k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{modal_to_hf(k)} {tuple(state[k].shape)} vs {expected[k]}"
        for k in state
        if k in expected and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"the Janus weights do not fit the model their config describes: missing {[modal_to_hf(k) for k in missing][:5]}, "
            f"unexpected {[modal_to_hf(k) for k in unexpected][:5]}, wrong shapes {wrong[:5]}"
        )


def _non_persistent(model: torch.nn.Module, key: str) -> bool:
    owner, _, name = key.rpartition(".")
    return name in model.get_submodule(owner)._non_persistent_buffers_set


def to_hf_janus(checkpoint: str | Path, out: str | Path, max_shard_size: str | int = "5GB", plugins: PluginManager | None = None) -> Path:
    """Export a modal-core Janus checkpoint as a transformers folder that
    `JanusForConditionalGeneration.from_pretrained(out)` and `JanusProcessor` load:
    config.json, generation_config.json, sharded safetensors, tokenizer and processor."""
    plugins = plugins or get_plugin_manager()
    directory = store.verify(store.resolve_checkpoint(checkpoint))
    recipe = load_recipe(directory / RECIPE_FILE, plugins=plugins)
    text_config = AutoConfig.from_pretrained(str(directory / BACKBONE_CONFIG_DIR), local_files_only=True)
    specials = special_tokens_of(recipe, plugins)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    und = recipe.modalities.get(UNDERSTANDING)
    if und is None:
        raise CheckpointError(f"{directory}: a Janus export needs the image_understanding and vq_generation modalities")
    grid = und.image_size // und.patch_size
    tokenizer = save_processor(directory, out, specials, und.image_size, grid * grid, system_prompt=bool(recipe.chat.system_prompt))
    config = janus_config_from_recipe(recipe, text_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"]), str(directory))
    config.save_pretrained(str(out))
    janus_generation_config(tokenizer, do_sample=True).save_pretrained(str(out))
    writer = ShardWriter(out, parse_size(max_shard_size))
    scaling = recipe.lora.alpha / recipe.lora.rank if recipe.lora.rank else None
    with safe_open(str(directory / store.MODEL_FILE), framework="pt") as weights:
        keys = sorted(weights.keys(), key=modal_to_hf)
        # LoRA factors are folded into their weights (W + alpha/r B A): the export is a plain Janus.
        for key, tensor in tqdm(fold_lora(keys, weights.get_tensor, scaling), desc="exporting weights", unit=" tensors", leave=False):
            name = modal_to_hf(key)
            if name == LM_HEAD and config.tie_word_embeddings:
                continue  # transformers re-ties it to the token embeddings
            writer.add(name, tensor)
    writer.close()
    return out


def janus_generation_config(tokenizer: PreTrainedTokenizerFast, do_sample: bool) -> GenerationConfig:
    """The generation config Janus-Pro ships: the tokenizer's BOS/EOS/PAD, the image-start
    token transformers' image generation needs, and CFG scale 5."""
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["boi_token"])},
        guidance_scale=5.0,
        temperature=1.0,
        do_sample=do_sample,
    )


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error})") from error
