"""Request and response bodies of the JSON API; FastAPI turns them into the OpenAPI page."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modal_core.generation.decoding_method import DECODING_PATTERN
from modal_core.generation.pipeline import MAX_PROMPT_CHARACTERS
from modal_core.generation.settings import GUIDANCE_SCHEDULES, MAX_CFG_SCALE, MAX_TEMPERATURE

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A client's name for its request (`X-Request-Id`), to ask `/v1/requests/{id}` where it stands."""
MAX_SEED = 2**63 - 1
"""Seeds seed a torch.Generator, which takes a signed 64-bit integer."""


class _Strict(BaseModel):
    # Unknown keys and NaN/inf are typos, not wishes: reject them with a 422 naming the key.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GenerateRequest(_Strict):
    """Draw `n` images for one prompt."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS, description="What to draw.")
    n: int = Field(4, ge=1, description="Images to draw (at most the server's --max-batch-images).")
    cfg: float | None = Field(
        None, ge=0, le=MAX_CFG_SCALE, description="Classifier-free guidance scale (1 = no guidance); null: the model's default."
    )
    cfg_schedule: Literal[GUIDANCE_SCHEDULES] | None = Field(
        None, description="constant, or linear (no guidance at the first code, `cfg` at the last); null: the model's default."
    )
    cfg_plausibility: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Draw only codes at least this share as probable as the prompt's likeliest (0: off); null: the model's default.",
    )
    temperature: float | None = Field(
        None, ge=0, le=MAX_TEMPERATURE, description="Sampling temperature (0 = greedy); null: the model's default."
    )
    top_k: int | None = Field(None, ge=0, description="Sample among the k most likely codes (0: all); null: the model's default.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass (1: all); null: the model's default.")
    seed: int | None = Field(0, ge=0, le=MAX_SEED, description="Random seed; null draws a fresh one.")
    modality: str | None = Field(None, description="Output modality; needed only when the model has several.")
    decoding: str = Field(
        "ar", pattern=DECODING_PATTERN, description="ar, sjd[:L] (speculative Jacobi, same distribution) or zipar[:w] (rows in parallel)."
    )


class GenerateResponse(BaseModel):
    """The drawn images, in request order."""

    images: list[str] = Field(description="Base64-encoded PNG files.")
    format: Literal["png"] = "png"
    modality: str
    seed: int = Field(description="The seed the images were drawn with (a fresh one if the request gave none); send it to repeat the draw.")
    batched_with: int = Field(description="Requests that shared this request's decode batch (1 = alone).")


class UnderstandOptions(_Strict):
    """The text fields of a `POST /v1/understand` form (files are named by modality flag)."""

    question: str = Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0, le=MAX_TEMPERATURE)
    seed: int | None = Field(0, ge=0, le=MAX_SEED)


class UnderstandResponse(BaseModel):
    """The model's answer."""

    answer: str
    modalities: list[str] = Field(description="Input modalities the question was asked about.")
    layouts: dict[str, str] = Field(
        default_factory=dict, description="How each input was laid out, e.g. how many tiles an image was cut into (tiled models only)."
    )
    batched_with: int = Field(description="Requests answered in the same batch (1 = alone).")


class ModalityInfo(BaseModel):
    """One modality of the loaded model."""

    name: str
    direction: Literal["input", "output"]
    description: str
    upload_field: str | None = Field(description="Form field of `POST /v1/understand` for this input (its CLI flag).")


class ModalitiesResponse(BaseModel):
    modalities: list[ModalityInfo]


class BatchStats(BaseModel):
    """Counters of one kind of work since the server started."""

    batches: int = Field(description="Model calls made.")
    requests: int = Field(description="Requests answered by those calls.")
    largest_batch: int = Field(description="Most requests one call answered.")
    shared_batches: int = Field(description="Calls that answered more than one request.")
    failed: int = Field(description="Requests answered with an error.")


class RunningBatch(BaseModel):
    kind: str
    requests: int
    items: int = Field(description="Images being drawn, or questions being answered.")
    seconds: float


class RequestState(BaseModel):
    """Where one request named by its `X-Request-Id` stands."""

    state: Literal["waiting", "running"]
    ahead: int = Field(description="Requests waiting ahead of this one (0 while it runs).")


class Limits(BaseModel):
    """The server's limits (command-line flags of `modal-core serve`)."""

    max_batch_images: int
    max_batch_questions: int
    max_queue: int
    request_timeout_s: float
    max_upload_bytes: int
    max_new_tokens: int


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    checkpoint: str
    device: str
    uptime_s: float
    queue_pending: int
    queue_capacity: int
    running: RunningBatch | None
    limits: Limits
    stats: dict[str, BatchStats]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: one sentence saying what was wrong and what is allowed."""

    detail: str
