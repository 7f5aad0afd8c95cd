"""`prepare(recipe)`: run the recipe's frozen encoders once over its data sources.

Every source whose samples hold items of the chosen modalities becomes a prepared folder
(`modal_core.data.prepared`): output-modality items (images for generation) are stored
as their tokenizer's codes, input-modality items (images for understanding) as their
encoder's features, so training stages whose encoders are frozen stop re-encoding every
item every epoch. The encoders are those training would build: the recipe's
`init_from` checkpoint, or the recipe's own initialisation from its seed.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset
from tqdm import tqdm

from modal_core.assemble import Assembled, assemble, data_source, prepare_tokenizer
from modal_core.checkpoints import store
from modal_core.config.loader import recipe_to_dict
from modal_core.data.prepared import (
    FORMAT,
    INDEX_FILE,
    PreparedItem,
    bad_sample_members,
    complete_shards,
    file_sha256,
    read_index,
    sample_key,
    sample_members,
    shard_name,
    tensor_sha256,
    write_index,
    write_shard,
)
from modal_core.data.segments import Media, Sample
from modal_core.data.shards import BadShard, ShardRecord, read_shard
from modal_core.data.streaming import ShardSource
from modal_core.errors import DataError, RecipeError
from modal_core.modality import VariableItem
from modal_core.plugins import PluginManager

FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
PREPARED_DATASET = "prepared"
"""The registered data set that reads a prepared folder back."""
PREPARED_RECIPE = "recipe.yaml"
"""The recipe `modal-core prepare` writes next to the folders: the input recipe, every
prepared source replaced by its folder."""


@dataclass(frozen=True)
class PreparedSource:
    """One data source after preparation: where its folder is and what it holds
    (`folder` is None for a source with nothing to encode, left as it was)."""

    index: int
    dataset: str
    folder: Path | None
    samples: int | None  # None: a streaming source left as it was (its length is not known)
    bad_samples: int = 0


def encoder_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of an encoder's weights (its state dict, keys sorted)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor_sha256(tensor).encode())
    return digest.hexdigest()


def prepare(
    recipe: DictConfig,
    plugins: PluginManager,
    output: Path,
    modalities: Sequence[str] = (),
    split: str = "train",
    shard_size: int = 1000,
    batch_size: int = 16,
    device: str = "cpu",
    features_dtype: str = "float32",
    overwrite: bool = False,
) -> list[PreparedSource]:
    """Prepare every source of `recipe.data.sources` under `output/<index>-<dataset>`;
    `modalities` to encode (default: every output modality of the recipe). A folder
    left by an interrupted run of the same preparation is completed, not restarted."""
    if features_dtype not in FEATURE_DTYPES:
        raise RecipeError(f"--features-dtype: expected one of {sorted(FEATURE_DTYPES)}, got {features_dtype!r}")
    assembled = _encoders(recipe, plugins)
    chosen = _chosen_modalities(recipe, assembled, modalities)
    model = assembled.model.to(device).eval()
    hashes = {name: encoder_sha256(model.encoders[name]) for name in chosen}
    results = []
    for index, source in enumerate(recipe.data.sources):
        dataset = data_source(recipe, plugins, index, split)
        if not _holds_any(dataset, chosen):
            results.append(PreparedSource(index, source.dataset, None, None if isinstance(dataset, ShardSource) else len(dataset)))
            continue
        spec = {
            "format": FORMAT,
            "dataset": source.dataset,
            "options": recipe_to_dict(source.options),
            "split": split,
            "seed": recipe.seed,
            "shard_size": shard_size,
            "features_dtype": features_dtype,
            "encoders": hashes,
        }
        folder = output / f"{index:02d}-{source.dataset}"
        index_data = _open_folder(folder, spec, overwrite)
        writer = _SourceWriter(assembled, chosen, FEATURE_DTYPES[features_dtype], device, recipe.data.on_bad_sample == "skip")
        samples, bad = writer.write(dataset, folder, index_data, batch_size, f"data.sources[{index}] {source.dataset}")
        results.append(PreparedSource(index, source.dataset, folder, samples, bad))
    return results


def prepared_recipe(recipe: DictConfig, results: list[PreparedSource]) -> DictConfig:
    """The recipe with each prepared source read from its folder (same weights)."""
    sources = []
    for result in results:
        source = recipe_to_dict(recipe.data.sources[result.index])
        if result.folder is not None:
            source = {"dataset": PREPARED_DATASET, "weight": source["weight"], "options": {"path": str(result.folder.resolve())}}
        sources.append(source)
    return OmegaConf.merge(recipe, {"data": {"sources": sources}})


def _encoders(recipe: DictConfig, plugins: PluginManager) -> Assembled:
    """The model training would start from (same checkpoint or same seeded init)."""
    random.seed(recipe.seed)
    np.random.seed(recipe.seed % 2**32)
    torch.manual_seed(recipe.seed)
    start = store.verify(store.resolve_checkpoint(recipe.init_from)) if recipe.init_from else None
    tokenizer = prepare_tokenizer(recipe, plugins, start)
    return assemble(recipe, plugins, tokenizer, init_from=start)


def _chosen_modalities(recipe: DictConfig, assembled: Assembled, names: Sequence[str]) -> list[str]:
    runtimes = assembled.modalities
    chosen = list(names) or [name for name, runtime in runtimes.items() if runtime.spec.direction == "output"]
    if not chosen:
        raise RecipeError("prepare: the recipe has no output modality; name the input modalities to cache with --modalities")
    unknown = [name for name in chosen if name not in runtimes]
    if unknown:
        raise RecipeError(f"--modalities: {unknown} are not modalities of this recipe; it has {sorted(runtimes)}")
    assembled.model.set_trainable(list(recipe.train))
    trained = [name for name in chosen if any(p.requires_grad for p in assembled.model.encoders[name].parameters())]
    if trained:
        raise RecipeError(
            f"prepare: the encoders of {trained} train in this recipe (train: {list(recipe.train)}); their outputs change "
            "every step and cannot be cached"
        )
    return chosen


def _loaders(dataset: Dataset | ShardSource) -> Iterator[Callable[[], Sample]]:
    """The source's samples in order, each as a function that builds it (or raises the
    `DataError` of a bad one): map-style items by index, shards record by record."""
    if isinstance(dataset, ShardSource):
        for shard in dataset.shards:
            for record in read_shard(shard):
                yield partial(_shard_sample, dataset, record)
    else:
        for item in range(len(dataset)):
            yield partial(dataset.__getitem__, item)


def _shard_sample(source: ShardSource, record: ShardRecord | BadShard) -> Sample:
    if isinstance(record, BadShard):
        raise record.error
    return replace(source.make(record), source=record.where)


def _holds_any(dataset: Dataset | ShardSource, modalities: list[str]) -> bool:
    """Whether the source's first sample has an item of a chosen modality to encode."""
    first = next(_loaders(dataset))()
    return any(isinstance(s, Media) and s.modality in modalities and s.payload is not None for s in first.segments)


def _open_folder(folder: Path, spec: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The index to continue from: the folder's own when it was prepared the same way,
    else a fresh one (refusing to replace another preparation unless `overwrite`)."""
    if folder.exists() and any(folder.iterdir()):
        if (folder / INDEX_FILE).is_file():
            index = read_index(folder)
            same = all(index.get(key) == value for key, value in spec.items())
            if same:
                index["shards"] = list(complete_shards(folder, index))
                return index
        if not overwrite:
            raise RecipeError(
                f"{folder} already holds another preparation (other data, options or encoders); "
                "choose another --output or pass --overwrite to replace it"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {**spec, "shards": [], "samples": None}


class _SourceWriter:
    """Encodes one source's samples batch by batch and writes them shard by shard."""

    def __init__(self, assembled: Assembled, modalities: list[str], features_dtype: torch.dtype, device: str, skip_bad: bool) -> None:
        self.model, self.runtimes = assembled.model, assembled.modalities
        self.modalities, self.features_dtype = set(modalities), features_dtype
        self.device, self.skip_bad = device, skip_bad

    def write(self, dataset: Dataset | ShardSource, folder: Path, index: dict[str, Any], batch_size: int, label: str) -> tuple[int, int]:
        """Write the missing shards of `dataset` into `folder`; returns the number of
        samples and of those recorded as bad (their record names the reason; reading one
        raises it). Samples before the first missing shard are skipped unread (map-style)
        or read but not built (shards)."""
        shard_size = index["shard_size"]
        count = len(index["shards"]) * shard_size
        total = None if isinstance(dataset, ShardSource) else len(dataset)
        bad, chunk, pending = 0, [], []
        with tqdm(total=total, initial=count, desc=f"prepare {label}", unit="sample") as progress:
            for load in itertools.islice(_loaders(dataset), count, None):
                chunk.append((count, load))
                count += 1
                if len(chunk) == batch_size or count % shard_size == 0:
                    encoded, failures = self._encode_chunk(chunk)
                    pending, bad = pending + encoded, bad + failures
                    progress.update(len(chunk))
                    chunk = []
                if count % shard_size == 0:
                    index["shards"].append(write_shard(folder / shard_name(count // shard_size - 1), pending))
                    write_index(folder, index)
                    pending = []
            if chunk:
                encoded, failures = self._encode_chunk(chunk)
                pending, bad = pending + encoded, bad + failures
                progress.update(len(chunk))
            if pending:
                index["shards"].append(write_shard(folder / shard_name(len(index["shards"])), pending))
        index["samples"] = count
        write_index(folder, index)
        return count, bad

    def _encode_chunk(self, chunk: list[tuple[int, Callable[[], Sample]]]) -> tuple[list[dict[str, bytes]], int]:
        """Tar members of the samples at `indices`; a bad sample (unreadable, or an item
        its processor refuses) is kept as a record of its error when skipping."""
        loaded: list[tuple[int, Sample, dict[int, PreparedItem], dict[int, torch.Tensor]]] = []
        members, failures = {}, 0
        for item, load in chunk:
            try:
                sample = load()
                items, payloads = self._items(sample)
                loaded.append((item, sample, items, payloads))
            except DataError as error:
                if not self.skip_bad:
                    raise
                failures += 1
                members[item] = bad_sample_members(sample_key(item), str(error))
        by_modality: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
        for item, sample, _, payloads in loaded:
            for position, payload in payloads.items():
                by_modality.setdefault(sample.segments[position].modality, []).append((item, position, payload))
        outputs: dict[tuple[int, int], torch.Tensor] = {}
        with torch.inference_mode():
            for modality, entries in by_modality.items():
                stacked = torch.stack([payload for _, _, payload in entries]).to(self.device)
                result = self.model.encode(modality, stacked).cpu()
                result = result.to(torch.int32) if not result.is_floating_point() else result.to(self.features_dtype)
                outputs.update({(item, position): result[k] for k, (item, position, _) in enumerate(entries)})
        for item, sample, items, payloads in loaded:
            for position in payloads:
                items[position].tensor = outputs[(item, position)]
            members[item] = sample_members(sample_key(item), sample, items)
        return [members[item] for item, _ in chunk], failures

    def _items(self, sample: Sample) -> tuple[dict[int, PreparedItem], dict[int, torch.Tensor]]:
        """How each media item of a sample is stored, and the processed payloads of those
        to encode (by segment index)."""
        items: dict[int, PreparedItem] = {}
        payloads: dict[int, torch.Tensor] = {}
        for position, segment in enumerate(sample.segments):
            if not isinstance(segment, Media) or segment.payload is None:
                continue
            raw, runtime = segment.payload, self.runtimes.get(segment.modality)
            if runtime is None:
                raise DataError(f"{sample.source}: modality {segment.modality!r} is not in this recipe")
            path = str(Path(raw).resolve()) if isinstance(raw, (str, Path)) else None
            processed = raw if isinstance(raw, torch.Tensor) else runtime.processor(raw)
            if isinstance(processed, VariableItem):
                raise RecipeError(
                    f"modality {segment.modality!r} lays out items of varying size (e.g. image tiling); `modal-core prepare` "
                    "stores fixed-size items only: train on its raw data instead"
                )
            checksum = file_sha256(Path(path)) if path else tensor_sha256(processed)
            if segment.modality in self.modalities:
                items[position] = PreparedItem(encoded=True, path=path, checksum=checksum)
                payloads[position] = processed
            elif path is not None:
                items[position] = PreparedItem(path=path, checksum=checksum)
            else:  # an in-memory item (a rendered image): kept as its processed tensor
                items[position] = PreparedItem(tensor=processed, checksum=checksum)
        return items, payloads
