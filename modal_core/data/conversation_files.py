"""Conversation data files: LLaVA / ShareGPT and OpenAI-style `messages` records.

One file (a JSON list or JSONL) may mix both kinds; each record is told apart by its key:

- LLaVA / ShareGPT: `{"id": ..., "image": "a.png" | [...], "conversations": [{"from":
  "human" | "gpt" | "system" | "user" | "assistant", "value": "<image>\\nWhat is it?"}]}`;
- OpenAI style: `{"messages": [{"role": "system" | "user" | "assistant", "content": str |
  [{"type": "text", "text": ...}, {"type": "image"}, {"type": "image", "image": "b.png"}]}],
  "images": [...]}`; an `image` part without a path takes the next entry of `images`.

Placeholders map to modalities through the data set's options, never by name here:
`placeholders` maps a placeholder (`<image>`) to the input modality of the items it
stands for in user turns, `generate` maps it to the output modality of the items an
assistant turn generates. A placeholder `<name>` takes its files, in order of
appearance across the conversation, from the record's `name` key (LLaVA) or `names`
key (OpenAI style), whose parts have `"type": "name"`. Paths are relative to
`media_root`, or else to the data file's folder.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from modal_core.data.chat import render_conversation
from modal_core.data.conversation import Conversation, Part, Turn
from modal_core.data.jsonl import read_records
from modal_core.data.segments import Media, Sample
from modal_core.errors import DataError, RecipeError

LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MESSAGE_ROLES = ("system", "user", "assistant")
_PLACEHOLDER = re.compile(r"<(\w+)>")


@dataclass(frozen=True)
class MediaOptions:
    """How a file's placeholders become media items (see the module docstring)."""

    placeholders: Mapping[str, str]
    generate: Mapping[str, str]
    root: Path | None
    """Folder media paths are relative to; None: the data file's folder."""

    def __post_init__(self) -> None:
        for option, mapping in (("placeholders", self.placeholders), ("generate", self.generate)):
            if not isinstance(mapping, Mapping) or not all(isinstance(value, str) for value in mapping.values()):
                raise RecipeError(f"data set option {option}: expected a mapping of placeholder -> modality name, got {mapping!r}")
            for placeholder in mapping:
                if not _PLACEHOLDER.fullmatch(str(placeholder)):
                    raise RecipeError(f"data set option {option}: placeholder {placeholder!r} must look like <name>, e.g. <image>")
        if not self.placeholders and not self.generate:
            raise RecipeError("data set options placeholders / generate: map at least one placeholder (e.g. <image>) to a modality")

    def modality(self, placeholder: str, role: str, where: str) -> str:
        """The modality of `placeholder` in a turn of `role`, or a `DataError`."""
        mapping, option = (self.placeholders, "placeholders") if role == "user" else (self.generate, "generate")
        if placeholder not in mapping:
            raise DataError(f"{where}: {placeholder} in a {role} turn, but the data set's option {option} maps no modality to it")
        return mapping[placeholder]

    def known(self) -> list[str]:
        """Every placeholder either mapping names."""
        return list(dict.fromkeys([*self.placeholders, *self.generate]))


Piece = str | tuple[str, str | None]
"""Text, or a placeholder with the path its part carries (None: the next listed file)."""


class ConversationFile(Dataset):
    """The conversations of one data file, each rendered in the Janus chat format."""

    def __init__(self, path: str | Path, media: MediaOptions) -> None:
        self.records = read_records(path, required=())
        self.media = media

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        return replace(render_conversation(self.conversation(index)), source=self.records.where(index))

    def conversation(self, index: int) -> Conversation:
        """Record `index` as a `Conversation`, or a `DataError` naming file and record."""
        record, where = self.records[index], self.records.where(index)
        known = self.media.known()
        if "conversations" in record:
            turns = _llava_turns(record["conversations"], known, where)
            lists = {placeholder: _listed(record, placeholder[1:-1], where) for placeholder in known}
        elif "messages" in record:
            turns = _message_turns(record["messages"], known, where)
            lists = {placeholder: _listed(record, f"{placeholder[1:-1]}s", where) for placeholder in known}
        else:
            raise DataError(f"{where}: expected a 'conversations' list (LLaVA / ShareGPT) or a 'messages' list (OpenAI style)")
        system = _system_text(turns.pop(0)[1], where) if turns and turns[0][0] == "system" else None
        if any(role == "system" for role, _ in turns):
            raise DataError(f"{where}: a system turn may only open the conversation")
        if not turns:
            raise DataError(f"{where}: empty conversation (no user or assistant turn)")
        if turns[-1][0] != "assistant":
            raise DataError(f"{where}: the conversation ends with a user turn that no assistant turn answers")
        return Conversation(tuple(self._turns(turns, lists, where)), system=system)

    def _turns(self, turns: list[tuple[str, list[Piece]]], lists: dict[str, tuple[str, list]], where: str) -> Iterator[Turn]:
        """The turns with each placeholder replaced by its media item."""
        wanted = Counter(piece[0] for _, pieces in turns for piece in pieces if isinstance(piece, tuple) and piece[1] is None)
        for placeholder, (key, files) in lists.items():
            if wanted[placeholder] != len(files):
                raise DataError(f"{where}: {wanted[placeholder]} {placeholder} placeholder(s) but {len(files)} file(s) in {key!r}")
        queues = {placeholder: iter(files) for placeholder, (_, files) in lists.items()}
        for role, pieces in turns:
            parts: list[Part] = []
            for piece in pieces:
                if isinstance(piece, str):
                    parts.append(piece)
                    continue
                placeholder, path = piece
                modality = self.media.modality(placeholder, role, where)
                file = self._file(next(queues[placeholder]) if path is None else path, where)
                parts.append(Media(modality, file, supervised=role == "assistant"))
            yield Turn(role, tuple(parts))

    def _file(self, relative: Any, where: str) -> Path:
        if not isinstance(relative, str) or not relative:
            raise DataError(f"{where}: a media path must be a non-empty string, got {json.dumps(relative)}")
        path = ((self.media.root or self.records.path.parent) / relative).expanduser()
        if not path.is_file():
            raise DataError(f"{where}: media file not found: {path}")
        return path


def _listed(record: dict[str, Any], key: str, where: str) -> tuple[str, list]:
    """(`key`, the record's paths under `key`): one path or a list of them."""
    value = record.get(key)
    files = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(files, list):
        raise DataError(f"{where}: {key!r} must be a path or a list of paths, got {json.dumps(value)}")
    return key, files


def _llava_turns(turns: Any, known: list[str], where: str) -> list[tuple[str, list[Piece]]]:
    if not isinstance(turns, list):
        raise DataError(f"{where}: 'conversations' must be a list of turns, got {json.dumps(turns)}")
    parsed = []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise DataError(f"{where}: conversations[{number}] must be an object with 'from' and a string 'value'")
        role = LLAVA_ROLES.get(turn.get("from"))
        if role is None:
            raise DataError(f"{where}: conversations[{number}].from is {json.dumps(turn.get('from'))}; expected one of {list(LLAVA_ROLES)}")
        parsed.append((role, _nonempty(_split(turn["value"], known), f"{where}: conversations[{number}]")))
    return parsed


def _message_turns(messages: Any, known: list[str], where: str) -> list[tuple[str, list[Piece]]]:
    if not isinstance(messages, list):
        raise DataError(f"{where}: 'messages' must be a list of messages, got {json.dumps(messages)}")
    parsed = []
    for number, message in enumerate(messages):
        at = f"{where}: messages[{number}]"
        if not isinstance(message, dict):
            raise DataError(f"{at} must be an object with 'role' and 'content'")
        if message.get("role") not in MESSAGE_ROLES:
            raise DataError(f"{at}.role is {json.dumps(message.get('role'))}; expected one of {list(MESSAGE_ROLES)}")
        content = message.get("content")
        if isinstance(content, str):
            pieces = _split(content, known)
        elif isinstance(content, list):
            pieces = [_content_part(part, known, f"{at}.content[{index}]") for index, part in enumerate(content)]
        else:
            raise DataError(f"{at}.content must be a string or a list of parts, got {json.dumps(content)}")
        parsed.append((message["role"], _nonempty(pieces, at)))
    return parsed


def _content_part(part: Any, known: list[str], at: str) -> Piece:
    """A `{"type": "text", "text": ...}` part (trimmed, as the Janus chat template trims
    it) or a media part `{"type": name}`, optionally with its path under `name` or `path`."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return part["text"].strip()
    if f"<{kind}>" in known:
        return f"<{kind}>", part.get(kind) or part.get("path")
    names = ["text", *(placeholder[1:-1] for placeholder in known)]
    raise DataError(f"{at}: expected a part of type {' | '.join(names)} (text parts with a string 'text'), got {json.dumps(part)}")


def _split(text: str, known: list[str]) -> list[Piece]:
    """A turn's string at its placeholders; the line break that follows a placeholder
    (LLaVA's `<image>\\n`) is dropped, as the recipe's `chat.media_separator` supplies it."""
    if not known:
        return [text.strip()]
    pieces: list[Piece] = []
    for index, piece in enumerate(re.split("(" + "|".join(map(re.escape, known)) + ")", text.strip())):
        if index % 2:
            pieces.append((piece, None))
        else:
            pieces.append(piece.removeprefix("\n") if index else piece)
    return pieces


def _nonempty(pieces: list[Piece], at: str) -> list[Piece]:
    pieces = [piece for piece in pieces if piece != ""]
    if not pieces:
        raise DataError(f"{at} is empty")
    return pieces


def _system_text(pieces: list[Piece], where: str) -> str:
    if any(not isinstance(piece, str) for piece in pieces):
        raise DataError(f"{where}: the system turn holds a media item; only text may")
    return "".join(pieces)


def conversation_file(
    options: Mapping[str, Any],
    root_option: str = "media_root",
    placeholders: Mapping[str, str] | None = None,
    generate: Mapping[str, str] | None = None,
) -> ConversationFile:
    """A conversation data set from its options: `path` (the data file), `placeholders`
    and `generate` (default to the given mappings) and `root_option` (the media folder)."""
    path = options.get("path")
    if not path:
        raise DataError("a conversation data set needs options.path: a LLaVA / ShareGPT JSON or JSONL file, or a messages JSONL file")
    root = options.get(root_option)
    media = MediaOptions(
        placeholders=options.get("placeholders", placeholders or {}),
        generate=options.get("generate", generate or {}),
        root=Path(root) if root else None,
    )
    return ConversationFile(path, media)
