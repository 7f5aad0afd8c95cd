"""Strategies, block discovery, activation checkpointing and throughput accounting."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from omegaconf import OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from modal_core import hookimpl
from modal_core.config.schema import TrainerConfig
from modal_core.errors import RecipeError
from modal_core.model.unified import UnifiedModel
from modal_core.scale.blocks import block_classes, checkpoint_blocks
from modal_core.scale.fsdp import FullyShardedStrategy, shard_model
from modal_core.scale.strategy import build_strategy, check_machine, lightning_precision
from modal_core.scale.throughput import FlopsModel, peak_flops


class ToyBlock(nn.Module):
    """A residual MLP block an encoder repeats."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


class ToyBlockEncoder(nn.Module):
    def __init__(self, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ToyBlock(width) for _ in range(depth)))

    def encode(self, payload: torch.Tensor) -> torch.Tensor:
        return self.blocks(payload)


class BlockPlugin:
    @hookimpl
    def modal_core_block_classes(self):
        return [ToyBlock]


class BrokenBlockPlugin:
    @hookimpl
    def modal_core_block_classes(self):
        return ["not a class"]


def _model(layers: int = 2) -> UnifiedModel:
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama", vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=layers, num_attention_heads=2
    )
    return UnifiedModel(AutoModelForCausalLM.from_config(config), {"toy": ToyBlockEncoder()}, {"toy": nn.Linear(8, 16)}, {})


def _settings(**values):
    return OmegaConf.merge(OmegaConf.structured(TrainerConfig), values)


def test_blocks_come_from_transformers_and_the_plugin_hook(plugins):
    plugins.register(BlockPlugin(), name="blocks")
    plugins.register(BrokenBlockPlugin(), name="broken")
    with pytest.warns(UserWarning, match="broken.*modal_core_block_classes"):
        declared = plugins.block_classes()
    assert declared == (ToyBlock,)
    assert set(block_classes(_model(), declared)) == {LlamaDecoderLayer, ToyBlock}
    assert block_classes(_model()) == (LlamaDecoderLayer,)


def _loss_and_grads(model: UnifiedModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    features = model.encode("toy", torch.randn(2, 4, 8))
    embeds = torch.cat([model.adapters["toy"](features), model.backbone.get_input_embeddings()(torch.randint(0, 50, (2, 6)))], 1)
    positions = torch.arange(10).expand(2, 10)
    hidden = model.transformer(embeds, torch.ones(2, 10, dtype=torch.long), positions).hidden  # (2, 10, 16)
    loss = model.logits("text", hidden).logsumexp(-1).mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_recomputes_blocks_without_changing_the_maths():
    plain = _model()
    checkpointed = copy.deepcopy(plain)
    assert checkpoint_blocks(checkpointed, (LlamaDecoderLayer, ToyBlock)) == 2 + 3
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # checkpoints stay interchangeable
    loss, grads = _loss_and_grads(plain)
    loss_ac, grads_ac = _loss_and_grads(checkpointed)
    torch.testing.assert_close(loss_ac, loss)
    clean = {name.replace("_checkpoint_wrapped_module.", ""): grad for name, grad in grads_ac.items()}
    assert clean.keys() == grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(clean[name], grad, rtol=1e-5, atol=1e-7)


def test_build_strategy_per_recipe_key():
    model, blocks = _model(), (LlamaDecoderLayer, ToyBlock)
    assert build_strategy(_settings(strategy="ddp"), model, blocks, print) == "ddp"
    settings = _settings(
        strategy="fsdp", accelerator="cpu", activation_checkpointing=True, fsdp_state_dict="sharded", precision="bf16-mixed"
    )
    fsdp = build_strategy(settings, model, blocks, print)
    assert isinstance(fsdp, FullyShardedStrategy)
    assert fsdp.blocks == blocks and fsdp.activation_checkpointing and fsdp.state_dict_type == "sharded"
    assert (fsdp.mixed_precision.param_dtype, fsdp.mixed_precision.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert lightning_precision(settings) == "32-true"  # FSDP2's policy casts; Lightning adds no autocast on top
    assert lightning_precision(_settings(precision="bf16-mixed")) == "bf16-mixed"
    full = build_strategy(_settings(strategy="fsdp", accelerator="cpu"), model, blocks, print)
    assert full.state_dict_type == "full" and full.mixed_precision.param_dtype is None
    assert not any("CheckpointWrapper" in type(m).__name__ for m in model.modules())  # FSDP applies it when it shards
    auto = build_strategy(_settings(activation_checkpointing=True), model, blocks, print)
    assert auto == "auto" and sum("CheckpointWrapper" in type(m).__name__ for m in model.modules()) == 5


def test_fsdp_refuses_weights_of_mixed_dtypes_before_sharding():
    model = _model()
    model.backbone.to(torch.bfloat16)  # the adapter stays float32
    with pytest.raises(RecipeError, match="fsdp needs the weights in one dtype, found bfloat16, float32"):
        shard_model(model, (LlamaDecoderLayer,), None, None, reshard_after_forward=True, activation_checkpointing=False)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"accelerator": "gpu"}, "this machine has no usable CUDA GPU"),
        ({"strategy": "deepspeed_stage_2"}, "needs DeepSpeed, which is not installed"),
    ],
)
def test_strategies_this_machine_cannot_run_are_named(values, message):
    if values.get("strategy", "").startswith("deepspeed") and importlib.util.find_spec("deepspeed"):
        pytest.skip("deepspeed is installed here")
    if values.get("accelerator") == "gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RecipeError, match=message):
        check_machine(_settings(**values))


def test_fsdp_bf16_is_refused_on_a_gpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(RecipeError, match="bf16-mixed with strategy fsdp, but this GPU has no bfloat16 support"):
        check_machine(_settings(strategy="fsdp", precision="bf16-mixed", accelerator="gpu"))
    check_machine(_settings(strategy="fsdp", precision="bf16-mixed", accelerator="cpu"))  # CPUs compute in bfloat16


def test_flops_count_matches_a_hand_count():
    model = _model(layers=2)
    flops = FlopsModel.of(model)
    layer = 4 * 16 * 16 + 3 * 16 * 32 + 2 * 16
    assert flops.matmul_params == 2 * layer + 16 + 50 * 16  # layers, final norm, LM head (no input embedding)
    assert flops.backward_factor == 2
    # 100 tokens in rows of 10: forward 2N + 4 L h T per token, backward twice that.
    assert flops.batch_flops(100, 10) == 3 * (2 * flops.matmul_params + 4 * 2 * 16 * 10) * 100
    model.backbone.requires_grad_(False)
    assert FlopsModel.of(model).backward_factor == 1


def test_peak_flops_come_from_lightnings_table_for_the_compute_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cuda = torch.device("cuda", 0)
    assert peak_flops(cuda, "bf16-mixed") == get_available_flops(cuda, torch.bfloat16) == pytest.approx(989.4e12)
    assert peak_flops(cuda, "16-true") == get_available_flops(cuda, torch.float16)
    assert peak_flops(torch.device("cpu"), "bf16-mixed") is None
    assert peak_flops(torch.device("cpu"), "32-true", override_tflops=2.5) == 2.5e12


def _monitor_run(monkeypatch, log_every_n_steps: int, clock: list[float]):
    """A ThroughputMonitor with a fake trainer, module and clock; returns (monitor, trainer, module, logged records)."""
    from types import SimpleNamespace

    from modal_core.scale import throughput

    times = iter(clock)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(times))
    logged: list[dict] = []

    def log(key, value, batch_size):
        logged[-1][key] = value

    module = SimpleNamespace(device=torch.device("cpu"), log=log)
    strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=lambda tensor, reduce_op: tensor)
    trainer = SimpleNamespace(global_step=0, strategy=strategy, world_size=1, log_every_n_steps=log_every_n_steps)
    flops = FlopsModel(matmul_params=1000, layers=2, hidden=16, backward_factor=2)
    monitor = throughput.ThroughputMonitor(flops, "32-true", override_tflops=1.0)
    monitor.setup(trainer, module, "fit")
    return monitor, trainer, module, logged, flops


def _batch(tokens: int, length: int = 10):
    from types import SimpleNamespace

    mask = torch.zeros(4, length, dtype=torch.long)
    mask.view(-1)[:tokens] = 1
    return SimpleNamespace(attention_mask=mask, input_ids=torch.zeros(4, length, dtype=torch.long))


def test_throughput_monitor_logs_tokens_and_mfu_per_optimizer_step(monkeypatch):
    monitor, trainer, module, logged, flops = _monitor_run(monkeypatch, 1, [10.0, 12.0])
    # `global_step` as each batch ends: step 1 ends; step 2's first micro-batch (still 1), its second.
    for step, tokens in [(1, 30), (1, 7), (2, 25)]:
        trainer.global_step = step
        logged.append({})
        monitor.on_train_batch_end(trainer, module, None, _batch(tokens), 0)
    assert logged[:2] == [{}, {}]  # step 1 ends: the window opens; accumulating: no clock read
    assert logged[2]["train/tokens_per_sec"] == (7 + 25) / 2.0  # both batches of step 2, two seconds later
    assert logged[2]["train/mfu"] == pytest.approx((flops.batch_flops(7, 10) + flops.batch_flops(25, 10)) / 2.0 / 1e12)


def test_throughput_monitor_logs_once_per_logged_step_over_the_steps_since_the_last(monkeypatch):
    monitor, trainer, module, logged, flops = _monitor_run(monkeypatch, 3, [10.0, 16.0, 19.0])
    tokens = {1: 11, 2: 12, 3: 13, 4: 14, 5: 15, 6: 16}
    for step, count in tokens.items():
        trainer.global_step = step
        logged.append({})
        monitor.on_train_batch_end(trainer, module, None, _batch(count), 0)
    # Step 1 opens the window at t=10; steps 3 and 6 are logged, over 2+3 and 4+5+6.
    assert [bool(record) for record in logged] == [False, False, True, False, False, True]
    assert logged[2]["train/tokens_per_sec"] == (12 + 13) / 6.0
    assert logged[5]["train/tokens_per_sec"] == (14 + 15 + 16) / 3.0
    assert logged[5]["train/mfu"] == pytest.approx(sum(flops.batch_flops(tokens[s], 10) for s in (4, 5, 6)) / 3.0 / 1e12)
