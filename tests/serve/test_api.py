"""The JSON API against a real server on 127.0.0.1: answers match the Pipeline called
directly, bad requests get a clear 4xx and the server keeps serving, the queue refuses
work when full and times requests out."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from conftest import spy_on_drawing
from PIL import Image

from modal_core.generation.settings import GenerationSettings
from modal_core_images.shapes import render_scene, scene_for_index

from .conftest import UPLOAD_LIMIT_BYTES, extra_server

httpx = pytest.importorskip("httpx", reason="httpx is a dev dependency: pip install -e '.[dev]'")

QUESTION = "what colour is the circle?"


def _png(index: int = 0) -> bytes:
    buffer = io.BytesIO()
    render_scene(scene_for_index(index, 0, "heldout", image_size=32)).save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(png_base64: str) -> bytes:
    with Image.open(io.BytesIO(base64.b64decode(png_base64))) as image:
        assert image.format == "PNG" and image.size == (32, 32)
        return image.convert("RGB").tobytes()


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/v1/health").json()["stats"]


def test_health_and_modalities_describe_the_loaded_model(live_server):
    health = httpx.get(f"{live_server.url}/v1/health").json()
    assert health["status"] == "ok" and health["queue_capacity"] == 64 and health["running"] is None
    assert health["limits"]["max_upload_bytes"] == UPLOAD_LIMIT_BYTES
    listing = httpx.get(f"{live_server.url}/v1/modalities").json()["modalities"]
    assert {(m["name"], m["direction"], m["upload_field"]) for m in listing} == {
        ("image_understanding", "input", "image"),
        ("vq_generation", "output", None),
    }
    openapi = httpx.get(f"{live_server.url}/openapi.json").json()
    assert {"/v1/understand", "/v1/generate", "/v1/health", "/v1/modalities"} <= set(openapi["paths"])
    form = openapi["paths"]["/v1/understand"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary"  # the upload field comes from the model's modalities


def test_a_request_draws_with_the_models_settings_unless_it_overrides_them(live_server, monkeypatch):
    pipeline = live_server.app.state.pipeline
    assert (pipeline.generation.cfg_schedule, pipeline.generation.cfg_plausibility) == ("linear", 0.2)
    drawn = spy_on_drawing(monkeypatch)

    def pixels(**settings) -> list[bytes]:
        response = httpx.post(f"{live_server.url}/v1/generate", json={"prompt": "a red circle", "n": 2, "seed": 3, **settings}, timeout=60)
        assert response.status_code == 200, response.text
        return [_pixels(png) for png in response.json()["images"]]

    assert pixels() == [image.tobytes() for image in pipeline.generate_images("a red circle", n=2, seed=3)]
    assert drawn == [pipeline.generation] * 2
    pixels(cfg_schedule="constant", cfg_plausibility=0, temperature=0.5, top_k=0)
    assert drawn[-1] == GenerationSettings(temperature=0.5)
    bad = httpx.post(f"{live_server.url}/v1/generate", json={"prompt": "a", "cfg_schedule": "cosine"}, timeout=60)
    assert bad.status_code == 422 and "cfg_schedule" in bad.text


def test_generate_returns_the_pipelines_images_as_png(live_server):
    pipeline = live_server.app.state.pipeline
    body = {"prompt": "a red circle", "n": 3, "cfg": 3.0, "temperature": 1.0, "seed": 7}
    response = httpx.post(f"{live_server.url}/v1/generate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["batched_with"] == 1 and result["modality"] == "vq_generation" and result["seed"] == 7
    expected = pipeline.generate_images("a red circle", n=3, cfg=3.0, temperature=1.0, seed=7)
    assert [_pixels(png) for png in result["images"]] == [image.tobytes() for image in expected]
    assert len({_pixels(png) for png in result["images"]}) == 3  # sampled, not one image three times
    parallel = httpx.post(f"{live_server.url}/v1/generate", json=body | {"decoding": "zipar:2"}, timeout=60)
    assert parallel.status_code == 200, parallel.text
    expected = pipeline.generate_images("a red circle", n=3, cfg=3.0, temperature=1.0, seed=7, decoding="zipar:2")
    assert [_pixels(png) for png in parallel.json()["images"]] == [image.tobytes() for image in expected]
    assert parallel.json()["images"] != result["images"]  # the decoding reached the engine


def test_understand_answers_like_the_pipeline(live_server, tmp_path):
    pipeline = live_server.app.state.pipeline
    (tmp_path / "scene.png").write_bytes(_png(1))
    response = httpx.post(
        f"{live_server.url}/v1/understand",
        data={"question": QUESTION, "max_new_tokens": "12"},
        files={"image": ("scene.png", _png(1), "image/png")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["modalities"] == ["image_understanding"]
    assert response.json()["answer"] == pipeline.answer(QUESTION, image=tmp_path / "scene.png", max_new_tokens=12)
    other = httpx.post(
        f"{live_server.url}/v1/understand",
        data={"question": QUESTION, "max_new_tokens": "12"},
        files={"image": ("other.png", _png(2), "image/png")},
        timeout=60,
    )
    (tmp_path / "other.png").write_bytes(_png(2))
    assert other.json()["answer"] == pipeline.answer(QUESTION, image=tmp_path / "other.png", max_new_tokens=12)


BAD_REQUESTS = [
    # (name, method kwargs, status, words the message must contain)
    ("malformed JSON", {"url": "/v1/generate", "content": b'{"prompt": "a", "n": 2,', "headers": {"content-type": "application/json"}},
     400, ["malformed JSON", "character 23"]),
    ("missing prompt", {"url": "/v1/generate", "json": {"n": 2}}, 422, ["prompt", "required"]),
    ("n of zero", {"url": "/v1/generate", "json": {"prompt": "a", "n": 0}}, 422, ["n:", "greater than or equal to 1"]),
    ("n over the batch", {"url": "/v1/generate", "json": {"prompt": "a", "n": 17}}, 422, ["n must be at most 16"]),
    ("temperature", {"url": "/v1/generate", "json": {"prompt": "a", "temperature": 50}}, 422, ["temperature", "less than or equal to 10"]),
    ("negative cfg", {"url": "/v1/generate", "json": {"prompt": "a", "cfg": -1}}, 422, ["cfg", "greater than or equal to 0"]),
    ("unknown decoding", {"url": "/v1/generate", "json": {"prompt": "a", "decoding": "beam"}}, 422, ["decoding", "should match pattern"]),
    ("unknown key", {"url": "/v1/generate", "json": {"prompt": "a", "steps": 3}}, 422, ["steps", "Extra inputs"]),
    ("unknown output modality", {"url": "/v1/generate", "json": {"prompt": "a", "modality": "audio"}},
     400, ["no output modality 'audio'", "vq_generation"]),
    ("non-image upload", {"url": "/v1/understand", "data": {"question": "q"}, "files": {"image": ("notes.txt", b"hello", "text/plain")}},
     400, ["notes.txt", "not a recognised image"]),
    ("oversize upload", {"url": "/v1/understand", "data": {"question": "q"},
                         "files": {"image": ("big.png", b"\0" * (UPLOAD_LIMIT_BYTES + 1), "image/png")}},
     413, ["image upload 'big.png'", "larger than the 64 KiB limit"]),
    ("oversize body", {"url": "/v1/understand", "data": {"question": "q"},
                       "files": {"image": ("huge.png", b"\0" * (3 * UPLOAD_LIMIT_BYTES), "image/png")}},
     413, ["request body", "over this server's limit"]),
    ("unknown input modality", {"url": "/v1/understand", "data": {"question": "q"}, "files": {"points": ("a.ply", b"ply", "text/plain")}},
     400, ["unknown field 'points'", "image (image_understanding)"]),
    ("empty question", {"url": "/v1/understand", "data": {"question": ""}}, 422, ["question", "at least 1 character"]),
    ("answer too long", {"url": "/v1/understand", "data": {"question": "q", "max_new_tokens": "100000"}}, 422, ["max_new_tokens", "256"]),
    ("JSON to the form endpoint", {"url": "/v1/understand", "json": {"question": "q"}}, 415, ["multipart/form-data"]),
    ("prompt over the context", {"url": "/v1/generate", "json": {"prompt": "red " * 400, "n": 1}}, 400, ["over the model's context=128"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "request_kwargs", "status", "words"), BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx(live_server, name, request_kwargs, status, words):
    kwargs = dict(request_kwargs)
    response = httpx.post(live_server.url + kwargs.pop("url"), timeout=60, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and all(word in detail for word in words), detail
    assert "/tmp" not in detail  # no server paths leak into messages


def test_the_server_keeps_serving_after_bad_requests(live_server):
    before = _stats(live_server.url)
    assert httpx.post(f"{live_server.url}/v1/generate", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    bad = httpx.post(f"{live_server.url}/v1/generate", json={"prompt": "red " * 400, "n": 1}, timeout=60)
    assert bad.status_code == 400  # rejected by the model inside the worker thread
    good = httpx.post(f"{live_server.url}/v1/generate", json={"prompt": "a blue square", "n": 1}, timeout=60)
    assert good.status_code == 200 and len(good.json()["images"]) == 1
    after = _stats(live_server.url)
    assert after["generate"]["failed"] == before["generate"]["failed"] + 1
    assert after["generate"]["requests"] == before["generate"]["requests"] + 2


async def _post_all(url: str, bodies: list[dict]) -> list:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(client.post("/v1/generate", json=body) for body in bodies))


def test_sixteen_simultaneous_requests_are_all_answered_in_shared_batches(live_server):
    pipeline = live_server.app.state.pipeline
    before = _stats(live_server.url)["generate"]
    prompts = [f"a {colour} {shape}" for colour in ("red", "green", "blue", "yellow") for shape in ("circle", "square", "triangle", "star")]
    bodies = [{"prompt": prompt, "n": 1, "cfg": 2.0, "temperature": 0.0, "seed": 0} for prompt in prompts]
    responses = asyncio.run(_post_all(live_server.url, bodies))
    assert [r.status_code for r in responses] == [200] * 16
    after = _stats(live_server.url)["generate"]
    assert after["requests"] - before["requests"] == 16
    batches = after["batches"] - before["batches"]
    assert batches < 16 and after["shared_batches"] > before["shared_batches"], after
    sizes = [r.json()["batched_with"] for r in responses]
    assert max(sizes) > 1 and max(sizes) <= 16
    # Greedy drawing does not depend on the batch: each request got its own prompt's image.
    expected = pipeline.generate(prompts, n=1, cfg=2.0, temperature=0.0, seed=0)
    assert [_pixels(r.json()["images"][0]) for r in responses] == [items[0].tobytes() for items in expected]


def test_a_full_queue_answers_503_and_recovers(live_server):
    with extra_server(live_server, max_queue=1, max_batch_images=4) as server:
        bodies = [{"prompt": "a red circle", "n": 4, "seed": index} for index in range(8)]  # distinct seeds: no batching
        responses = asyncio.run(_post_all(server.url, bodies))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) == {200, 503}, codes  # the first is drawn; those over the one waiting place are refused
        refused = next(r for r in responses if r.status_code == 503)
        assert "queue of 1 waiting requests is full" in refused.json()["detail"] and refused.headers["retry-after"] == "1"
        assert httpx.post(f"{server.url}/v1/generate", json={"prompt": "a", "n": 1}, timeout=60).status_code == 200


def test_a_slow_request_times_out_with_504(live_server):
    with extra_server(live_server, request_timeout_s=0.001, max_batch_images=16) as server:
        response = httpx.post(f"{server.url}/v1/generate", json={"prompt": "a red circle", "n": 16}, timeout=60)
        assert response.status_code == 504 and "did not finish within 0.001 s" in response.json()["detail"]
        assert httpx.get(f"{server.url}/v1/health").json()["status"] == "ok"
