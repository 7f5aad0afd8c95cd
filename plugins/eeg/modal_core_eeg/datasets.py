"""EEG data sets a recipe can name: the simulated world and the EEG Motor
Movement/Imagery recordings from a local folder.

Every factory takes `(options, seed, split)` and returns samples whose EEG media are
raw items (an mne `Raw`, or an `EEGSegment` of a file) that the modality's processor
turns into payloads with the recipe's preprocessing settings.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from modal_core.data.chat import question_answer
from modal_core.data.indexed import IndexedDataset, TextDataset
from modal_core.data.segments import Media, Sample
from modal_core.errors import DataError, RecipeError
from modal_core_eeg.io import import_mne
from modal_core_eeg.processor import EEGSegment
from modal_core_eeg.simulate import CLASSES, QUESTIONS, draw_item, recording_for

MODALITY = "eeg"
QUESTION_CHOICES = ("all", "activity")


def _option(options: dict[str, Any], key: str, default: Any, allowed: tuple | None = None) -> Any:
    value = options.get(key, default)
    if allowed is not None and value not in allowed:
        raise RecipeError(f"EEG data set option {key}: expected one of {allowed}, got {value!r}")
    return value


def eeg_sim(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Simulated EEG with questions and answers. Options: `size` (distinct recordings,
    default 3000), `seconds` (length, default 2.0), `question` (`all`: a random question
    of six kinds; `activity`: always "what activity does this eeg show?"),
    `channel_dropout` (probability of a random subset of 8-18 channels, default 0),
    `modality` (default `eeg`)."""
    size = int(_option(options, "size", 3000))
    seconds = float(_option(options, "seconds", 2.0))
    question = _option(options, "question", "all", QUESTION_CHOICES)
    channel_dropout = float(_option(options, "channel_dropout", 0.0))
    modality = _option(options, "modality", MODALITY)

    def make(index: int) -> Sample:
        item = draw_item(seed, split, index, question, channel_dropout)
        raw = recording_for(seed, split, index, item, seconds)
        return question_answer(item.question, item.answer, [Media(modality, raw)])

    return IndexedDataset(size, make, f"eeg_sim/{split}")


def eeg_sim_text(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Every question and answer of the simulated world as plain text (a tokenizer
    corpus, or language data for the mix). Options: `repeat` (copies, default 20)."""
    texts = [f"{question} {answer(activity)}" for activity in CLASSES for question, answer in QUESTIONS]
    return TextDataset(texts * int(_option(options, "repeat", 20)), source="eeg_sim_text")


# -- EEG Motor Movement/Imagery (PhysioNet eegmmidb), from a local folder -------------------

RUN_TASKS = {
    **dict.fromkeys((3, 7, 11), ("left fist", "right fist")),
    **dict.fromkeys((4, 8, 12), ("imagined left fist", "imagined right fist")),
    **dict.fromkeys((5, 9, 13), ("both fists", "both feet")),
    **dict.fromkeys((6, 10, 14), ("imagined both fists", "imagined both feet")),
}
"""Run number -> what annotations T1 and T2 mean (T0 is rest in every run)."""
EEGMMI_QUESTION = "what is the subject doing?"
FILE_PATTERN = re.compile(r"S(\d{3})R(\d{2})\.edf$", re.IGNORECASE)


def _eegmmi_files(root: Path, subjects: list[int] | None, runs: list[int]) -> list[tuple[Path, int]]:
    if not root.is_dir():
        raise DataError(f"EEG Motor Movement/Imagery folder not found: {root} (download it yourself; modal-core never does)")
    files = []
    for path in sorted(root.rglob("*.edf")):
        match = FILE_PATTERN.search(path.name)
        if match and (subjects is None or int(match[1]) in subjects) and int(match[2]) in runs:
            files.append((path, int(match[2])))
    if not files:
        raise DataError(f"{root}: no files named like S001R04.edf for runs {runs}" + (f" of subjects {subjects}" if subjects else ""))
    return files


def _trials(path: Path, run: int, include_rest: bool) -> list[tuple[float, str]]:
    """(onset in seconds, label) of every annotated trial of one run."""
    mne = import_mne()
    try:
        raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
    except Exception as error:
        raise DataError(f"{path}: cannot read this EDF file ({type(error).__name__}: {error})") from error
    labels = {"T0": "rest", "T1": RUN_TASKS[run][0], "T2": RUN_TASKS[run][1]}
    return [
        (float(annotation["onset"]), labels[annotation["description"]])
        for annotation in raw.annotations
        if annotation["description"] in labels and (include_rest or annotation["description"] != "T0")
    ]


def eegmmi_folder(options: dict[str, Any], seed: int, split: str) -> Dataset:
    """Trials of the EEG Motor Movement/Imagery data set (64 channels, 160 Hz, EDF) from
    a local copy laid out as PhysioNet ships it (`S001/S001R04.edf`, ...). Options:
    `path` (the folder), `runs` (default 4, 8, 12: imagined left/right fist),
    `subjects` (list of numbers, default all found), `test_subjects` (numbers held out
    for the `heldout`/`test` splits, default the last 10 % of those found), `tmin`
    (window start after the cue, seconds, default 0), `include_rest` (default false).
    Each trial asks "what is the subject doing?" and answers the task."""
    root = Path(_option(options, "path", None) or "").expanduser()
    runs = [int(r) for r in _option(options, "runs", [4, 8, 12])]
    unknown = sorted(set(runs) - set(RUN_TASKS))
    if unknown:
        raise RecipeError(f"EEG data set option runs: {unknown} are baseline or unknown runs; task runs are {sorted(RUN_TASKS)}")
    subjects = _option(options, "subjects", None)
    files = _eegmmi_files(root, None if subjects is None else [int(s) for s in subjects], runs)
    found = sorted({int(FILE_PATTERN.search(path.name)[1]) for path, _ in files})
    test_subjects = _option(options, "test_subjects", None)
    held_out = set(found[-max(1, len(found) // 10) :] if test_subjects is None else [int(s) for s in test_subjects])
    if split == "train" and len(found) > 1:
        files = [(p, r) for p, r in files if int(FILE_PATTERN.search(p.name)[1]) not in held_out]
    elif split != "train":
        files = [(p, r) for p, r in files if int(FILE_PATTERN.search(p.name)[1]) in held_out]
    tmin = float(_option(options, "tmin", 0.0))
    include_rest = bool(_option(options, "include_rest", False))
    modality = _option(options, "modality", MODALITY)
    trials = [(path, onset + tmin, label) for path, run in files for onset, label in _trials(path, run, include_rest)]
    if not trials:
        raise DataError(f"{root}: the selected runs have no annotated trials (T0/T1/T2)")
    random.Random(seed).shuffle(trials)

    def make(index: int) -> Sample:
        path, start, label = trials[index]
        return question_answer(EEGMMI_QUESTION, label, [Media(modality, EEGSegment(path, start))])

    return IndexedDataset(len(trials), make, f"eegmmi/{split}")
