"""The Lightning data module: the task mix as an endless stream, resumable by step
(map-style mixes by stream position, mixes with streaming sources by reader, see
`modal_core.data.streaming`)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset

from modal_core.data.collator import Collator
from modal_core.data.mixture import MixtureDataset, StreamSampler
from modal_core.data.streaming import ReaderStream, StreamingMixture
from modal_core.errors import RecipeError


class FirstItems(Dataset):
    """The first `count` items of an endless data set (a fixed validation set)."""

    def __init__(self, dataset: Dataset, count: int) -> None:
        self.dataset, self.count = dataset, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return self.dataset[index]


class MixtureDataModule(L.LightningDataModule):
    """Serves the training mix from the position the trainer has reached.

    Each optimizer step consumes `batch_size * accumulate * world_size` stream items.
    A map-style mix: rank r reads positions base + i * world_size + r, so ranks never
    repeat an item. A mix with streaming sources: each worker of each rank reads its own
    reader's stream from the sample it had reached (`ReaderStream`).
    """

    def __init__(
        self,
        train: MixtureDataset | StreamingMixture,
        collator: Collator,
        batch_size: int,
        num_workers: int = 0,
        validation: MixtureDataset | StreamingMixture | None = None,
        val_samples: int = 0,
    ) -> None:
        super().__init__()
        self.train_set, self.collator = train, collator
        self.batch_size, self.num_workers = batch_size, num_workers
        self.validation, self.val_samples = validation, val_samples

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world = trainer.world_size if trainer else 1
        rank = trainer.global_rank if trainer else 0
        step = trainer.global_step if trainer else 0
        accumulate = trainer.accumulate_grad_batches if trainer else 1
        if isinstance(self.train_set, StreamingMixture):
            stream = ReaderStream(self.train_set, rank, world, self.num_workers, self.batch_size, batches_done=step * accumulate)
            return DataLoader(
                stream,
                batch_size=self.batch_size,
                collate_fn=self.collator,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        base = step * self.batch_size * accumulate * world
        sampler = StreamSampler(start=base, stride=world, offset=rank)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def state_dict(self) -> dict[str, int]:
        """For a streaming mix, how many readers split its shards: a resumed run replays
        each reader's stream, which only holds for the same split."""
        return {"readers": self._readers()} if isinstance(self.train_set, StreamingMixture) else {}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Refuse to resume a streaming mix over another number of readers."""
        saved = state_dict.get("readers")
        if saved is not None and saved != self._readers():
            raise RecipeError(
                f"resume: the run read its shards with {saved} readers (devices x nodes x max(1, data.num_workers)), "
                f"this run would use {self._readers()}; resume with the run's trainer.devices, trainer.num_nodes and data.num_workers"
            )

    def _readers(self) -> int:
        world = self.trainer.world_size if self.trainer else 1
        return world * max(1, self.num_workers)

    def val_dataloader(self) -> Sequence[DataLoader]:
        if self.validation is None or self.val_samples <= 0:
            return []
        if isinstance(self.validation, StreamingMixture):
            items = self.validation.first(self.val_samples)
        else:
            items = FirstItems(self.validation, self.val_samples)
        return DataLoader(
            items,
            batch_size=self.batch_size,
            collate_fn=self.collator,
            num_workers=self.num_workers,
        )
