"""An evaluation suite: `modal-core eval CHECKPOINT --suite model_size --out DIR`."""

from pathlib import Path

from modal_core import hookimpl


def model_size(pipeline, options: dict, out_dir: Path) -> dict:
    """How many parameters the loaded model has, and how many of them train."""
    parameters = list(pipeline.model.parameters())
    return {"parameters": sum(p.numel() for p in parameters), "trainable": sum(p.numel() for p in parameters if p.requires_grad)}


@hookimpl
def modal_core_evaluators():
    return {"model_size": model_size}
