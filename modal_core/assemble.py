"""Turn a recipe into a model and what feeds it: the one assembler.

Training, `modal_core.load` (and so serving), the Janus converters and `modal-core
plan` all build here. The recipe is read once, into plain keyword arguments for
`build_backbone`, each modality's builders and `add_lora`; `modal_core.model` never
sees a recipe. A parameter group (`backbone`, `encoders.<m>`, `adapters.<m>`,
`heads.<m>`, `lora`) can be built on the meta device: shapes and dtypes, no storage
and no pretrained weights read, either to adopt a checkpoint's tensors next
(`lean_load.assign_checkpoint`, one copy of the weights in memory) or only to be
counted (`plan`).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerFast

from modal_core.checkpoints import store
from modal_core.checkpoints.lean_load import assign_checkpoint, checkpoint_keys, compute_buffers
from modal_core.checkpoints.run_folder import BAD_SAMPLES_FILE
from modal_core.config.loader import load_recipe, modality_options, recipe_to_dict
from modal_core.data.bad_samples import BadSamplePolicy
from modal_core.data.chat import ChatFormat
from modal_core.data.collator import NO_HEAD, Collator, ModalityRuntime
from modal_core.data.segments import Text
from modal_core.data.text_tokenizer import load_tokenizer, train_tokenizer
from modal_core.errors import CheckpointError, ModelInputError, RecipeError
from modal_core.generation.settings import GenerationSettings
from modal_core.model.backbone import BACKBONE_CONFIG_DIR, backbone_from_config, build_backbone
from modal_core.model.lora import add_lora
from modal_core.model.unified import UnifiedModel
from modal_core.plugins import PluginManager


@dataclass(frozen=True)
class Assembled:
    """A model with what is needed to feed it."""

    model: UnifiedModel
    tokenizer: PreTrainedTokenizerFast
    collator: Collator
    modalities: dict[str, ModalityRuntime]
    fresh: tuple[str, ...] = ()
    """Keys of an `init_from` model its checkpoint lacked: they keep their initialisation."""
    generation: GenerationSettings = GenerationSettings()
    """How the model draws when a call does not say (the recipe's `generation:` section)."""


def special_tokens_of(recipe: DictConfig, plugins: PluginManager) -> list[str]:
    """Special tokens the recipe's modalities need in the text tokenizer."""
    tokens: list[str] = list(recipe.tokenizer.special_tokens)
    for name in recipe.modalities:
        spec = plugins.modality(name)
        tokens += spec.special_tokens
        if spec.layout_tokens is not None:
            tokens += spec.layout_tokens(modality_options(recipe, plugins, name))
    return list(dict.fromkeys(tokens))


def prepare_tokenizer(recipe: DictConfig, plugins: PluginManager, checkpoint: Path | None = None) -> PreTrainedTokenizerFast:
    """The run's text tokenizer: `checkpoint`'s (the resumed or initial one), a local
    one, or a new one trained on the recipe's corpus data set."""
    specials = special_tokens_of(recipe, plugins)
    if checkpoint is not None:
        return load_tokenizer(checkpoint, specials)
    if recipe.tokenizer.path:
        return load_tokenizer(recipe.tokenizer.path, specials)
    settings = recipe.tokenizer.train
    factory = plugins.datasets().get(settings.corpus)
    if factory is None:
        raise RecipeError(f"tokenizer.train.corpus: unknown data set {settings.corpus!r}; installed: {sorted(plugins.datasets())}")
    corpus = factory({"num_sentences": settings.num_sentences, **settings.options}, recipe.seed, "train")
    texts = (segment.text for index in range(len(corpus)) for segment in corpus[index].segments if isinstance(segment, Text))
    return train_tokenizer(texts, settings.vocab_size, specials)


def data_source(recipe: DictConfig, plugins: PluginManager, index: int, split: str) -> Dataset:
    """The data set of the recipe's `data.sources[index]` for one split, built by its
    registered factory."""
    source, factories = recipe.data.sources[index], plugins.datasets()
    if source.dataset not in factories:
        raise RecipeError(f"data.sources[{index}].dataset: unknown data set {source.dataset!r}; installed: {sorted(factories)}")
    try:
        return factories[source.dataset](dict(source.options), recipe.seed, split)
    except (TypeError, ValueError) as error:  # an option of the wrong type or form
        raise RecipeError(f"data.sources[{index}].options ({source.dataset}): {error}") from error


def bad_sample_policy(recipe: DictConfig) -> BadSamplePolicy:
    """The recipe's `data.on_bad_sample` policy, logging into the run directory."""
    return BadSamplePolicy(recipe.data.on_bad_sample, Path(recipe.output_dir) / BAD_SAMPLES_FILE)


def build_model(
    recipe: DictConfig, plugins: PluginManager, vocab_size: int, meta: bool | Collection[str] = False, backbone_config: Path | None = None
) -> UnifiedModel:
    """Build the backbone, then every enabled modality's encoder, adapter and head, then
    the recipe's LoRA layers.

    `meta` names the parameter groups to build on the meta device (True: all): they
    read no pretrained weights (a modality's `weight_paths` options are cleared, a
    `backbone.path` lends only its config.json) and their parameters and persistent
    buffers have no storage; their computed buffers (rotary frequencies, ...) do have
    values. `backbone_config`: a checkpoint's saved backbone config directory, which a
    meta backbone is built from (in `backbone.dtype`) instead of the recipe."""

    def on_meta(group: str) -> bool:
        return meta is True or (meta is not False and group in meta)

    def building(group: str) -> contextlib.AbstractContextManager:
        return torch.device("meta") if on_meta(group) else contextlib.nullcontext()

    def build_group(group: str, lean: bool, read_weights: bool) -> nn.Module:
        """One modality group, on the meta device when `lean`."""
        kind, name = group.split(".")
        spec, options = plugins.modality(name), modality_options(recipe, plugins, name)
        if not read_weights:
            for key in spec.weight_paths:  # the architecture comes from the options alone
                owner, _, attribute = key.rpartition(".")  # a dotted key names a nested block's option
                setattr(operator.attrgetter(owner)(options) if owner else options, attribute, None)
        with torch.device("meta") if lean else contextlib.nullcontext():
            if kind == "encoders":
                return spec.build_encoder(options)
            builder = spec.build_adapter if kind == "adapters" else spec.build_head
            return builder(options, hidden_size)

    with building("backbone"):
        if on_meta("backbone") and backbone_config is not None:
            backbone = backbone_from_config(backbone_config, recipe.backbone.dtype)
        else:
            backbone = build_backbone(**backbone_arguments(recipe), vocab_size=vocab_size, read_weights=not on_meta("backbone"))
    hidden_size = backbone.get_input_embeddings().embedding_dim
    groups: dict[str, dict[str, nn.Module]] = {"encoders": {}, "adapters": {}, "heads": {}}
    for name in recipe.modalities:
        kinds = ("encoders", "adapters", "heads") if plugins.modality(name).build_head is not None else ("encoders", "adapters")
        for kind in kinds:
            lean = on_meta(f"{kind}.{name}")
            groups[kind][name] = build_group(f"{kind}.{name}", lean, read_weights=not lean)
    with building("lora"):
        if lora := lora_arguments(recipe):
            add_lora(backbone, **lora)
    model = UnifiedModel(backbone, groups["encoders"], groups["adapters"], groups["heads"])
    # Buffers transformers cannot compute belong to a plugin's own module: they come
    # from a twin of its group built normally (small: an encoder, adapter or head).
    for group, names in _by_group(compute_buffers(model)).items():
        twin = build_group(group, lean=False, read_weights=False)
        for name in names:
            owner, _, key = name.rpartition(".")
            model.get_submodule(owner)._buffers[key] = twin.get_buffer(name.removeprefix(group + "."))
    return model


def backbone_arguments(recipe: DictConfig) -> dict[str, Any]:
    """`build_backbone`'s keyword arguments (but `vocab_size`) from the recipe's `backbone`."""
    settings = recipe.backbone
    config = OmegaConf.to_container(settings.config, resolve=True)
    return {
        "path": settings.path,
        "model_type": settings.model_type,
        "config": config,
        "dtype": settings.dtype,
        "embedding_init_std": settings.embedding_init_std,
    }


def lora_arguments(recipe: DictConfig) -> dict[str, Any] | None:
    """`add_lora`'s keyword arguments from the recipe's `lora`, or None without LoRA."""
    lora = recipe.lora
    if not lora.rank:
        return None
    return {"rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout, "targets": list(lora.targets)}


def modality_runtimes(recipe: DictConfig, plugins: PluginManager, model: UnifiedModel) -> dict[str, ModalityRuntime]:
    """Each enabled modality as the data pipeline sees it (processor, size, head)."""
    runtimes = {}
    for name in recipe.modalities:
        spec, options = plugins.modality(name), modality_options(recipe, plugins, name)
        head = model.head_index(name) if name in model.heads else NO_HEAD
        runtimes[name] = ModalityRuntime.of(spec, options, head)
    return runtimes


def assemble(
    recipe: DictConfig, plugins: PluginManager, tokenizer: PreTrainedTokenizerFast | None = None, init_from: Path | None = None
) -> Assembled:
    """The recipe's model to train, with its tokenizer (prepared when None, see
    `prepare_tokenizer`) and a collator of `data.max_length` positions (packing
    samples into rows when `data.packing` is on).

    With `init_from` (a verified checkpoint directory) the model holds its weights,
    one copy in memory: the groups the checkpoint has are built on the meta device and
    adopt its tensors, cast to the dtype they were built in. Groups it lacks (a new
    modality, LoRA factors) keep their fresh or pretrained weights; their keys are in
    `fresh`."""
    if tokenizer is None:
        tokenizer = prepare_tokenizer(recipe, plugins, init_from)
    fresh: list[str] = []
    if init_from is None:
        model = build_model(recipe, plugins, len(tokenizer))
    else:
        keys = checkpoint_keys(init_from)
        groups = {"backbone" if key.startswith("backbone.") else ".".join(key.split(".")[:2]) for key in keys}
        model = build_model(recipe, plugins, len(tokenizer), meta=groups, backbone_config=init_from / BACKBONE_CONFIG_DIR)
        rows = model.backbone.get_input_embeddings().num_embeddings
        if rows < len(tokenizer):
            raise CheckpointError(
                f"{init_from}: its token embeddings have {rows} rows but the tokenizer has {len(tokenizer)} tokens; "
                "the recipe adds special tokens the checkpoint was not trained with"
            )
        fresh = assign_checkpoint(model, init_from, cast=True)
    runtimes = modality_runtimes(recipe, plugins, model)
    chat = ChatFormat(**recipe_to_dict(recipe.chat))
    collator = Collator(
        tokenizer,
        runtimes,
        max_length=recipe.data.max_length,
        bad_samples=bad_sample_policy(recipe),
        chat=chat,
        packing=recipe.data.packing,
        every_modality=True,
    )
    return Assembled(model, tokenizer, collator, runtimes, tuple(fresh))


def assemble_checkpoint(directory: Path, plugins: PluginManager) -> Assembled:
    """The model of a verified checkpoint directory, for inference: its recipe and
    tokenizer, every weight adopted from its file in the file's dtype (one copy in
    memory), and a collator as long as the model's context."""
    recipe = load_recipe(directory / store.RECIPE_FILE, plugins=plugins)
    tokenizer = load_tokenizer(directory, special_tokens_of(recipe, plugins))
    model = build_model(recipe, plugins, len(tokenizer), meta=True, backbone_config=directory / BACKBONE_CONFIG_DIR)
    assign_checkpoint(model, directory)
    runtimes = modality_runtimes(recipe, plugins, model)
    context = int(getattr(model.backbone.config, "max_position_embeddings", 4096))
    chat = ChatFormat(**recipe_to_dict(recipe.chat))
    collator = Collator(tokenizer, runtimes, max_length=context, chat=chat, limit_name="the model's context")
    try:
        generation = GenerationSettings.from_mapping(recipe.generation)
    except ModelInputError as error:
        raise CheckpointError(f"{directory / store.RECIPE_FILE}: generation: {error}") from error
    return Assembled(model, tokenizer, collator, runtimes, generation=generation)


def _by_group(names: list[str]) -> dict[str, list[str]]:
    """Tensor names by their parameter group (`encoders.<m>`, ...)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(".".join(name.split(".")[:2]), []).append(name)
    return groups
