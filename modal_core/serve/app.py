"""The FastAPI application: JSON API under /v1, the web demo at /, the OpenAPI schema at /openapi.json.

The model is loaded once by the caller and used only by the batching queue's worker
thread; request handlers validate, queue, and wait (up to the request timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Any

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modal_core import __version__
from modal_core.errors import ModalCoreError
from modal_core.generation.pipeline import Pipeline
from modal_core.serve.batching import Answer, BatchingQueue, QueueFullError
from modal_core.serve.body_limit import BodySizeLimit
from modal_core.serve.inference import ImageJob, QuestionJob, generation_runner, understanding_runner
from modal_core.serve.schemas import (
    REQUEST_ID_PATTERN,
    BatchStats,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    Limits,
    ModalitiesResponse,
    ModalityInfo,
    RequestState,
    RunningBatch,
    UnderstandOptions,
    UnderstandResponse,
)
from modal_core.serve.settings import ServeSettings
from modal_core.serve.uploads import TEXT_FIELDS, UploadError, save_uploads, split_form

STATIC_DIR = FilePath(__file__).resolve().parent / "static"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for the text fields and multipart boundaries on top of the uploaded files."""
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Bad input: malformed JSON, a file that is not what its field expects, an unknown modality or field.",
        413: "An uploaded file, or the request body, is over the size limit.",
        415: "The body is not JSON (`/v1/generate`) or not a form (`/v1/understand`).",
        422: "A parameter is missing or out of range.",
        503: "The queue is full; retry after the Retry-After seconds.",
        504: "The request did not finish within the server's request timeout.",
    }.items()
}


class RequestTimeout(Exception):
    """A request waited and ran longer than the request timeout."""


def create_app(pipeline: Pipeline, settings: ServeSettings | None = None, checkpoint: str = "", device: str = "cpu") -> FastAPI:
    """The server for a loaded `pipeline`. The batching worker starts and stops with the
    application's lifespan (uvicorn, or `with TestClient(app)`)."""
    settings = settings or ServeSettings()
    queue = BatchingQueue(
        runners={"generate": generation_runner(pipeline), "understand": understanding_runner(pipeline)},
        limits={"generate": settings.max_batch_images, "understand": settings.max_batch_questions},
        max_pending=settings.max_queue,
        batch_wait_s=settings.batch_wait_s,
    )
    specs = {name: runtime.spec for name, runtime in pipeline.modalities.items()}
    upload_fields = {spec.cli_flag: name for name, spec in specs.items() if spec.direction == "input" and spec.cli_flag}
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue.start()
        yield
        await asyncio.to_thread(queue.close)

    app = FastAPI(
        title="modal-core",
        version=__version__,
        description="Ask a unified multimodal model about images (and other inputs), or have it draw. "
        'The web demo is at `/`; every endpoint answers errors as `{"detail": "..."}`.',
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a CDN: a blank page offline. The one
        # packaged copy (swagger-ui-bundle) is Swagger UI 4, which cannot read OpenAPI 3.1.
        docs_url=None,
        redoc_url=None,
    )
    app.state.queue = queue
    app.state.pipeline = pipeline
    app.state.settings = settings
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes * max(1, len(upload_fields)) + FORM_OVERHEAD_BYTES)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/v1/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        """Liveness, queue depth, the batch running now, limits, and batching counters."""
        running = queue.running
        return HealthResponse(
            checkpoint=checkpoint,
            device=device,
            uptime_s=round(time.monotonic() - started, 3),
            queue_pending=queue.pending,
            queue_capacity=queue.capacity,
            running=running
            and RunningBatch(
                kind=running.kind, requests=running.requests, items=running.items, seconds=round(time.monotonic() - running.started, 3)
            ),
            limits=Limits(**{name: getattr(settings, name) for name in Limits.model_fields}),
            stats={kind: BatchStats(**vars(stats)) for kind, stats in queue.stats().items()},
        )

    @app.get("/v1/modalities", response_model=ModalitiesResponse, tags=["service"])
    async def modalities() -> ModalitiesResponse:
        """The model's modalities; input ones with an `upload_field` can be sent to `/v1/understand`."""
        return ModalitiesResponse(
            modalities=[
                ModalityInfo(
                    name=name,
                    direction=spec.direction,
                    description=spec.description,
                    upload_field=spec.cli_flag if spec.direction == "input" else None,
                )
                for name, spec in specs.items()
            ]
        )

    @app.post(
        "/v1/generate", response_model=GenerateResponse, responses=ERROR_RESPONSES, tags=["model"], dependencies=[Depends(_json_body)]
    )
    async def generate(
        body: GenerateRequest,
        request_id: str | None = Header(None, alias="X-Request-Id", pattern=REQUEST_ID_PATTERN, description="For /v1/requests/{id}."),
    ) -> GenerateResponse:
        """Draw `n` images for a prompt. Concurrent requests with the same settings share one decode batch."""
        if body.n > settings.max_batch_images:
            return _error(422, f"n must be at most {settings.max_batch_images} on this server (--max-batch-images), got {body.n}")
        modality = pipeline.modality("output", body.modality)  # unknown or ambiguous: ModelInputError -> 400
        drawing = pipeline.settings(
            cfg=body.cfg,
            cfg_schedule=body.cfg_schedule,
            cfg_plausibility=body.cfg_plausibility,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
        )
        job = ImageJob(body.prompt, modality, body.n, drawing, body.seed, body.decoding)
        answer = await _wait(queue.submit("generate", job.key, job.n, job, ticket=request_id), settings)
        return GenerateResponse(images=answer.result.images, modality=modality, seed=answer.result.seed, batched_with=answer.batched_with)

    @app.get(
        "/v1/requests/{request_id}",
        response_model=RequestState,
        responses={404: {"model": ErrorResponse, "description": "No such request is waiting or running."}},
        tags=["service"],
    )
    async def request_state(request_id: str = Path(pattern=REQUEST_ID_PATTERN)) -> RequestState:
        """Where the request sent with this `X-Request-Id` stands: waiting (behind how many) or running."""
        where = queue.where(request_id)
        if where is None:
            return _error(404, f"no request {request_id!r} is waiting or running: it has not arrived yet, or it is answered")
        return RequestState(state=where[0], ahead=where[1])

    @app.post(
        "/v1/understand",
        response_model=UnderstandResponse,
        responses=ERROR_RESPONSES,
        tags=["model"],
        openapi_extra=_understand_form_schema(upload_fields),
    )
    async def understand(request: Request) -> UnderstandResponse:
        """Answer a question, about the uploaded files if any (one per input modality, named by its upload field)."""
        if request.headers.get("content-type", "").split(";")[0].strip() not in FORM_TYPES:
            return _error(415, "send a multipart/form-data form: question=... plus files named by /v1/modalities' upload_field")
        async with request.form(max_files=len(upload_fields) + 4, max_fields=len(TEXT_FIELDS) + 4) as form:
            text, files = split_form(form, upload_fields)
            try:
                options = UnderstandOptions.model_validate(text)
            except ValidationError as error:
                raise RequestValidationError([{**e, "loc": ("form", *e["loc"])} for e in error.errors(include_url=False)]) from None
            if options.max_new_tokens > settings.max_new_tokens:
                return _error(422, f"max_new_tokens must be at most {settings.max_new_tokens} on this server, got {options.max_new_tokens}")
            uploads = await save_uploads(files, upload_fields, settings.max_upload_bytes)
        job = QuestionJob(options.question, uploads.files, options.max_new_tokens, options.temperature, options.seed)
        try:
            future = queue.submit("understand", job.key, 1, job)
        except BaseException:
            uploads.cleanup()
            raise
        future.add_done_callback(lambda _: uploads.cleanup())  # after the worker read them, or on timeout
        try:
            answer = await _wait(future, settings)
        except ModalCoreError as error:
            return _error(400, uploads.scrub(str(error)))
        result = answer.result
        return UnderstandResponse(
            answer=result.answer, modalities=sorted(uploads.files), layouts=result.layouts, batched_with=answer.batched_with
        )

    return app


async def _json_body(request: Request) -> None:
    """415 for a body sent as anything but JSON (FastAPI would validate its bytes and answer 422)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise StarletteHTTPException(415, f"send the body as JSON with Content-Type: application/json, got {media or 'no Content-Type'}")


async def _wait(future: Future, settings: ServeSettings) -> Answer:
    try:
        # Cancelling the wrapper on timeout cancels the queued job, so a request nobody
        # waits for any more is dropped before it reaches the model.
        return await asyncio.wait_for(asyncio.wrap_future(future), settings.request_timeout_s)
    except asyncio.TimeoutError:
        raise RequestTimeout() from None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    settings: ServeSettings = app.state.settings

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = list(error.errors())
        malformed = [p for p in problems if p.get("type") == "json_invalid"]
        if malformed:
            where = malformed[0]["loc"][-1]
            reason = (malformed[0].get("ctx") or {}).get("error", "JSON decode error")
            return _error(400, f"malformed JSON body at character {where}: {reason}")
        return _error(422, "; ".join(_describe(problem) for problem in problems))

    @app.exception_handler(UploadError)
    async def bad_upload(request: Request, error: UploadError) -> JSONResponse:
        return _error(error.status, str(error))

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, error: QueueFullError) -> JSONResponse:
        return _error(503, str(error), headers={"Retry-After": "1"})

    @app.exception_handler(ModalCoreError)
    async def model_input(request: Request, error: ModalCoreError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(RequestTimeout)
    async def timed_out(request: Request, error: RequestTimeout) -> JSONResponse:
        message = f"the request did not finish within {settings.request_timeout_s:g} s (--timeout); the server is busy, retry later"
        return _error(504, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), headers=getattr(error, "headers", None))


def _describe(problem: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
    return f"{location}: {problem.get('msg', 'invalid')}"


def _understand_form_schema(upload_fields: dict[str, str]) -> dict[str, Any]:
    """The form of `/v1/understand` for the OpenAPI page: it depends on the model's inputs."""
    properties: dict[str, Any] = {
        name: {key: value for key, value in schema.items() if key != "title"}
        for name, schema in UnderstandOptions.model_json_schema()["properties"].items()
    }
    for field, modality in upload_fields.items():
        properties[field] = {"type": "string", "format": "binary", "description": f"a file for input modality {modality}"}
    schema = {"type": "object", "properties": properties, "required": ["question"]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
