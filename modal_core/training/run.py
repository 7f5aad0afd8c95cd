"""`train(recipe)`: everything `modal-core train` does, in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerFast

from modal_core.checkpoints import store
from modal_core.checkpoints.lightning_io import SafetensorsCheckpointIO
from modal_core.config.loader import to_yaml
from modal_core.data.collator import Collator
from modal_core.data.datamodule import MixtureDataModule
from modal_core.data.mixture import MixtureDataset
from modal_core.data.text_tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from modal_core.errors import RecipeError
from modal_core.model.build import AssembledModel, build_model, special_tokens_of
from modal_core.plugins import PluginManager
from modal_core.training.callbacks import LAST_LINK, MetricsHistory, StepCheckpoint
from modal_core.training.module import UnifiedTrainingModule

RECIPE_FILE = "recipe.yaml"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainResult:
    """Where a finished run put its outputs."""

    run_dir: Path
    checkpoint: Path
    history: Path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint, a run directory or its checkpoints/."""
    path = Path(path)
    for candidate in (path, path / LAST_LINK, path / CHECKPOINT_DIR / LAST_LINK):
        if (candidate / store.MANIFEST).is_file():
            return candidate.resolve()
    raise RecipeError(f"no checkpoint at {path}: expected a step-* directory, a run directory, or its checkpoints/ folder")


def prepare_tokenizer(recipe: DictConfig, plugins: PluginManager) -> PreTrainedTokenizerFast:
    """The run's text tokenizer: the resumed or initial checkpoint's, a local one, or a
    new one trained on the recipe's corpus data set."""
    specials = special_tokens_of(recipe, plugins)
    for source in (recipe.resume, recipe.init_from):
        if source:
            return load_tokenizer(resolve_checkpoint(source), specials)
    if recipe.tokenizer.path:
        return load_tokenizer(recipe.tokenizer.path, specials)
    settings = recipe.tokenizer.train
    factory = plugins.datasets().get(settings.corpus)
    if factory is None:
        raise RecipeError(f"tokenizer.train.corpus: unknown data set {settings.corpus!r}; installed: {sorted(plugins.datasets())}")
    corpus = factory({"num_sentences": settings.num_sentences}, recipe.seed, "train")
    texts = (segment.text for index in range(len(corpus)) for segment in corpus[index].segments if hasattr(segment, "text"))
    return train_tokenizer(texts, settings.vocab_size, specials)


def build_mixture(recipe: DictConfig, plugins: PluginManager, assembled: AssembledModel, split: str, seed: int) -> MixtureDataset:
    """The weighted mix of the recipe's data sources for one split."""
    factories = plugins.datasets()
    sources = []
    for index, source in enumerate(recipe.data.sources):
        if source.dataset not in factories:
            raise RecipeError(f"data.sources[{index}].dataset: unknown data set {source.dataset!r}; installed: {sorted(factories)}")
        dataset = factories[source.dataset](dict(source.options), recipe.seed, split)
        sources.append((source.dataset, dataset, float(source.weight)))
    outputs = frozenset(name for name, runtime in assembled.modalities.items() if runtime.spec.direction == "output")
    return MixtureDataset(sources, seed=seed, cfg_dropout=recipe.data.cfg_dropout if split == "train" else 0.0, output_modalities=outputs)


def train(recipe: DictConfig, plugins: PluginManager) -> TrainResult:
    """Train as the recipe says; returns the run directory and the final checkpoint."""
    trainer_config = recipe.trainer
    if trainer_config.keep_last == 0 or trainer_config.keep_last < -1:
        raise RecipeError(f"trainer.keep_last must be >= 1 or -1 (keep all), got {trainer_config.keep_last}")
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    run_dir = Path(recipe.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_yaml = to_yaml(recipe)
    (run_dir / RECIPE_FILE).write_text(recipe_yaml)

    tokenizer = prepare_tokenizer(recipe, plugins)
    assembled = build_model(recipe, tokenizer, plugins)
    if recipe.init_from and not recipe.resume:
        store.load_into(assembled.model, resolve_checkpoint(recipe.init_from))

    collator = Collator(tokenizer, assembled.modalities, max_length=recipe.data.max_length)
    data = MixtureDataModule(
        build_mixture(recipe, plugins, assembled, "train", recipe.seed),
        collator,
        batch_size=recipe.data.batch_size,
        num_workers=recipe.data.num_workers,
        validation=build_mixture(recipe, plugins, assembled, "heldout", recipe.seed + 1) if recipe.data.val_samples else None,
        val_samples=recipe.data.val_samples,
    )
    optim = recipe.optim
    module = UnifiedTrainingModule(
        assembled.model,
        train=list(recipe.train),
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        betas=tuple(optim.betas),
        eps=optim.eps,
        warmup_steps=optim.warmup_steps,
        schedule=optim.schedule,
        min_lr_ratio=optim.min_lr_ratio,
        total_steps=trainer_config.max_steps,
    )

    def write_extras(directory: Path) -> None:
        (directory / RECIPE_FILE).write_text(recipe_yaml)
        save_tokenizer(tokenizer, directory)

    checkpoints = StepCheckpoint(run_dir / CHECKPOINT_DIR, trainer_config.checkpoint_every_n_steps, trainer_config.keep_last)
    validate_every = trainer_config.val_every_n_steps or trainer_config.max_steps
    trainer = L.Trainer(
        max_steps=trainer_config.max_steps,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        strategy=trainer_config.strategy,
        precision=trainer_config.precision,
        accumulate_grad_batches=trainer_config.accumulate_grad_batches,
        gradient_clip_val=trainer_config.gradient_clip_val,
        log_every_n_steps=trainer_config.log_every_n_steps,
        val_check_interval=validate_every * trainer_config.accumulate_grad_batches,
        check_val_every_n_epoch=None,
        limit_val_batches=None if recipe.data.val_samples else 0,
        num_sanity_val_steps=0,
        callbacks=[checkpoints, MetricsHistory(run_dir / HISTORY_FILE, trainer_config.log_every_n_steps)],
        plugins=[SafetensorsCheckpointIO(write_extras)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=trainer_config.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
    )
    resume = str(resolve_checkpoint(recipe.resume)) if recipe.resume else None
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    return TrainResult(run_dir, (run_dir / CHECKPOINT_DIR / LAST_LINK).resolve(), run_dir / HISTORY_FILE)
