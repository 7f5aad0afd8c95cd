"""The API follows the model's modalities, whatever plugins they come from: the toy
plugin's input gets an upload field named by its `cli_flag`, and its non-image output is
refused with a clear message instead of a broken PNG."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.schema import Recipe
from modal_core.data.collator import Collator
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.generation.pipeline import Pipeline

from .conftest import serve_pipeline

httpx = pytest.importorskip("httpx", reason="httpx is a dev dependency: pip install -e '.[dev]'")


@pytest.fixture
def toy_pipeline(toy_plugins) -> Pipeline:
    recipe = OmegaConf.merge(
        OmegaConf.structured(Recipe), {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": {"toy_vector": {}, "toy_codes": {}}}
    )
    tokenizer = train_tokenizer(["draw the toy codes", "what is the toy vector"] * 20, 300, special_tokens_of(recipe, toy_plugins))
    built = assemble(recipe, toy_plugins, tokenizer)
    return Pipeline(replace(built, collator=Collator(tokenizer, built.modalities, max_length=64)))


def test_upload_fields_come_from_the_models_input_modalities(toy_pipeline):
    with serve_pipeline(toy_pipeline) as server:
        listing = httpx.get(f"{server.url}/v1/modalities").json()["modalities"]
        assert {(m["name"], m["direction"], m["upload_field"]) for m in listing} == {
            ("toy_vector", "input", "toy"),
            ("toy_codes", "output", None),
        }
        form = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/understand"]["post"]["requestBody"]
        assert "toy" in form["content"]["multipart/form-data"]["schema"]["properties"]
        wrong = httpx.post(f"{server.url}/v1/understand", data={"question": "q"}, files={"image": ("a.png", b"x", "image/png")})
        assert wrong.status_code == 400 and "unknown field 'image'" in wrong.json()["detail"]
        assert "file uploads: toy (toy_vector)" in wrong.json()["detail"]
        drawn = httpx.post(f"{server.url}/v1/generate", json={"prompt": "draw the toy codes", "n": 1}, timeout=60)
        assert drawn.status_code == 400 and "'toy_codes' produces list objects" in drawn.json()["detail"]
        assert httpx.get(f"{server.url}/v1/health").json()["stats"]["generate"]["failed"] == 1
