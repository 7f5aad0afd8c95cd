"""A checkpoint's files carry SHA-256 hashes taken while writing; damaged content of the
right size, non-finite weights and malformed manifests are refused by name."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from modal_core.checkpoints import store
from modal_core.checkpoints.hashed_writer import save_hashed
from modal_core.errors import CheckpointError


def _checkpoint(tmp_path, state=None):
    target = tmp_path / "ckpt"
    state = state or {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3, dtype=torch.bfloat16)}

    def fill(directory):
        store.save_model_state(state, directory)
        (directory / "tokenizer.json").write_text('{"model": "bpe"}')

    store.write_atomically(target, fill)
    return target


def test_the_hashed_writer_writes_what_safetensors_reads_and_hashes_the_file(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randint(0, 9, (4,), dtype=torch.int64),
        "c": torch.tensor(True),
        "d": torch.randn(2, 2).to(torch.bfloat16),
        "empty": torch.zeros(0, 3),
        "rng": torch.tensor([1, 2**32 - 1], dtype=torch.uint32),  # e.g. a generator state
    }
    path = tmp_path / "x.safetensors"
    digest = save_hashed(tensors, path, metadata={"format": "test"})
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    reference = tmp_path / "ref.safetensors"
    save_file(tensors, str(reference), metadata={"format": "test"})
    assert path.stat().st_size == reference.stat().st_size  # same format, same header padding


def test_the_manifest_holds_size_and_hash_of_every_file(tmp_path):
    target = _checkpoint(tmp_path)
    files = json.loads((target / store.MANIFEST).read_text())["files"]
    assert sorted(files) == ["model.safetensors", "tokenizer.json"]
    for name, entry in files.items():
        content = (target / name).read_bytes()
        assert entry == {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    assert not (target / ".digests.json").exists()


def test_same_size_nan_weights_are_refused_by_their_hash(tmp_path):
    target = _checkpoint(tmp_path)
    model = target / store.MODEL_FILE
    data = bytearray(model.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # tensor data follows the header; `w` comes first
    data[start + 20 : start + 24] = torch.tensor([float("nan")]).view(torch.uint8).numpy().tobytes()  # w[1, 2] := NaN
    model.write_bytes(bytes(data))
    assert torch.isnan(load_file(str(model))["w"][1, 2])  # same size, still a valid file: only the hash tells
    with pytest.raises(CheckpointError, match=r"model\.safetensors is damaged: its content differs .*SHA-256"):
        store.load_model_state(target)


def test_weights_saved_with_nan_are_refused_naming_the_tensor(tmp_path):
    target = _checkpoint(tmp_path, {"w": torch.tensor([1.0, float("inf")]), "ok": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"weights hold NaN or infinite values in \['w'\]; the checkpoint is damaged or diverged"):
        store.load_model_state(target)
    assert torch.isinf(store.load_model_state(target, verify_content=False)["w"][1])


def test_skipping_verification_checks_sizes_only(tmp_path):
    target = _checkpoint(tmp_path)
    tokenizer = target / "tokenizer.json"
    tokenizer.write_text('{"model": "xyz"}')  # same size, other content
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is damaged"):
        store.verify(target)
    assert store.verify(target, hashes=False) == target


@pytest.mark.parametrize(
    "manifest", ['{"format": "modal-core-checkpoint/1"}', '{"format": "modal-core-checkpoint/1", "files": []}', "[1, 2]"]
)
def test_a_malformed_manifest_is_named(tmp_path, manifest):
    target = _checkpoint(tmp_path)
    (target / store.MANIFEST).write_text(manifest)
    with pytest.raises(CheckpointError, match=r"manifest\.json is damaged: expected an object with a 'files' mapping"):
        store.verify(target)


def test_manifests_of_earlier_releases_with_sizes_only_still_load(tmp_path):
    target = _checkpoint(tmp_path)
    manifest = json.loads((target / store.MANIFEST).read_text())
    manifest["files"] = {name: entry["bytes"] for name, entry in manifest["files"].items()}
    (target / store.MANIFEST).write_text(json.dumps(manifest))
    assert torch.equal(store.load_model_state(target)["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
