"""What the worker thread runs: batches of queued requests turned into `Pipeline` calls."""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from modal_core.errors import ServeError
from modal_core.generation.pipeline import Pipeline
from modal_core.generation.settings import GenerationSettings
from modal_core.serve.batching import Runner

FRESH_SEEDS = 2**53
"""Seeds drawn for requests without one stay below 2^53, so a JavaScript client (the web
demo) holds them exactly and can send them back."""


@dataclass(frozen=True)
class ImageJob:
    """One `POST /v1/generate` request, its output modality already resolved."""

    prompt: str
    modality: str
    n: int
    settings: GenerationSettings
    """Guidance and sampling, the model's defaults already filled in (`Pipeline.settings`)."""
    seed: int | None
    decoding: str = "ar"

    @property
    def key(self) -> Hashable:
        """Requests share a decode batch only when everything but the prompt agrees:
        `Pipeline.generate` takes one n, one sampling setting, one seed and one decoding per call."""
        return (self.modality, self.n, self.settings, self.seed, self.decoding)


@dataclass(frozen=True)
class QuestionJob:
    """One `POST /v1/understand` request: a question and uploaded files by modality."""

    question: str
    media: dict[str, Path] = field(default_factory=dict)
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = 0

    @property
    def key(self) -> Hashable:
        return (tuple(sorted(self.media)), self.max_new_tokens, self.temperature, self.seed)


@dataclass(frozen=True)
class DrawnImages:
    """One `ImageJob`'s images and the seed they were drawn with."""

    images: list[str]
    """Base64-encoded PNG files."""
    seed: int
    """The job's seed, or the one drawn for it: sending it back repeats the draw."""


def generation_runner(pipeline: Pipeline) -> Runner:
    """Draw images for a batch of compatible `ImageJob`s in one call; `DrawnImages` per job."""

    def run(jobs: list[ImageJob]) -> list[DrawnImages]:
        first = jobs[0]
        # A request without a seed gets a fresh one here, not in the request handler, so
        # unseeded requests still share a batch; the answer names it so the draw can be repeated.
        seed = first.seed if first.seed is not None else secrets.randbelow(FRESH_SEEDS)
        outputs = pipeline.generate(
            [job.prompt for job in jobs],
            n=first.n,
            seed=seed,
            modality=first.modality,
            decoding=first.decoding,
            **first.settings.as_overrides(),
        )
        return [DrawnImages([encode_png(item, first.modality) for item in items], seed) for items in outputs]

    return run


@dataclass(frozen=True)
class Answered:
    """One `QuestionJob`'s answer, and how its inputs were laid out (`Pipeline.input_layouts`)."""

    answer: str
    layouts: dict[str, str]


def understanding_runner(pipeline: Pipeline) -> Runner:
    """Answer a batch of compatible `QuestionJob`s (same modalities and settings) in one call."""

    def run(jobs: list[QuestionJob]) -> list[Answered]:
        first = jobs[0]
        media = {name: [job.media[name] for job in jobs] for name in first.media}
        answers = pipeline.answer(
            [job.question for job in jobs],
            media=media or None,
            max_new_tokens=first.max_new_tokens,
            temperature=first.temperature,
            seed=first.seed,
        )
        return [Answered(answer, pipeline.input_layouts(job.media)) for answer, job in zip(answers, jobs)]

    return run


def encode_png(item: Any, modality: str) -> str:
    """One output item as a base64 PNG file."""
    if not isinstance(item, Image.Image):
        raise ServeError(f"output modality {modality!r} produces {type(item).__name__} objects; the HTTP API serves images only")
    buffer = io.BytesIO()
    item.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
