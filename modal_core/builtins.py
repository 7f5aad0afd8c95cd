"""The core's own data sets, registered through the same hooks as any plugin's.

The plugin manager loads this module by name (as pytest loads its default plugins), so
the manager itself imports no data code.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from modal_core.data.chat import plain_text
from modal_core.data.conversation_files import conversation_file
from modal_core.data.indexed import IndexedDataset, TextDataset
from modal_core.data.jsonl import read_jsonl
from modal_core.data.prepared import PreparedDataset
from modal_core.data.shapes_text import text_corpus
from modal_core.data.streaming import ShardSource
from modal_core.errors import DataError
from modal_core.hookspecs import hookimpl


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
    records = read_jsonl(path, required={"text": str})
    return IndexedDataset(len(records), lambda index: plain_text(str(records[index]["text"])), str(path))


def prepared(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """A folder written by `modal-core prepare` (cached codes / features). Options: `path`."""
    path = options.get("path")
    if not path:
        raise DataError("data source prepared needs options.path: a folder written by `modal-core prepare`")
    return PreparedDataset(path)


def conversations(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Conversations from a LLaVA / ShareGPT JSON or JSONL file, or an OpenAI-style
    messages JSONL file (see `modal_core.data.conversation_files`). Options: `path`,
    `placeholders` (placeholder -> input modality, e.g. `{"<image>": my_encoder}`),
    `generate` (placeholder -> output modality of assistant turns), `media_root`."""
    return conversation_file(options)


def webdataset_text(options: dict[str, Any], seed: int, split: str) -> ShardSource:
    """Text streamed from WebDataset tar shards, one `{key}.txt` member per sample.
    Options: `path` (a shard, a brace pattern, an fsspec URL, or a list of these)."""
    path = options.get("path")
    if not path:
        raise DataError("data source webdataset_text needs options.path: .tar shards (a path, a brace pattern or an fsspec URL)")
    return ShardSource(path, lambda record: plain_text(record.value("txt")), f"webdataset_text {path}")


@hookimpl
def modal_core_datasets() -> dict[str, Any]:
    return {
        "shapes_text": shapes_text,
        "jsonl_text": jsonl_text,
        "conversations": conversations,
        "prepared": prepared,
        "webdataset_text": webdataset_text,
    }
