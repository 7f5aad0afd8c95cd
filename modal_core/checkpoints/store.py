"""The checkpoint directory: model weights, trainer state, recipe and tokenizer.

```
step-000100/
  model.safetensors          UnifiedModel.state_dict()
  trainer_state.json         optimizer, scheduler, loop counters, RNG (skeleton)
  trainer_state.safetensors  ... and their tensors
  recipe.yaml                the fully resolved recipe
  tokenizer.json, ...        the text tokenizer
  backbone/config.json       the backbone architecture (transformers config)
  manifest.json              format tag, the size and SHA-256 of every file (checked on load)
```
A checkpoint is written into a temporary sibling directory and renamed into place, so
a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from modal_core.checkpoints.hashed_writer import PENDING_DIGESTS, save_hashed
from modal_core.disk import written_whole
from modal_core.errors import CheckpointError

FORMAT = "modal-core-checkpoint/1"
SHARDED_FORMAT = "modal-core-sharded-checkpoint/1"
"""Manifest tag of an FSDP checkpoint kept as per-rank shards (see `modal_core.scale.sharded`)."""
MODEL_FILE = "model.safetensors"
RECIPE_FILE = "recipe.yaml"
"""The fully resolved recipe, in a checkpoint and at the top of its run directory."""
MANIFEST = "manifest.json"
CHECKPOINT_DIR = "checkpoints"
"""A run directory's folder of step checkpoints."""
LAST_LINK = "last"
"""Symbolic link in CHECKPOINT_DIR to the newest complete checkpoint."""


def write_atomically(path: Path, fill: Callable[[Path], None]) -> None:
    """Create directory `path` by letting `fill` write into a temporary directory that
    is then renamed into place (replacing an older `path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        with written_whole(path, partial=temporary):
            fill(temporary)
            _write_manifest(temporary)
        if path.exists():
            retired = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, retired)
            os.replace(temporary, path)
            shutil.rmtree(retired)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _write_manifest(directory: Path) -> None:
    """List every file with its size and SHA-256: the hashes `save_hashed` took while
    writing, the other (small) files hashed here."""
    pending = directory / PENDING_DIGESTS
    digests = json.loads(pending.read_text()) if pending.is_file() else {}
    pending.unlink(missing_ok=True)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = str(path.relative_to(directory))
        files[name] = {"bytes": path.stat().st_size, "sha256": digests.get(name) or file_sha256(path)}
    (directory / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}, indent=1))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint, a run directory or its checkpoints/ folder."""
    path = Path(path)
    for candidate in (path, path / LAST_LINK, path / CHECKPOINT_DIR / LAST_LINK):
        if (candidate / MANIFEST).is_file():
            return candidate.resolve()
    raise CheckpointError(f"no checkpoint at {path}: expected a step-* directory, a run directory, or its checkpoints/ folder")


def verify(directory: str | Path, allow_sharded: bool = False, hashes: bool = True) -> Path:
    """Check that `directory` is a complete modal-core checkpoint (or, with
    `allow_sharded`, a complete sharded FSDP one): every file of its manifest present,
    of its size and, with `hashes`, of its SHA-256 (a full read; skip it for huge
    checkpoints). Returns it as a Path."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory} is not a modal-core checkpoint (no {MANIFEST}); point at a step-* directory")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{manifest_path} is damaged ({error})") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{manifest_path} is damaged: expected an object with a 'files' mapping of file name to size and hash")
    if manifest.get("format") == SHARDED_FORMAT and not allow_sharded:
        raise CheckpointError(
            f"{directory} is a sharded FSDP checkpoint; resume from it with the same strategy, or consolidate it "
            f"first: modal-core export-checkpoint {directory} OUT_DIR"
        )
    if manifest.get("format") not in (FORMAT, SHARDED_FORMAT):
        raise CheckpointError(f"{directory}: unknown checkpoint format {manifest.get('format')!r}, expected {FORMAT!r}")
    for name, entry in manifest["files"].items():
        size, digest = (entry, None) if isinstance(entry, int) else (entry.get("bytes"), entry.get("sha256"))  # int: older manifests
        file = directory / name
        if not file.is_file() or file.stat().st_size != size:
            raise CheckpointError(f"{file} is missing or truncated (expected {size} bytes); the checkpoint is incomplete")
        if hashes and digest and file_sha256(file) != digest:
            raise CheckpointError(
                f"{file} is damaged: its content differs from what was written (SHA-256 mismatch); restore it or use another checkpoint"
            )
    return directory


def check_finite(state: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights holding NaN or infinity (they would give black images and empty
    answers), naming the first tensors that do."""
    bad = [key for key, tensor in state.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(f"{source}: weights hold NaN or infinite values in {_few(bad)}; the checkpoint is damaged or diverged")


def save_model_state(state: dict[str, torch.Tensor], directory: Path) -> None:
    """Save a state dict as `model.safetensors` (tied weights are stored per key)."""
    save_hashed(dict(state), directory / MODEL_FILE, metadata={"format": FORMAT})


def load_model_state(directory: str | Path, verify_content: bool = True) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint (or of a run directory's last checkpoint);
    `verify_content` checks the files' hashes and that every weight is finite."""
    directory = verify(resolve_checkpoint(directory), hashes=verify_content)
    try:
        state = load_file(str(directory / MODEL_FILE))
    except SafetensorError as error:
        raise CheckpointError(f"{directory / MODEL_FILE} is damaged or not a safetensors file ({error})") from error
    if verify_content:
        check_finite(state, directory / MODEL_FILE)
    return state


def load_into(model: torch.nn.Module, directory: str | Path, partial: bool = False) -> list[str]:
    """Load a checkpoint's weights into `model`; returns the model keys it lacked.

    Every checkpoint tensor must fit a model tensor of the same shape. Only with
    `partial` may the model have tensors the checkpoint lacks (they keep their values).
    """
    state = load_model_state(directory)
    missing = check_fits(model, state, directory, partial)
    model.load_state_dict(state, strict=False)
    return missing


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], directory: str | Path, partial: bool = False) -> list[str]:
    """Raise `CheckpointError` unless every tensor of `state` (read from `directory`) fits a
    `model` tensor of the same shape and, unless `partial`, `state` has every model tensor;
    returns the model keys it lacks."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in state if k in expected and state[k].shape != expected[k].shape
    ]
    if unexpected or wrong_shape or (missing and not partial):
        raise CheckpointError(
            f"{directory} does not fit this model: unexpected {_few(unexpected)}, missing {_few(missing)}, "
            f"wrong shapes {_few(wrong_shape)}; was it trained with another recipe?"
        )
    return missing


def _few(items: list[str]) -> str:
    return f"{items[:6]}{' and %d more' % (len(items) - 6) if len(items) > 6 else ''}"
