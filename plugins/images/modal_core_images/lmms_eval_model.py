"""A modal-core checkpoint as an lmms-eval model (lmms-eval installed separately; see
docs/evaluation.md for why it is not a dependency):

    lmms-eval --model modal_core --model_args checkpoint=PATH,device=cpu --tasks TASK

runs any lmms-eval task of image + text generation (`output_type: generate_until`) on
the checkpoint: each request's first image and its text go to `Pipeline.answer`,
greedy unless the task's `temperature` is above 0, cut at the task's `until` strings.
lmms-eval finds the model through the `lmms_eval.models` entry point (`manifest`).
Likelihood tasks and multi-round generation are not supported.
"""

from __future__ import annotations

from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from modal_core import Pipeline
from modal_core.errors import EvaluationError

MODEL_NAME = "modal_core"
DEFAULT_MAX_NEW_TOKENS = 16


def manifest() -> ModelManifest:
    """The `lmms_eval.models` entry point: registers this adapter as `--model modal_core`."""
    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.ModalCoreModel")


def _cut(text: str, until: list[str]) -> str:
    """`text` up to the first of the `until` strings."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


class ModalCoreModel(lmms):
    """lmms-eval's view of a loaded `modal_core.Pipeline` (image + text generation)."""

    is_simple = True

    def __init__(self, checkpoint: str, device: str = "cpu", **unused: Any) -> None:
        super().__init__()
        self.pipeline = Pipeline.load(checkpoint, device=device)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One answer per request: (context, generation kwargs, doc_to_visual, doc id, task, split)."""
        answers = []
        for request in requests:
            context, generation, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            if not visuals:
                raise EvaluationError(f"lmms-eval task {task}: document {doc_id} has no image; modal_core answers about an image")
            until = generation.get("until") or []
            answer = self.pipeline.answer(
                context,
                image=visuals[0],
                max_new_tokens=int(generation.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                temperature=float(generation.get("temperature", 0.0) or 0.0),
            )
            answer = _cut(answer, [until] if isinstance(until, str) else list(until))
            self.cache_hook.add_partial("generate_until", (context, generation), answer)
            answers.append(answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("modal_core in lmms-eval runs generate_until tasks only")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("modal_core in lmms-eval runs single-round generate_until tasks only")
