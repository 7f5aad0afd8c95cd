"""Understanding suites over local JSONL benchmark files: `vqa` (VQAv2 / GQA / TextVQA
style), `multiple_choice` (MMBench / SEED / MMMU style) and `pope`.

Image paths in a JSONL file are relative to its folder. Every suite accepts `data`
(the file, or a folder holding `vqa.jsonl` / `multiple_choice.jsonl` / `pope.jsonl`),
`limit`, `seed`, `batch_size`, `max_new_tokens`, `temperature` (0: greedy),
`modality` (the input modality to feed; default: the one taking `answer(image=...)`),
`prompt_suffix` (appended to every question, e.g. LLaVA's "\\nAnswer the question using
a single word or phrase.") and `protocol` (the scoring rule and the reference it
reproduces: `vqa` official | lmms-eval, `multiple_choice` vlmevalkit-exact | lenient,
`pope` official). Every suite returns a protocol card (`modal_core.evaluation.protocol`).
Record formats are in docs/evaluation.md.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from modal_core.data.chat import ASSISTANT, USER, ChatFormat
from modal_core.data.jsonl import read_jsonl
from modal_core.errors import DataError
from modal_core.evaluation.choice_metrics import (
    CHOICE_REFERENCES,
    POPE_REFERENCE,
    YesNoCounts,
    extract_choice,
    format_choice_prompt,
    option_letters,
    pope_answer,
    rotate_options,
)
from modal_core.evaluation.items import ItemResults, score_items
from modal_core.evaluation.options import bool_option, choice_option, data_file, float_option, int_option
from modal_core.evaluation.protocol import PROTOCOL_KEY, Decoding, ProtocolCard
from modal_core.evaluation.vqa_metrics import VQA_REFERENCES, exact_match, vqa_soft_accuracy
from modal_core_images.processing import load_image, save_image_grid

IMAGE_KEYWORD = "image"
"""The `Pipeline.answer` keyword of the image input modality (see `ModalitySpec.keyword`)."""
EXAMPLES_FILE = "examples.png"
EXAMPLES_SHOWN = 16
DISPLAY_SIZE = 96
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
MEDIA_MARKER = "<image>"
"""Where the image's features stand in a prompt template."""


def _records(options: dict[str, Any], path: Path, required: tuple[str, ...]) -> list[tuple[dict[str, Any], str]]:
    """(record, "file:line") of the first `limit` records of a JSONL file, each validated."""
    records = read_jsonl(path, required=required)
    limit = int_option(options, "limit", None, minimum=1)
    count = len(records) if limit is None else min(limit, len(records))
    return [(records[index], records.where(index)) for index in range(count)]


def image_path(base: Path, relative: Any, where: str) -> Path:
    """An image path of a JSONL record, relative to the file's folder; it must exist."""
    if not isinstance(relative, str) or not relative:
        raise DataError(f"{where}: 'image' must be a path string, got {relative!r}")
    path = (base / relative).expanduser()
    if not path.is_file():
        raise DataError(f"{where}: image file not found: {path}")
    return path


def _record_id(record: dict[str, Any], index: int) -> str:
    return str(record.get("question_id", record.get("id", index)))


def _input_modality(pipeline: Any, options: dict[str, Any]) -> str:
    return pipeline.modality("input", name=options.get("modality"), keyword=None if options.get("modality") else IMAGE_KEYWORD)


def _decoding(options: dict[str, Any]) -> Decoding:
    return Decoding(
        temperature=float_option(options, "temperature", 0.0),
        seed=int_option(options, "seed", 0),
        max_new_tokens=int_option(options, "max_new_tokens", 16, minimum=1),
    )


def _ask(pipeline: Any, options: dict[str, Any], prompts: list[str], images: list[str]) -> list[str]:
    """The model's answers to `prompts`, each about the image at the same position."""
    suffix = str(options.get("prompt_suffix") or "")
    decoding = _decoding(options)
    return pipeline.answer(
        [prompt + suffix for prompt in prompts],
        media={_input_modality(pipeline, options): images},
        max_new_tokens=decoding.max_new_tokens,
        temperature=decoding.temperature,
        seed=decoding.seed,
    )


def prompt_template(pipeline: Any, question: str) -> str:
    """The text the model reads for `question` (a template such as ``"{question}"``): the
    chat turns `question_answer` builds with the checkpoint's chat format around them."""
    chat = getattr(getattr(pipeline, "collator", None), "chat", ChatFormat())
    return f"{chat.system_prompt}{USER}: {MEDIA_MARKER}{chat.media_separator}{question}\n\n{ASSISTANT}:"


def preprocessing(pipeline: Any, modality: str) -> str:
    """How the pipeline's `modality` processor prepares an input (its `describe()`)."""
    runtime = getattr(pipeline, "modalities", {}).get(modality)
    describe = getattr(getattr(runtime, "processor", None), "describe", None)
    return describe() if callable(describe) else f"the {modality} processor (it does not describe itself)"


def _card(
    pipeline: Any, options: dict[str, Any], suite: str, protocol: str, reference: str, question: str, items: int, **notes: Any
) -> dict[str, Any]:
    """The protocol card of an understanding suite, under `PROTOCOL_KEY` of its metrics."""
    return ProtocolCard(
        suite=suite,
        protocol=protocol,
        reference=reference,
        prompt_template=prompt_template(pipeline, question + str(options.get("prompt_suffix") or "")),
        preprocessing=preprocessing(pipeline, _input_modality(pipeline, options)),
        decoding=_decoding(options),
        items=items,
        notes=notes,
    ).as_dict()


def _save_examples(records: list[dict[str, Any]], out_dir: Path) -> None:
    """`examples.png`: the first records' images captioned with question, answer and verdict."""
    shown = records[:EXAMPLES_SHOWN]
    if not shown:
        return
    images = []
    for record in shown:
        image = load_image(record["image"]).copy()
        image.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE), Image.NEAREST)
        images.append(image)
    captions = [f"{'OK' if r['correct'] else 'x'} {r['question']} -> {r['prediction']} (want {r['expected']})" for r in shown]
    save_image_grid(images, out_dir / EXAMPLES_FILE, columns=4, captions=captions)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _grouped(records: list[dict[str, Any]], group: str, value: str) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.get(group) is not None:
            groups[str(record[group])].append(float(record[value]))
    return {name: _mean(values) for name, values in sorted(groups.items())}


def _answers_of(record: dict[str, Any], where: str) -> list[str]:
    """Ground-truth answers: `answers` (strings, or VQAv2's {"answer": ...} dicts) or `answer`."""
    answers = record.get("answers", record.get("answer"))
    if isinstance(answers, str):
        answers = [answers]
    if isinstance(answers, list):
        answers = [a.get("answer") if isinstance(a, dict) else a for a in answers]
    if not answers or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{where}: 'answers' must be a non-empty list of strings (or 'answer' a string), got {answers!r}")
    return answers


def evaluate_vqa(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Open-ended visual question answering over a JSONL file: VQAv2 soft accuracy and exact match.

    Records: {"image", "question", "answers": [...]} (or "answer"), optional
    "question_id" and "answer_type". `protocol`: official (GT-Vision-Lab's vqaEval.py,
    the default) or lmms-eval (its VQAv2 task); see `modal_core.evaluation.vqa_metrics`.
    """
    protocol = choice_option(options, "protocol", tuple(VQA_REFERENCES))
    path = data_file(options, "vqa", "vqa.jsonl", 'a JSONL file of {"image", "question", "answers"} records')
    items = []
    for index, (record, where) in enumerate(_records(options, path, ("image", "question"))):
        items.append(
            {
                "id": _record_id(record, index),
                "image": str(image_path(path.parent, record["image"], where)),
                "question": str(record["question"]),
                "answers": _answers_of(record, where),
                "answer_type": record.get("answer_type"),
            }
        )

    def score(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        predictions = _ask(pipeline, options, [item["question"] for item in batch], [item["image"] for item in batch])
        records = []
        for item, prediction in zip(batch, predictions):
            accuracy = vqa_soft_accuracy(prediction, item["answers"], protocol)
            match = exact_match(prediction, item["answers"], protocol)
            records.append({**item, "prediction": prediction, "vqa_accuracy": accuracy, "exact_match": match})
        return records

    records = score_items(items, lambda item: item["id"], score, ItemResults(out_dir), int_option(options, "batch_size", 16, 1), "vqa")
    _save_examples([{**r, "correct": r["exact_match"] == 1.0, "expected": r["answers"][0]} for r in records], out_dir)
    metrics: dict[str, Any] = {
        "vqa_accuracy": _mean([r["vqa_accuracy"] for r in records]),
        "exact_match": _mean([r["exact_match"] for r in records]),
        "count": len(records),
    }
    by_type = _grouped(records, "answer_type", "vqa_accuracy")
    if by_type:
        metrics["vqa_accuracy_by_answer_type"] = by_type
    metrics[PROTOCOL_KEY] = _card(pipeline, options, "vqa", protocol, VQA_REFERENCES[protocol], "{question}", len(records))
    return metrics


def _choices(record: dict[str, Any], where: str) -> tuple[list[str], int]:
    """(option texts in letter order, index of the right one) of a multiple-choice record."""
    options = record["options"]
    if isinstance(options, dict):
        letters = sorted(options)
        if letters != list(option_letters(len(letters))):
            raise DataError(f"{where}: option keys must be consecutive letters from A, got {letters}")
        options = [options[letter] for letter in letters]
    if not isinstance(options, list) or not all(isinstance(text, str) for text in options):
        raise DataError(f"{where}: 'options' must be a list of strings or a {{letter: text}} object")
    letters = option_letters(len(options))
    answer = str(record["answer"]).strip()
    if answer in letters:
        return options, letters.index(answer)
    if answer in options:
        return options, options.index(answer)
    raise DataError(f"{where}: 'answer' {answer!r} is neither an option letter ({', '.join(letters)}) nor an option text")


def evaluate_multiple_choice(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Multiple-choice questions (MMBench / SEED style) with circular evaluation.

    Records: {"image", "question", "options": [...] or {"A": ...}, "answer": letter or
    text}, optional "id", "hint", "category". With `circular` (default true) each
    question is asked once per rotation of its options and is right only if all are;
    `circular=false` asks once (SEED-Bench). `instruction` overrides the line asking for
    a letter. `protocol`: how an answer becomes a letter, vlmevalkit-exact (VLMEvalKit's
    exact-matching mode, the default) or lenient; see `modal_core.evaluation.choice_metrics`.
    """
    protocol = choice_option(options, "protocol", tuple(CHOICE_REFERENCES))
    path = data_file(
        options, "multiple_choice", "multiple_choice.jsonl", 'a JSONL file of {"image", "question", "options", "answer"} records'
    )
    circular = bool_option(options, "circular", True)
    instruction = str(options.get("instruction", MC_INSTRUCTION) or "")
    passes = []
    for index, (record, where) in enumerate(_records(options, path, ("image", "question", "options", "answer"))):
        texts, answer_index = _choices(record, where)
        image = str(image_path(path.parent, record["image"], where))
        question_id = _record_id(record, index)
        for shift in range(len(texts) if circular else 1):
            rotated, right = rotate_options(texts, answer_index, shift)
            passes.append(
                {
                    "id": f"{question_id}/{shift}",
                    "question_id": question_id,
                    "image": image,
                    "question": str(record["question"]),
                    "prompt": format_choice_prompt(str(record["question"]), rotated, record.get("hint"), instruction),
                    "options": rotated,
                    "expected": option_letters(len(rotated))[right],
                    "category": record.get("category"),
                }
            )

    def score(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        predictions = _ask(pipeline, options, [item["prompt"] for item in batch], [item["image"] for item in batch])
        records = []
        for item, prediction in zip(batch, predictions):
            chosen = extract_choice(prediction, item["options"], protocol)
            records.append({**item, "prediction": prediction, "chosen": chosen, "correct": chosen == item["expected"]})
        return records

    records = score_items(
        passes, lambda item: item["id"], score, ItemResults(out_dir), int_option(options, "batch_size", 16, 1), "multiple choice"
    )
    _save_examples([r for r in records if r["id"].endswith("/0")], out_dir)
    questions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        questions[record["question_id"]].append(record)
    per_question = [
        {"correct": all(r["correct"] for r in rs), "first": rs[0]["correct"], "category": rs[0]["category"]} for rs in questions.values()
    ]
    metrics: dict[str, Any] = {
        "accuracy": _mean([float(q["correct"]) for q in per_question]),
        "single_pass_accuracy": _mean([float(q["first"]) for q in per_question]),
        "answered_ratio": _mean([float(r["chosen"] is not None) for r in records]),
        "circular": circular,
        "questions": len(per_question),
        "passes": len(records),
    }
    by_category = _grouped(per_question, "category", "correct")
    if by_category:
        metrics["accuracy_by_category"] = by_category
    question = format_choice_prompt("{question}", ["{option A}", "{option B}"], "{hint, when given}", instruction)
    metrics[PROTOCOL_KEY] = _card(
        pipeline, options, "multiple_choice", protocol, CHOICE_REFERENCES[protocol], question, len(per_question), circular=circular
    )
    return metrics


def evaluate_pope(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """POPE object-hallucination yes/no questions: accuracy, precision, recall, F1, yes-ratio.

    Records: {"image", "question" (or POPE's "text"), "label": "yes" | "no"}, optional
    "question_id" and "category" (random / popular / adversarial, reported separately).
    `protocol`: official (POPE's evaluate.py), the only one.
    """
    protocol = choice_option(options, "protocol", ("official",))
    path = data_file(options, "pope", "pope.jsonl", 'a JSONL file of {"image", "question", "label"} records')
    items = []
    for index, (record, where) in enumerate(_records(options, path, ("image", "label"))):
        label = str(record["label"]).strip().lower()
        question = record.get("question", record.get("text"))
        if label not in ("yes", "no") or not isinstance(question, str):
            raise DataError(f"{where}: expected 'label' yes or no and a 'question' string, got {record['label']!r} and {question!r}")
        items.append(
            {
                "id": _record_id(record, index),
                "image": str(image_path(path.parent, record["image"], where)),
                "question": question,
                "label": label,
                "category": record.get("category"),
            }
        )

    def score(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        predictions = _ask(pipeline, options, [item["question"] for item in batch], [item["image"] for item in batch])
        return [
            {**item, "prediction": p, "parsed": pope_answer(p), "correct": pope_answer(p) == item["label"]}
            for item, p in zip(batch, predictions)
        ]

    records = score_items(items, lambda item: item["id"], score, ItemResults(out_dir), int_option(options, "batch_size", 16, 1), "pope")
    _save_examples([{**r, "expected": r["label"]} for r in records], out_dir)
    metrics: dict[str, Any] = YesNoCounts.of([r["parsed"] for r in records], [r["label"] for r in records]).metrics()
    categories = sorted({str(r["category"]) for r in records if r.get("category") is not None})
    if categories:
        metrics["by_category"] = {
            name: YesNoCounts.of(
                [r["parsed"] for r in records if str(r.get("category")) == name],
                [r["label"] for r in records if str(r.get("category")) == name],
            ).metrics()
            for name in categories
        }
    metrics[PROTOCOL_KEY] = _card(pipeline, options, "pope", protocol, POPE_REFERENCE, "{question}", len(records))
    return metrics
