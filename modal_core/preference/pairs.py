"""DPO's preference file: `{"prompt", "chosen", "rejected"}` JSONL records, the two items
paths of files the output modality's processor reads (relative to the file), tokenised
into codes once by the modality's own encoder (the VQ tokenizer for images)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from modal_core.data.collator import ModalityRuntime
from modal_core.data.jsonl import read_jsonl
from modal_core.errors import DataError
from modal_core.model.unified import UnifiedModel

ENCODE_BATCH = 64


@dataclass
class PreferencePairs:
    """Prompts (P,) with the codes (P, N) of their chosen and rejected items."""

    prompts: list[str]
    chosen: torch.Tensor
    rejected: torch.Tensor

    def take(self, start: int, count: int) -> PreferencePairs:
        """`count` pairs from position `start`, wrapping around the file."""
        index = torch.arange(start, start + count) % len(self.prompts)
        return PreferencePairs([self.prompts[i] for i in index.tolist()], self.chosen[index], self.rejected[index])


def _item(base: Path, value: str, where: str) -> Path:
    path = (base / value).expanduser()
    if not path.is_file():
        raise DataError(f"{where}: file not found: {path}")
    return path


@torch.no_grad()
def read_pairs(path: str | Path, model: UnifiedModel, modality: str, runtime: ModalityRuntime) -> PreferencePairs:
    """Read a preference file and encode every item with `modality`'s encoder."""
    records = read_jsonl(path, required={"prompt": str, "chosen": str, "rejected": str})
    if not len(records):
        raise DataError(f"{path}: the preference file holds no pairs")
    base = Path(path).parent
    device = next(model.parameters()).device
    payloads = {"chosen": [], "rejected": []}
    for index in range(len(records)):
        for side in payloads:
            payloads[side].append(runtime.processor(_item(base, records[index][side], f"{records.where(index)} {side!r}")))
    codes = {}
    for side, items in payloads.items():
        parts = [model.encode(modality, torch.stack(items[i : i + ENCODE_BATCH]).to(device)) for i in range(0, len(items), ENCODE_BATCH)]
        codes[side] = torch.cat(parts).long()
    return PreferencePairs([str(records[i]["prompt"]) for i in range(len(records))], codes["chosen"], codes["rejected"])
