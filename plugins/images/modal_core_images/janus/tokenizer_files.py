"""Tokenizer and processor files on both sides of a conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import JanusImageProcessorPil, JanusProcessor, PreTrainedTokenizerFast

from modal_core.data.chat import ASSISTANT, CHAT_TOKENS, USER
from modal_core.data.text_tokenizer import load_tokenizer
from modal_core.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}

# The official Janus prompt format (deepseek-ai/Janus, "deepseek" template): roles with a
# colon, an image followed by a newline, user turns ending in a blank line, assistant
# turns in the end-of-sentence token; a system message is its text and a blank line (no
# role name, as the official code renders it); `add_generation_prompt` opens the
# assistant turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '" + USER + ": ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '" + ASSISTANT + ": ' }}{%- endif -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image_placeholder>{{ '\\n' if not loop.last else '' }}"
    "{%- else -%}{{ part['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ eos_token if message['role'] == 'assistant' else '\\n\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + ":{%- endif -%}"
)


def copy_tokenizer(source: Path, destination: Path, special_tokens: list[str], pad_token_id: int | None) -> None:
    """Copy a Hugging Face tokenizer into a modal-core checkpoint, check that it already
    has every token modal-core needs, and make its pad token the one CFG uses."""
    if not (source / "tokenizer.json").is_file():
        raise CheckpointError(f"{source} has no tokenizer.json (a Hugging Face fast tokenizer); copy it next to the weights")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)
    vocabulary = PreTrainedTokenizerFast(tokenizer_file=str(source / "tokenizer.json")).get_vocab()
    missing = [token for token in [*CHAT_TOKENS, *special_tokens] if token not in vocabulary]
    if missing:
        raise CheckpointError(f"{source}/tokenizer.json lacks the tokens {missing}; a Janus tokenizer has them as single tokens")
    if pad_token_id is not None:
        pad = {index: token for token, index in vocabulary.items()}.get(pad_token_id)
        if pad is None:
            raise CheckpointError(f"{source}: generation_config pad_token_id {pad_token_id} is not in the tokenizer")
        config_path = destination / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        config["pad_token"] = pad  # the unconditional CFG prompt is made of this token
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    if len(load_tokenizer(destination, special_tokens)) != len(vocabulary):
        raise CheckpointError(f"{source}: the tokenizer's BOS/EOS/PAD are not declared in tokenizer_config.json")


def save_processor(
    checkpoint: Path, destination: Path, special_tokens: list[str], image_size: int, num_image_tokens: int, system_prompt: bool
) -> PreTrainedTokenizerFast:
    """Write the tokenizer and `JanusProcessor` files of an exported model; returns the
    tokenizer (its ids fill the exported config)."""
    ours = load_tokenizer(checkpoint, special_tokens)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=ours.backend_tokenizer,
        bos_token=ours.bos_token,
        eos_token=ours.eos_token,
        pad_token=ours.pad_token,
        extra_special_tokens=IMAGE_TOKENS,
        padding_side="left",
    )
    janus_processor(tokenizer, image_size, num_image_tokens, system_prompt, CHAT_TEMPLATE).save_pretrained(str(destination))
    return tokenizer


def janus_processor(
    tokenizer: PreTrainedTokenizerFast, image_size: int, num_image_tokens: int, system_prompt: bool, chat_template: str | None = None
) -> JanusProcessor:
    """A `JanusProcessor` for square `image_size` images normalised to [-1, 1], as Janus's."""
    image_processor = JanusImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3, do_normalize=True
    )
    return JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template,
        use_default_system_prompt=system_prompt,
        num_image_tokens=num_image_tokens,
    )
