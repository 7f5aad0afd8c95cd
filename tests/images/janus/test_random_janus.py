"""`save_random_janus`: deterministic random Janus folders, and a clear error for an unknown size."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from modal_core.errors import CheckpointError
from modal_core_images.janus.random_janus import save_random_janus

from .tiny_janus import TINY


def _weights(directory) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_the_seed_alone_decides_the_weights(tmp_path):
    first, again, other = (save_random_janus(TINY, tmp_path / name, seed=seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    a, b, c = _weights(first), _weights(again), _weights(other)
    assert sorted(a) == sorted(b) == sorted(c)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["model.vision_model.post_layernorm.weight"], c["model.vision_model.post_layernorm.weight"])
    assert not torch.equal(a["model.vision_model.post_layernorm.weight"], torch.ones_like(a["model.vision_model.post_layernorm.weight"]))


def test_an_unknown_size_name_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="unknown random Janus size 'huge'.*tiny"):
        save_random_janus("huge", tmp_path / "out")
    assert not (tmp_path / "out").exists()
