"""`trainer.strategy: fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) through
Lightning's `ModelParallelStrategy`.

Every block (the backbone's decoder layers and the classes plugins declare) becomes its
own FSDP unit and the whole model the root unit. FSDP2 shards each parameter as a
DTensor, one at a time, so frozen encoders and partly frozen groups need no
`use_orig_params` flat-parameter workaround, gradient clipping over the shards is
`torch.nn.utils.clip_grad_norm_` on DTensors, and it runs on CPU with gloo as on GPUs
with NCCL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from modal_core.errors import RecipeError
from modal_core.scale.blocks import checkpoint_blocks
from modal_core.scale.sharded import DCP_METADATA, finish_sharded_checkpoint

RESHARD_AFTER_FORWARD = {"FULL_SHARD": True, "SHARD_GRAD_OP": False, "HYBRID_SHARD": True, "NO_SHARD": False}
"""`trainer.fsdp_sharding` -> whether a unit frees its gathered weights after its forward."""


def fsdp_mesh(sharding: str, device_type: str, world_size: int, num_nodes: int) -> DeviceMesh:
    """The device mesh of `trainer.fsdp_sharding`: one dimension that shards over every
    process, or (replicate, shard) for HYBRID_SHARD (shard within a node) and NO_SHARD
    (replicate everywhere, like DDP)."""
    if sharding == "HYBRID_SHARD":
        return init_device_mesh(device_type, (num_nodes, world_size // num_nodes), mesh_dim_names=("replicate", "shard"))
    if sharding == "NO_SHARD":
        return init_device_mesh(device_type, (world_size, 1), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device_type, (world_size,), mesh_dim_names=("shard",))


def shard_model(
    model: nn.Module,
    blocks: tuple[type[nn.Module], ...],
    mesh: DeviceMesh,
    mixed_precision: MixedPrecisionPolicy,
    reshard_after_forward: bool,
    activation_checkpointing: bool,
) -> None:
    """Apply `fully_shard` to every instance of `blocks` (inner blocks first, each with
    its activation-checkpointing wrapper when asked), then to `model` as the root unit."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    if len(dtypes) > 1:
        raise RecipeError(
            f"trainer.strategy: fsdp needs the weights in one dtype, found {', '.join(dtypes)} (e.g. backbone.dtype "
            "bfloat16 beside float32 adapters or LoRA factors); keep backbone.dtype float32 and set trainer.precision: "
            "bf16-mixed, which gathers and computes in bfloat16"
        )
    if activation_checkpointing:
        checkpoint_blocks(model, blocks)
    wrapped = {id(m._checkpoint_wrapped_module) for m in model.modules() if isinstance(m, CheckpointWrapper)}
    units = [m for m in model.modules() if isinstance(m, CheckpointWrapper) or (isinstance(m, blocks) and id(m) not in wrapped)]
    for unit in reversed(units):  # children before parents: a parent's unit holds what its children's do not
        fully_shard(unit, mesh=mesh, mp_policy=mixed_precision, reshard_after_forward=reshard_after_forward)
    # The root's weights are needed again at once by the backward pass: kept gathered.
    fully_shard(model, mesh=mesh, mp_policy=mixed_precision, reshard_after_forward=False)


class FullyShardedStrategy(ModelParallelStrategy):
    """Lightning's FSDP2 strategy, told how to shard a modal-core model, whose
    checkpoints are modal-core checkpoints: sharded ones carry the run's files and a
    manifest; full ones are written and read by the trainer's `CheckpointIO`."""

    # Lightning's `FSDPStrategy` wraps with FSDP1 (flat parameters: frozen and trainable
    # weights in one unit need `use_orig_params`, and it has no CPU mode); its
    # `ModelParallelStrategy` applies FSDP2, which is why it is the base here.

    def __init__(
        self,
        write_extras: Callable[[Path], None],
        blocks: tuple[type[nn.Module], ...],
        sharding: str = "FULL_SHARD",
        state_dict: str = "full",
        activation_checkpointing: bool = False,
        mixed_precision: MixedPrecisionPolicy | None = None,
    ) -> None:
        super().__init__(save_distributed_checkpoint=state_dict == "sharded")
        self._write_extras = write_extras
        self.blocks, self.sharding, self.activation_checkpointing = blocks, sharding, activation_checkpointing
        self.mixed_precision = mixed_precision or MixedPrecisionPolicy()

    @property
    def state_dict_type(self) -> str:
        """`sharded` (every rank writes its shard) or `full` (gathered on rank 0)."""
        return "sharded" if self._save_distributed_checkpoint else "full"

    def shard(self, model: nn.Module) -> None:
        """Shard `model` in place (once; called from the LightningModule's `configure_model`)."""
        if isinstance(model, FSDPModule):
            return
        mesh = fsdp_mesh(self.sharding, self.root_device.type, self.world_size, self.num_nodes)
        reshard = RESHARD_AFTER_FORWARD[self.sharding]
        shard_model(model, self.blocks, mesh, self.mixed_precision, reshard, self.activation_checkpointing)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        super().save_checkpoint(checkpoint, filepath, storage_options)
        if self._save_distributed_checkpoint:
            self.barrier("modal_core_sharded_checkpoint")  # every shard is on disk
            if self.is_global_zero:
                finish_sharded_checkpoint(Path(filepath), self._write_extras)
            self.barrier("modal_core_sharded_manifest")

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Restore weights and optimizer states into the sharded model from a sharded
        checkpoint (each rank reads its shards) or a full one (each rank reads the file
        and keeps its shard)."""
        path = Path(checkpoint_path)
        if (path / DCP_METADATA).is_file():
            return super().load_checkpoint(path, weights_only)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict
        from torch.distributed.fsdp import FullyShardedDataParallel, OptimStateKeyType

        checkpoint = self.checkpoint_io.load_checkpoint(path)
        options = StateDictOptions(full_state_dict=True, strict=self.lightning_module.strict_loading)
        set_model_state_dict(self.model, checkpoint.pop("state_dict"), options=options)
        for optimizer, state in zip(self.optimizers, checkpoint.pop("optimizer_states", [])):
            by_name = FullyShardedDataParallel.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_NAME, self.model)
            set_optimizer_state_dict(self.model, optimizer, by_name, options=options)
        return checkpoint
