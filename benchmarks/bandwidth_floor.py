"""The memory-bandwidth floor of decoding: what every step must read, over what the
device reads per second, both measured in the benchmark's own run.

A decode step reads every weight it multiplies by once, whatever the batch, and each
row reads the keys and values of every position it attends to. `linear_bytes_per_token`
counts the first by hooking every `nn.Linear` during a real decode (so it holds for any
model and head); `kv_cache_bytes` computes the second from the backbone's config;
`read_bandwidth` times a large read (`sum`) on the device, the access pattern of a
decode step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")

READ_MEGABYTES = {"cpu": 512, "cuda": 4096}
"""Size of the tensor `read_bandwidth` sums: well past the last-level cache."""


def read_bandwidth(device: torch.device, repeats: int = 5) -> float:
    """Bytes per second of summing a large float32 tensor on `device` (the fastest of `repeats`)."""
    elements = READ_MEGABYTES.get(device.type, 1024) * 2**20 // 4
    data = torch.ones(elements, device=device)
    _timed_read(data, device)  # warm-up, not counted
    return data.numel() * data.element_size() / min(_timed_read(data, device) for _ in range(repeats))


def _timed_read(data: torch.Tensor, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    data.sum()
    synchronize(device)
    return time.perf_counter() - start


def linear_bytes_per_token(decode: Callable[[], T], model: nn.Module, tokens: int) -> tuple[float, T]:
    """Bytes of linear-layer weights (and biases) `decode()` reads per generated token
    (the bytes of every `nn.Linear` of `model` at each of its calls, summed, over
    `tokens`; the prefill counts as one token's read: it passes each weight once too),
    and what `decode()` returned."""
    read = 0

    def count(layer: nn.Module, *_) -> None:
        nonlocal read
        read += sum(parameter.numel() * parameter.element_size() for parameter in layer.parameters(recurse=False))

    hooks = [layer.register_forward_pre_hook(count) for layer in model.modules() if isinstance(layer, nn.Linear)]
    try:
        result = decode()
    finally:
        for hook in hooks:
            hook.remove()
    return read / tokens, result


def kv_cache_bytes(config, rows: int, prompt: int, tokens: int, dtype: torch.dtype) -> float:
    """Mean bytes of keys and values one decode step attends over: `rows` sequences of a
    `prompt`-position prompt that grow by one position per step for `tokens` steps."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_position = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * dtype.itemsize
    mean_span = prompt + (tokens - 1) / 2  # the spans of the steps run from `prompt` to `prompt + tokens - 1`
    return rows * mean_span * per_position


def decode_floor(decode: Callable[[], T], model: nn.Module, rows: int, prompt: int, tokens: int, bandwidth: float) -> tuple[dict, T]:
    """The floor of `decode()`, which draws `tokens` tokens for `rows` sequences of a
    `prompt`-position prompt with `model` (bytes read per token, weights and mean KV
    cache, and the seconds those take at `bandwidth` bytes/s), and what `decode()` returned."""
    weights, result = linear_bytes_per_token(decode, model, tokens)
    dtype = next(model.parameters()).dtype
    cache = kv_cache_bytes(model.backbone.config, rows, prompt, tokens, dtype)
    seconds = tokens * (weights + cache) / bandwidth
    floor = {"weight_bytes_per_token": weights, "kv_bytes_per_token": cache, "bandwidth_bytes_per_s": bandwidth, "seconds": seconds}
    return floor, result


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
