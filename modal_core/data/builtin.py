"""Data sets and evaluation suites that ship with the core, registered through the same
hooks as plugins'."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from modal_core.data.chat import plain_text
from modal_core.data.image_datasets import IMAGE_DATASETS, IndexedDataset
from modal_core.data.jsonl import read_jsonl
from modal_core.data.segments import Sample
from modal_core.data.shapes import text_corpus
from modal_core.errors import DataError
from modal_core.hookspecs import hookimpl


class TextDataset(Dataset):
    """Plain text, each item one fully supervised sample."""

    def __init__(self, texts: list[str], source: str) -> None:
        self.texts, self.source = texts, source

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> Sample:
        sample = plain_text(self.texts[index])
        return Sample(sample.segments, source=f"{self.source}[{index}]")


def shapes_text(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """The built-in shapes-world corpus. Options: `num_sentences` (default 20000)."""
    count = int(options.get("num_sentences", 20000))
    offset = 0 if split == "train" else 1_000_003  # held-out text uses other sentences
    return TextDataset(text_corpus(count, seed + offset), source="shapes_text")


def jsonl_text(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Text from a local JSONL file, one `{"text": ...}` object per line. Options: `path`."""
    path = options.get("path")
    if not path:
        raise DataError('data source jsonl_text needs options.path: a local JSONL file of {"text": ...} lines')
    records = read_jsonl(path, required=("text",))
    return IndexedDataset(len(records), lambda index: plain_text(str(records[index]["text"])), str(path))


@hookimpl
def modal_core_datasets() -> dict[str, Any]:
    return {"shapes_text": shapes_text, "jsonl_text": jsonl_text, **IMAGE_DATASETS}


@hookimpl
def modal_core_evaluators() -> dict[str, Any]:
    # Imported here: the suites pull in the evaluation stack, which listing plugins does not need.
    from modal_core.evaluation.generation_suites import evaluate_fid, evaluate_geneval, evaluate_shapes_geneval
    from modal_core.evaluation.understanding_suites import evaluate_multiple_choice, evaluate_pope, evaluate_vqa

    return {
        "vqa": evaluate_vqa,
        "multiple_choice": evaluate_multiple_choice,
        "pope": evaluate_pope,
        "geneval": evaluate_geneval,
        "shapes_geneval": evaluate_shapes_geneval,
        "fid": evaluate_fid,
    }
