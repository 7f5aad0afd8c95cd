"""`train(recipe)`: everything `modal-core train` does, in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from modal_core.assemble import assemble, bad_sample_policy, data_source, prepare_tokenizer
from modal_core.checkpoints import store
from modal_core.checkpoints.lightning_io import SafetensorsCheckpointIO
from modal_core.checkpoints.run_folder import HISTORY_FILE, claim_run_dir, is_first_process
from modal_core.checkpoints.store import CHECKPOINT_DIR, RECIPE_FILE, resolve_checkpoint
from modal_core.config.loader import modality_options, recipe_to_dict, to_yaml
from modal_core.data.collator import NO_HEAD, ModalityRuntime
from modal_core.data.datamodule import MixtureDataModule
from modal_core.data.mixture import MixtureDataset
from modal_core.data.streaming import ShardSource, StreamingMixture
from modal_core.data.text_tokenizer import save_tokenizer
from modal_core.errors import CheckpointError, RecipeError
from modal_core.model.backbone import BACKBONE_CONFIG_DIR
from modal_core.model.lora import train_lora
from modal_core.plugins import PluginManager
from modal_core.scale.blocks import block_classes
from modal_core.scale.strategy import build_strategy, lightning_precision
from modal_core.scale.throughput import FlopsModel, ThroughputMonitor
from modal_core.training.callbacks import MetricsHistory, Retention, StepCheckpoint
from modal_core.training.console import StepProgressBar, quiet_lightning
from modal_core.training.module import UnifiedTrainingModule
from modal_core.training.tokenizer_module import (
    ModalityTokenizerModule,
    PayloadCollator,
)


@dataclass
class TrainResult:
    """Where a finished run put its outputs."""

    run_dir: Path
    checkpoint: Path
    history: Path


def build_mixture(
    recipe: DictConfig, plugins: PluginManager, output_modalities: frozenset[str], split: str, seed: int
) -> MixtureDataset | StreamingMixture:
    """The weighted mix of the recipe's data sources for one split; a streaming mix when
    any source reads shards."""
    sources = [
        (source.dataset, data_source(recipe, plugins, index, split), float(source.weight))
        for index, source in enumerate(recipe.data.sources)
    ]
    dropout = recipe.data.cfg_dropout if split == "train" else 0.0
    mixture = StreamingMixture if any(isinstance(dataset, ShardSource) for _, dataset, _ in sources) else MixtureDataset
    return mixture(sources, seed=seed, cfg_dropout=dropout, output_modalities=output_modalities, bad_samples=bad_sample_policy(recipe))


def train(recipe: DictConfig, plugins: PluginManager) -> TrainResult:
    """Train as the recipe says; returns the run directory and the final checkpoint."""
    source = recipe.resume or recipe.init_from
    start = resolve_checkpoint(source) if source else None  # the one checkpoint the run starts from
    first = is_first_process()
    run_dir = claim_run_dir(recipe.output_dir, start if recipe.resume else None, recipe.overwrite, first)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    recipe_yaml = to_yaml(recipe)
    optim = recipe_to_dict(recipe.optim)
    total_steps = recipe.trainer.max_steps
    callbacks: list[L.Callback] = []
    if recipe.modality_tokenizer:
        module, data, tokenizer = _tokenizer_task(recipe, plugins, optim, total_steps, start)
    else:
        module, data, tokenizer, callbacks = _unified_task(recipe, plugins, optim, total_steps, start, run_dir)

    def write_extras(directory: Path) -> None:
        (directory / RECIPE_FILE).write_text(recipe_yaml)
        if tokenizer is not None:
            save_tokenizer(tokenizer, directory)
            module.model.backbone.config.save_pretrained(directory / BACKBONE_CONFIG_DIR)

    with quiet_lightning():
        trainer = _trainer(recipe, run_dir, SafetensorsCheckpointIO(write_extras), module, plugins, callbacks)
        if recipe.preference.method and trainer.world_size > 1:
            # Ranks would skip each other's collectives (a batch without prompts or without
            # supervised samples) and hang, so this is refused before any process starts.
            raise RecipeError(
                f"preference.method {recipe.preference.method}: preference tuning runs in one process; this recipe asks "
                f"for {trainer.world_size} (trainer.devices x trainer.num_nodes): set trainer.devices=1 trainer.num_nodes=1"
            )
        if first:  # written once the run is sure to start, so a refused one leaves no run behind
            (run_dir / RECIPE_FILE).write_text(recipe_yaml)
        trainer.fit(module, datamodule=data, ckpt_path=str(start) if recipe.resume else None)
    last = run_dir / CHECKPOINT_DIR / store.LAST_LINK
    if not last.resolve().is_dir():
        raise CheckpointError(f"training ended but wrote no final checkpoint: {last} is missing or points nowhere")
    # Sizes only: the hashes were taken from these very bytes as they were written.
    return TrainResult(run_dir, store.verify(last.resolve(), allow_sharded=True, hashes=False), run_dir / HISTORY_FILE)


def _unified_task(recipe: DictConfig, plugins: PluginManager, optim: dict, total_steps: int, start: Path | None, run_dir: Path):
    """The unified model's training module, data and extra callbacks; `start`: the
    resolved `resume` or `init_from` checkpoint (its tokenizer; with `init_from`, its
    weights too). With `preference.method` the module is preference tuning's."""
    tokenizer = prepare_tokenizer(recipe, plugins, start)
    init_from = None if recipe.resume or start is None else store.verify(start)
    # With init_from: built on the meta device and filled from the file, one copy of the weights in memory.
    assembled = assemble(recipe, plugins, tokenizer, init_from=init_from)
    if assembled.fresh:
        groups = sorted({".".join(key.split(".")[:2]) for key in assembled.fresh})
        print(
            f"init_from {recipe.init_from}: {len(assembled.fresh)} tensors not in the checkpoint keep their initialisation "
            f"({', '.join(groups)})"
        )
    collator, callbacks = assembled.collator, []
    if recipe.preference.method:
        from modal_core.preference.setup import preference_task  # samples with the decode engine; plain training loads no kernel

        module, collator, callbacks = preference_task(recipe, plugins, assembled, optim, total_steps, run_dir)
    else:
        module = UnifiedTrainingModule(assembled.model, list(recipe.train), optim, total_steps)
    if recipe.lora.rank:
        train_lora(assembled.model, list(recipe.train))
    return module, _data_module(recipe, plugins, assembled.modalities, collator), tokenizer, callbacks


def _tokenizer_task(recipe: DictConfig, plugins: PluginManager, optim: dict, total_steps: int, start: Path | None):
    name = recipe.modality_tokenizer
    if name not in recipe.modalities:
        raise RecipeError(f"modality_tokenizer: {name!r} must also be configured under `modalities:`")
    options = modality_options(recipe, plugins, name)
    spec = plugins.modality(name)
    tokenizer = spec.build_encoder(options)
    if start is not None and not recipe.resume:
        store.load_into(tokenizer, start)
    runtime = ModalityRuntime.of(spec, options, NO_HEAD)
    module = ModalityTokenizerModule(tokenizer, optim, total_steps)
    return module, _data_module(recipe, plugins, {name: runtime}, PayloadCollator(name, runtime, bad_sample_policy(recipe))), None


def _data_module(recipe: DictConfig, plugins: PluginManager, modalities: dict[str, ModalityRuntime], collator) -> MixtureDataModule:
    outputs = frozenset(name for name, runtime in modalities.items() if runtime.spec.direction == "output")
    validation = build_mixture(recipe, plugins, outputs, "heldout", recipe.seed + 1) if recipe.data.val_samples else None
    return MixtureDataModule(
        build_mixture(recipe, plugins, outputs, "train", recipe.seed),
        collator,
        batch_size=recipe.data.batch_size,
        num_workers=recipe.data.num_workers,
        validation=validation,
        val_samples=recipe.data.val_samples,
    )


def _trainer(
    recipe: DictConfig,
    run_dir: Path,
    checkpoint_io: SafetensorsCheckpointIO,
    module: L.LightningModule,
    plugins: PluginManager,
    callbacks: list[L.Callback],
) -> L.Trainer:
    settings = recipe.trainer
    validate_every = settings.val_every_n_steps or settings.max_steps
    blocks = block_classes(module.model, plugins.block_classes())
    throughput = []
    # Preference tuning's steps are mostly sampling, which the token count of a batch does not measure.
    if isinstance(module, UnifiedTrainingModule) and not recipe.preference.method:
        throughput.append(ThroughputMonitor(FlopsModel.of(module.model), str(settings.precision), settings.peak_tflops))
    return L.Trainer(
        max_steps=settings.max_steps,
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=build_strategy(settings, module.model, blocks, checkpoint_io.write_extras),
        precision=lightning_precision(settings),
        accumulate_grad_batches=settings.accumulate_grad_batches,
        gradient_clip_val=settings.gradient_clip_val,
        log_every_n_steps=settings.log_every_n_steps,
        val_check_interval=validate_every * settings.accumulate_grad_batches,
        check_val_every_n_epoch=None,
        limit_val_batches=None if recipe.data.val_samples else 0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # MixtureDataModule strides the stream by rank itself
        callbacks=[
            StepCheckpoint(
                run_dir / CHECKPOINT_DIR,
                settings.checkpoint_every_n_steps,
                settings.keep_last,
                Retention(settings.keep_best, settings.monitor, settings.monitor_mode),
            ),
            *throughput,  # before MetricsHistory, which writes what was logged
            *callbacks,
            MetricsHistory(run_dir / HISTORY_FILE, settings.log_every_n_steps),
            *([StepProgressBar()] if settings.progress_bar else []),
        ],
        plugins=[checkpoint_io],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=settings.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
    )
