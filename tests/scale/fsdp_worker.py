"""Train several recipes in turn with every shipped plugin and, on every rank, record
what the rank holds: `OUT/<run>/rank<r>.json` with the bytes of its local shards
(parameters, gradients, AdamW states) and its FSDP units when the run ends, the
global gradient norm before and after clipping in each step and the modalities that
had items in the rank's batch of each step; (rank 0) the weights
gathered from the shards when the run starts and ends, `initial.safetensors` and
`full.safetensors`.

Run as a script, `fsdp_worker.py OUT RECIPE...`: Lightning's launcher starts the other
ranks by running this same command line again, exactly as it does for `modal-core
train`, and every rank trains the recipes in the same order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: conftest's plugin manager

from conftest import builtin_plugin_manager  # noqa: E402

from modal_core.config.loader import load_recipe  # noqa: E402
from modal_core.training import run  # noqa: E402
from modal_core.training.module import UnifiedTrainingModule  # noqa: E402


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the part of `tensor` this rank stores."""
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


class ShardRecordingModule(UnifiedTrainingModule):
    """The training module, plus a record of this rank's shards after the last step."""

    out_dir: Path

    def on_train_start(self) -> None:
        self._gradient_norms: list[tuple[float, float]] = []
        self._modalities: list[list[str]] = []
        self._save_gathered("initial.safetensors")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Modalities without items come too, as zero-item payloads: only those with items count.
        self._modalities.append(sorted(name for name, media in batch.media.items() if len(media.payload)))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        before = self._gradient_norm()
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self._gradient_norms.append((before, self._gradient_norm()))

    def _gradient_norm(self) -> float:
        """The norm of all gradients of the model, over every rank's shards."""
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # The gradients of the step, reduced to this rank's shard, just before AdamW reads them.
        self._gradient_bytes = sum(local_bytes(p.grad) for p in self.model.parameters() if p.grad is not None)

    def on_train_end(self) -> None:
        optimizer = self.optimizers().optimizer
        states = [value for state in optimizer.state.values() for key, value in state.items() if key != "step"]
        record = {
            "parameters": sum(local_bytes(p) for p in self.model.parameters()),
            "gradients": self._gradient_bytes,
            "optimizer": sum(local_bytes(value) for value in states),
            "units": sorted(type(m).__name__ for m in self.model.modules() if isinstance(m, FSDPModule)),
            "gradient_norms": self._gradient_norms,  # (before, after) clipping, per step
            "modalities": self._modalities,  # per step
            "sharded": all(isinstance(p, DTensor) for p in self.model.parameters()),
        }
        (self.out_dir / f"rank{self.global_rank}.json").write_text(json.dumps(record))
        self._save_gathered("full.safetensors")

    def _save_gathered(self, name: str) -> None:
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.global_rank == 0:
            save_file({key: value.contiguous() for key, value in full.items()}, str(self.out_dir / name))


def main(out_dir: str, *recipes: str) -> None:
    run.UnifiedTrainingModule = ShardRecordingModule  # the one class `train` instantiates
    plugins = builtin_plugin_manager()
    for recipe in recipes:
        ShardRecordingModule.out_dir = Path(out_dir) / Path(recipe).stem
        ShardRecordingModule.out_dir.mkdir(parents=True, exist_ok=True)
        run.train(load_recipe(recipe, plugins=plugins), plugins)


if __name__ == "__main__":
    main(*sys.argv[1:])
