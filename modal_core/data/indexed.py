"""Generic map-style data sets that data-set factories (the core's and plugins') build on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch.utils.data import Dataset

from modal_core.data.chat import plain_text
from modal_core.data.segments import Sample


class IndexedDataset(Dataset):
    """`size` samples, item i made by `make(i)` (deterministic per index)."""

    def __init__(self, size: int, make: Callable[[int], Sample], source: str) -> None:
        self.size, self.make, self.source = size, make, source

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Sample:
        return replace(self.make(index), source=f"{self.source}[{index}]")


class TextDataset(Dataset):
    """Plain text, each item one fully supervised sample."""

    def __init__(self, texts: list[str], source: str) -> None:
        self.texts, self.source = texts, source

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> Sample:
        return replace(plain_text(self.texts[index]), source=f"{self.source}[{index}]")
