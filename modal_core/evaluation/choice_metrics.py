"""Scoring closed-form answers: multiple choice (MMBench / SEED style) and POPE yes/no.

Multiple choice. A free-form answer is mapped to an option letter under one of two
protocols (`CHOICE_PROTOCOLS`); an answer mapped to no letter counts as wrong.

- ``vlmevalkit-exact`` (the default): VLMEvalKit's exact-matching mode (`can_infer`,
  used when no judge model is configured). The answer, with ``.()[],:;!*#{}`` turned
  into spaces, is split into words; if exactly one option letter is among them and its
  first occurrence is among the last four words, that letter; an answer naming no
  letter but a lone ``Z``, or a refusal phrase, is VLMEvalKit's "no answer"; then
  ``answer is X`` / ``correct answer is **X**`` (X in A-D, any case); then, for an
  answer at most twice as long as all option texts together, the one option whose
  text it contains (case-insensitive substring).
- ``lenient`` (modal-core's own reading, more forgiving): (1) a leading letter such as
  ``"B"``, ``"B."``, ``"(B)"`` or ``"B: a cat"``; (2) the one option whose text the
  answer contains (word-bounded, case-insensitive; among several, the one equal to the
  whole answer); (3) the one valid capital letter standing alone in the answer.

Circular evaluation (MMBench) asks a question once per option, the options rotated one
place each time, and counts it correct only when every rotation is answered correctly.

POPE. An answer is "no" when its first sentence (commas removed) contains the word
"no", "No" or "not", otherwise "yes" — the rule of the official POPE evaluation; "yes"
is the positive class of precision, recall and F1.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from modal_core.errors import DataError

LETTERS = string.ascii_uppercase
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Z])\)?(?:\s*$|[.:)\]]|,)")
_LONE_LETTER = re.compile(r"\b([A-Z])\b")
CHOICE_REFERENCES = {
    "vlmevalkit-exact": "open-compass/VLMEvalKit@e8e78f05f3080fe28154f2130321f17951c3be94 vlmeval/utils/matching_util.py (can_infer)",
    "lenient": "modal-core's own reading (no external reference)",
}
"""The code each multiple-choice protocol reproduces (repository@commit path)."""
CHOICE_PROTOCOLS = tuple(CHOICE_REFERENCES)
"""The answer-extraction protocols of multiple choice; the first is the default."""
POPE_REFERENCE = "RUCAIBox/POPE@3df3ba1b110ecce25696989577fad583b67d4239 evaluate.py"
"""The code `pope_answer` and `YesNoCounts` reproduce."""
_VLMEVALKIT_SEPARATORS = str.maketrans({mark: " " for mark in ".()[],:;!*#{}"})
_VLMEVALKIT_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_VLMEVALKIT_STATED = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_VLMEVALKIT_NO_ANSWER = "Z"
_VLMEVALKIT_LAST_WORDS = 4


def option_letters(count: int) -> str:
    """The letters of `count` options: ``"ABCD"`` for four."""
    if not 2 <= count <= len(LETTERS):
        raise DataError(f"a multiple-choice question needs 2 to {len(LETTERS)} options, got {count}")
    return LETTERS[:count]


def extract_choice(answer: str, options: Sequence[str], protocol: str = "vlmevalkit-exact") -> str | None:
    """The option letter that `answer` picks among `options` (texts in letter order)
    under `protocol` (one of `CHOICE_PROTOCOLS`), or None."""
    letters = option_letters(len(options))
    if protocol == "vlmevalkit-exact":
        chosen = _vlmevalkit_letter(answer, letters) or _vlmevalkit_text(answer, letters, options)
        return chosen if chosen is not None and chosen in letters else None
    if protocol == "lenient":
        return _lenient_choice(answer, letters, options)
    raise ValueError(f"unknown multiple-choice protocol {protocol!r}; expected one of {', '.join(CHOICE_PROTOCOLS)}")


def _vlmevalkit_letter(answer: str, letters: str) -> str | None:
    """VLMEvalKit's `can_infer_option`: a letter named as a word near the end, a refusal
    ("Z"), or a stated ``answer is X``."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in _VLMEVALKIT_REFUSALS):
        return _VLMEVALKIT_NO_ANSWER
    words = answer.translate(_VLMEVALKIT_SEPARATORS).split()
    named = [letter for letter in letters if letter in words]
    if len(named) == 1 and words.index(named[0]) >= len(words) - _VLMEVALKIT_LAST_WORDS:
        return named[0]
    if not named and _VLMEVALKIT_NO_ANSWER in words:
        return _VLMEVALKIT_NO_ANSWER
    stated = _VLMEVALKIT_STATED.search(answer)
    if stated and stated.group(1).upper() in letters:
        return stated.group(1).upper()
    return None


def _vlmevalkit_text(answer: str, letters: str, options: Sequence[str]) -> str | None:
    """VLMEvalKit's `can_infer_text`: the one option whose text a short answer contains."""
    lowered = answer.lower()
    if len(lowered) > 2 * sum(len(text) for text in options):
        return None
    contained = [letter for letter, text in zip(letters, options) if text.lower() in lowered]
    return contained[0] if len(contained) == 1 else None


def _lenient_choice(answer: str, letters: str, options: Sequence[str]) -> str | None:
    leading = _LEADING_LETTER.match(answer)
    if leading and leading.group(1) in letters:
        return leading.group(1)
    lowered = answer.lower()
    named = [
        letter
        for letter, text in zip(letters, options)
        if text.strip() and re.search(rf"(?<!\w){re.escape(text.strip().lower())}(?!\w)", lowered)
    ]
    if len(named) == 1:
        return named[0]
    exact = [letter for letter in named if options[letters.index(letter)].strip().lower() == lowered.strip().rstrip(".")]
    if len(exact) == 1:
        return exact[0]
    alone = {letter for letter in _LONE_LETTER.findall(answer) if letter in letters}
    return alone.pop() if len(alone) == 1 else None


def rotate_options(options: Sequence[str], answer_index: int, shift: int) -> tuple[list[str], int]:
    """`options` rotated left by `shift` places, and where the right answer lands."""
    count = len(options)
    rotated = [options[(index + shift) % count] for index in range(count)]
    return rotated, (answer_index - shift) % count


def format_choice_prompt(question: str, options: Sequence[str], hint: str | None = None, instruction: str = "") -> str:
    """MMBench-style prompt: optional hint, the question, one ``"A. text"`` line per option,
    then the instruction (if any)."""
    lines = [hint] if hint else []
    lines.append(question)
    lines += [f"{letter}. {text}" for letter, text in zip(option_letters(len(options)), options)]
    if instruction:
        lines.append(instruction)
    return "\n".join(lines)


def pope_answer(text: str) -> str:
    """``"yes"`` or ``"no"``: the official POPE reading of a free-form answer."""
    first_sentence = text.split(".")[0] if "." in text else text
    words = first_sentence.replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


@dataclass(frozen=True)
class YesNoCounts:
    """Confusion counts with "yes" as the positive class."""

    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int

    @classmethod
    def of(cls, predictions: Sequence[str], labels: Sequence[str]) -> YesNoCounts:
        """Count `predictions` against `labels`, both ``"yes"``/``"no"`` strings."""
        if len(predictions) != len(labels):
            raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
        for value in (*predictions, *labels):
            if value not in ("yes", "no"):
                raise ValueError(f"expected 'yes' or 'no', got {value!r}")
        pairs = list(zip(predictions, labels))
        return cls(
            true_positive=pairs.count(("yes", "yes")),
            false_positive=pairs.count(("yes", "no")),
            true_negative=pairs.count(("no", "no")),
            false_negative=pairs.count(("no", "yes")),
        )

    def metrics(self) -> dict[str, float | int]:
        """Accuracy, precision, recall, F1 and the share of "yes" answers (POPE's table);
        a ratio with a zero denominator is reported as 0."""
        tp, fp, tn, fn = self.true_positive, self.false_positive, self.true_negative, self.false_negative
        total = tp + fp + tn + fn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        return {
            "accuracy": (tp + tn) / total if total else 0.0,
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": (tp + fp) / total if total else 0.0,
            "count": total,
            "true_positive": tp,
            "false_positive": fp,
            "true_negative": tn,
            "false_negative": fn,
        }
