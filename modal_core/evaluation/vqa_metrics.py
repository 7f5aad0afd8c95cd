"""VQAv2 answer scoring under the two protocols in use: normalisation, soft accuracy, exact match.

Both protocols normalise an answer the same way (the official VQA evaluation's rules,
also the EvalAI answer processor's): newlines and tabs become spaces; punctuation is
removed (or turned into a space when it joins two words); a period not followed by a
digit is dropped; the text is lower-cased; number words up to ten become digits;
articles are dropped; and common contractions written without their apostrophe get it
back ("dont" -> "don't"). They differ in two places:

- ``official`` (GT-Vision-Lab/VQA `vqaEval.py`, the default): when all human answers
  are identical (after stripping whitespace), neither they nor the prediction is
  normalised, so "two" scores 0 against ten "2"s; punctuation vanishes everywhere when
  the text holds a digit, a comma and a digit (``1,000``).
- ``lmms-eval`` (`lmms_eval/tasks/vqav2/utils.py` since 2025): always normalises, and
  the number rule accepts several commas (``1,,2``).

Soft accuracy follows the official definition: with the (usually ten) human answers,
each human in turn is left out and the prediction scores ``min(1, matches / 3)``
against the other answers; the item's accuracy is the mean over the left-out humans.
With ten answers this is 1.0 when at least four humans agree with the prediction,
0.9 for three, 0.6 for two and 0.3 for one. A single reference answer (GQA-style data,
outside VQAv2's protocol, where both references would score every item 0) scores 1.0
when the normalised prediction equals it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
VQA_REFERENCES = {
    "official": "GT-Vision-Lab/VQA@a013f0043c1e2cdc995922dfe257f7149aa9af06 PythonEvaluationTools/vqaEvaluation/vqaEval.py",
    "lmms-eval": "EvolvingLMMs-Lab/lmms-eval@75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3 lmms_eval/tasks/vqav2/utils.py",
}
"""The code each VQAv2 protocol reproduces (repository@commit path)."""
VQA_PROTOCOLS = tuple(VQA_REFERENCES)
"""The VQAv2 scoring protocols; the first is the default."""
_COMMA_IN_NUMBER = {"official": re.compile(r"(\d)(,)(\d)"), "lmms-eval": re.compile(r"(?<=\d)(,)+(?=\d)")}
# The official pattern, kept verbatim: `(?!<=\d)` is a (harmless) typo for a lookbehind, so
# in effect every period not followed by a digit is removed ("3.5" keeps its point). Both
# references pass `re.UNICODE` (32) where `sub` takes its count: at most 32 periods go.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIODS_REMOVED = 32
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The contraction table of the official evaluation (only lower-case keys can ever match,
# since words are lower-cased first).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip


def _check_protocol(protocol: str) -> None:
    if protocol not in VQA_PROTOCOLS:
        raise ValueError(f"unknown VQA protocol {protocol!r}; expected one of {', '.join(VQA_PROTOCOLS)}")


def _strip_punctuation(text: str, protocol: str) -> str:
    out = text
    number_with_comma = _COMMA_IN_NUMBER[protocol].search(text) is not None
    for mark in _PUNCTUATION:
        # A mark next to a space (or any "1,000"-style number in the text) vanishes;
        # one inside a word ("black-white") becomes a space.
        if f"{mark} " in text or f" {mark}" in text or number_with_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIODS_REMOVED)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str, protocol: str = "official") -> str:
    """The VQAv2 normalised form of an answer, e.g. ``"Two dogs."`` -> ``"2 dogs"``."""
    _check_protocol(protocol)
    text = _strip_punctuation(_clean_whitespace(text), protocol)
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_soft_accuracy(prediction: str, answers: Sequence[str], protocol: str = "official") -> float:
    """VQAv2 accuracy of one prediction against the human `answers` under `protocol`
    (one of `VQA_PROTOCOLS`; see the module docstring for how they differ)."""
    _check_protocol(protocol)
    if not answers:
        raise ValueError("vqa_soft_accuracy needs at least one ground-truth answer")
    if len(answers) == 1:  # a single reference answer: nobody to leave out
        return float(normalize_answer(prediction, protocol) == normalize_answer(answers[0], protocol))
    truths = [_clean_whitespace(answer) for answer in answers]
    predicted = _clean_whitespace(prediction)
    if protocol == "lmms-eval" or len(set(truths)) > 1:
        predicted = normalize_answer(predicted, protocol)
        truths = [normalize_answer(truth, protocol) for truth in truths]
    scores = []
    for left_out in range(len(truths)):
        matches = sum(truth == predicted for index, truth in enumerate(truths) if index != left_out)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def majority_answer(answers: Sequence[str], protocol: str = "official") -> str:
    """The most frequent normalised answer (the first one seen among equally frequent ones)."""
    if not answers:
        raise ValueError("majority_answer needs at least one answer")
    counts = Counter(normalize_answer(answer, protocol) for answer in answers)
    return counts.most_common(1)[0][0]


def exact_match(prediction: str, answers: Sequence[str], protocol: str = "official") -> float:
    """1.0 when the normalised prediction equals the normalised majority answer, else 0.0
    (GQA-style exact match, not part of either VQAv2 protocol; with one reference answer
    it is plain equality)."""
    return float(normalize_answer(prediction, protocol) == majority_answer(answers, protocol))
