"""The generation benchmark's bandwidth floor counts the bytes a decode really reads:
linear weights by the layers called, the KV cache by what a real cache holds."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import bandwidth_floor  # noqa: E402
from bandwidth_floor import kv_cache_bytes, linear_bytes_per_token  # noqa: E402

from modal_core.model.unified import _cache_argument  # noqa: E402


def test_linear_bytes_count_each_call_of_each_layer():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4, bias=False), nn.Embedding(100, 8))

    def decode() -> None:
        for _ in range(3):  # three tokens through both linear layers; the embedding is not a product
            model[2](model[0](torch.randn(2, 8)))
        model[0](torch.randn(1, 8))  # one more call of the first layer only

    first, second = (8 * 16 + 16) * 4, 16 * 4 * 4
    assert linear_bytes_per_token(decode, model, tokens=3) == ((4 * first + 3 * second) / 3, None)
    assert not any(module._forward_pre_hooks for module in model.modules())  # hooks removed


def test_kv_cache_bytes_equal_a_real_cache_over_a_decode():
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2
    )
    model = LlamaForCausalLM(config).eval()
    rows, prompt, tokens = 3, 5, 7
    cache, attended = DynamicCache(config=config), []
    cache_argument = {_cache_argument(model.model): cache}  # `past_key_values` before transformers 5.x renamed it
    ids = torch.randint(0, 64, (rows, prompt))
    with torch.no_grad():
        for _ in range(tokens):  # the prefill, then one position a step
            logits = model(input_ids=ids, **cache_argument, use_cache=True).logits
            attended.append(sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers))
            ids = logits[:, -1:].argmax(-1)
    assert kv_cache_bytes(config, rows, prompt, tokens, torch.float32) == sum(attended) / tokens
    assert kv_cache_bytes(config, rows, prompt, tokens, torch.bfloat16) == sum(attended) / tokens / 2


def test_read_bandwidth_is_bytes_over_the_fastest_read(monkeypatch):
    monkeypatch.setitem(bandwidth_floor.READ_MEGABYTES, "cpu", 8)
    durations = iter([0.1, 0.5, 0.25, 0.75])  # the warm-up (fastest, but not counted), then three timed reads
    clock = [0.0]

    def fake_clock() -> float:  # called before and after each read
        if len(clock) % 2 == 0:
            clock.append(clock[-1] + next(durations))
        else:
            clock.append(clock[-1])
        return clock[-1]

    monkeypatch.setattr(bandwidth_floor.time, "perf_counter", fake_clock)
    assert bandwidth_floor.read_bandwidth(torch.device("cpu"), repeats=3) == 8 * 2**20 / 0.25
