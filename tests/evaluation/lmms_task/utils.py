"""The local lmms-eval task's functions: documents are `vqa.jsonl` records of the `vqa` suite."""

import os
from pathlib import Path

from lmms_eval.tasks.vqav2.utils import vqav2_process_results
from PIL import Image


def _data() -> Path:
    return Path(os.environ["MODAL_CORE_LMMS_DATA"])


def doc_to_visual(doc):
    return [Image.open(_data().parent / doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, result):
    answers = [{"answer": answer, "answer_id": index} for index, answer in enumerate(doc["answers"])]
    return {"exact_match": vqav2_process_results({"question_id": doc["question_id"], "answers": answers}, result)["exact_match"]}
