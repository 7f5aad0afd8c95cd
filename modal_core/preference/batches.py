"""Batches of preference tuning: the generation prompts of a batch, and the rest of
it as an ordinary supervised batch.

The recipe's `data.sources` feed preference tuning as they feed supervised training. A
text-to-item sample (`caption_to_image`) contributes its caption as a prompt (its item
is not used); any other sample (a question about an image, plain text) is collated for
the next-token loss that keeps understanding and text in shape while tuning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modal_core.data.chat import ASSISTANT, USER
from modal_core.data.collator import Batch, Collator
from modal_core.data.segments import Media, Sample, Text
from modal_core.errors import DataError


@dataclass
class PromptBatch:
    """Generation prompts (with the data source of each, for rewards' metadata) and the
    collated batch of the other samples, or None when every sample was a prompt."""

    prompts: list[str]
    sources: list[str]
    supervised: Batch | None


def caption_of(sample: Sample, modality: str) -> str | None:
    """The caption of a text-to-item sample of `modality` made by `caption_to_image`
    (None for any other sample): the inverse of that template."""
    if len(sample.segments) != 2:
        return None
    text, item = sample.segments
    if not (isinstance(text, Text) and isinstance(item, Media) and item.modality == modality and item.supervised):
        return None
    prefix, suffix = f"{USER}: ", f"\n\n{ASSISTANT}:"
    if not (text.text.startswith(prefix) and text.text.endswith(suffix)):
        raise DataError(f"{sample.source or 'a data set'}: a generation sample not in the chat template ({text.text[:80]!r})")
    return text.text[len(prefix) : -len(suffix)]


class PromptCollator:
    """Splits a list of samples into a `PromptBatch` (used as the data loader's collate_fn)."""

    def __init__(self, collator: Collator, modality: str) -> None:
        self.collator, self.modality = collator, modality

    def __call__(self, samples: Sequence[Sample]) -> PromptBatch:
        prompts, sources, others = [], [], []
        for sample in samples:
            caption = caption_of(sample, self.modality)
            if caption is None:
                others.append(sample)
            else:
                prompts.append(caption)
                sources.append(sample.source)
        return PromptBatch(prompts, sources, self.collator(others) if others else None)
