"""Linear layers for the few rows of a decode step on a CPU.

Decoding multiplies a few rows (two per image with CFG) by every weight matrix of the
model, once per token, so a step takes as long as streaming the weights through the
cores. `F.linear(x, W)` asks MKL for `x @ W.T`; for a handful of rows MKL's `sgemm`
then reads the row-major float32 weights at 4-5 GB/s on our benchmark machine (AMD
EPYC, AVX2), a quarter of what its memory delivers. The same product written the other
way round, `(W @ x.T).T`, with `x.T` a transposed view, makes MKL stream `W` in its
natural order, about twice as fast, on the same tensors: no copy, no extra memory.

`SkinnyLinears(model).active()` computes every plain `nn.Linear` of `model` that way
while the context is open, for calls without gradients, on a CPU, in float32, with at
most `MAX_SKINNY_ROWS` rows (a prefill keeps `F.linear`) and weights of at least
`MIN_SKINNY_WEIGHT` elements (for tiny ones the extra ops cost more than they save). Results equal `F.linear` up
to float rounding (another summation order), not bit for bit. It works eagerly and
inside `torch.compile`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

MAX_SKINNY_ROWS = 16
"""Above this many rows MKL's own choice for `F.linear` is as fast (measured)."""
MIN_SKINNY_WEIGHT = 1 << 16
"""Weights with fewer elements (256 KiB in float32) keep `F.linear`."""
SKINNY_DTYPES = (torch.float32,)


def skinny_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the transposed product is used for weights of `dtype` on `device`."""
    return device.type == "cpu" and dtype in SKINNY_DTYPES


def skinny_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(inputs, weight, bias)` for inputs (..., in) of few rows, as `(W @ x.T).T`."""
    rows = inputs.reshape(-1, inputs.shape[-1])  # (R, in)
    if bias is None:
        product = torch.mm(weight, rows.t())  # (out, R)
    else:
        product = torch.addmm(bias[:, None], weight, rows.t())
    return product.t().contiguous().reshape(*inputs.shape[:-1], weight.shape[0])


def _worth_it(weight: torch.Tensor) -> bool:
    """Whether a layer's weight qualifies (checked once per context, not per call)."""
    return weight.numel() >= MIN_SKINNY_WEIGHT and skinny_available(weight.device, weight.dtype)


def _rows(inputs: torch.Tensor) -> int:
    return inputs.numel() // inputs.shape[-1] if inputs.shape[-1] else 0


class SkinnyLinears:
    """Computes the plain `nn.Linear` layers of `model` with `skinny_linear` inside
    `active()` where that is faster; layers with a forward of their own (another
    library's hooks) are left alone."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        # One forward per layer, kept, so a compiled step sees the same function every call.
        self._forwards: weakref.WeakKeyDictionary[nn.Linear, Callable[[torch.Tensor], torch.Tensor]] = weakref.WeakKeyDictionary()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Skinny products for the model's linear layers until the context closes."""
        layers = [m for m in self.model.modules() if type(m) is nn.Linear and "forward" not in m.__dict__ and _worth_it(m.weight)]
        for layer in layers:
            layer.forward = self._forward_of(layer)
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward

    def _forward_of(self, layer: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
        if layer not in self._forwards:
            reference = weakref.ref(layer)  # the layer holds its forward: no cycle through it

            def forward(inputs: torch.Tensor) -> torch.Tensor:
                module = reference()
                if torch.is_grad_enabled() or _rows(inputs) > MAX_SKINNY_ROWS or inputs.dtype != module.weight.dtype:
                    return nn.functional.linear(inputs, module.weight, module.bias)
                return skinny_linear(inputs, module.weight, module.bias)

            self._forwards[layer] = forward
        return self._forwards[layer]
