"""Text tokenizers: train a byte-level BPE with the `tokenizers` library, or load one
from a local directory, and make sure every special token the recipe needs exists."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from modal_core.data.chat import BOS, CHAT_TOKENS, EOS, PAD
from modal_core.errors import DataError

BASE_SPECIAL_TOKENS = (BOS, EOS, PAD, *CHAT_TOKENS)


def train_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str]) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` with BOS/EOS/PAD, the chat role
    tokens and `special_tokens` as unsplittable added tokens."""
    specials = list(dict.fromkeys([*BASE_SPECIAL_TOKENS, *special_tokens]))
    return _wrap(train_byte_level_bpe(texts, vocab_size, specials))


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts`; `special_tokens` take
    the first ids, in order."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    base = len(pre_tokenizers.ByteLevel.alphabet()) + len(special_tokens)
    if vocab_size <= base:
        warnings.warn(
            f"tokenizer.train.vocab_size {vocab_size} leaves no room for merges: byte-level BPE starts from "
            f"{len(pre_tokenizers.ByteLevel.alphabet())} byte tokens and {len(special_tokens)} special tokens ({base}), "
            "so every character stays one token; choose a vocab_size well above it",
            UserWarning,
            stacklevel=2,
        )
    return tokenizer


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def load_tokenizer(directory: str | Path, special_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Load `tokenizer.json` from a local directory; add missing special tokens."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"no tokenizer at {path}: expected a Hugging Face fast tokenizer file `tokenizer.json`")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), **declared_special_tokens(Path(directory)))
    missing = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    tokenizer.add_special_tokens({k: v for k, v in missing.items() if getattr(tokenizer, k) is None})
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t in [*CHAT_TOKENS, *special_tokens] if t not in tokenizer.get_vocab()]}
    )
    return tokenizer


def declared_special_tokens(directory: Path) -> dict[str, str]:
    """BOS/EOS/PAD named by the directory's `tokenizer_config.json` (a pretrained
    tokenizer, e.g. DeepSeek's `<｜begin▁of▁sentence｜>`), so they are not replaced by ours."""
    config_path = directory / "tokenizer_config.json"
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{config_path} is not valid JSON ({error})") from error
    declared = {}
    for key in ("bos_token", "eos_token", "pad_token"):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            declared[key] = value
    return declared


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> None:
    """Write `tokenizer.json` (and the transformers side files) into `directory`."""
    tokenizer.save_pretrained(str(directory))
