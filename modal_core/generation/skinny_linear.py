"""Linear layers for the few rows of a decode step on a CPU.

Decoding multiplies a few rows (two per image with CFG) by every weight matrix of the
model, once per token, so a step takes as long as streaming the weights through the
cores. `F.linear(x, W)` asks MKL for `x @ W.T`; for a handful of rows MKL's `sgemm`
then reads row-major float32 weights at 4-12 GB/s on our benchmark machine (AMD EPYC,
AVX2, 2 cores), well below what its memory delivers. `skinny_linear` computes the same
product with the native kernel of `native_linear` (18-28 GB/s for 1-8 rows) where it
builds, else as `(W @ x.T).T` (`transposed_linear`: MKL streams `W` in its natural
order, about twice as fast as `F.linear` for 2-4 rows), on the same tensors: no copy,
no extra memory.

`SkinnyLinears(model).active()` computes every plain `nn.Linear` of `model` with
`skinny_linear` while the context is open, for calls without gradients, on a CPU, in
float32, with at most `MAX_SKINNY_ROWS` rows (a prefill keeps `F.linear`) and weights of
at least `MIN_SKINNY_WEIGHT` elements (for tiny ones the extra work costs more than it
saves). Results equal `F.linear` up to float rounding (another summation order), not
bit for bit. It works eagerly and inside `torch.compile`, where the native kernel is the
opaque operator `torch.ops.modal_core.skinny_linear`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from modal_core.generation.native_linear import native_linear_kernel

MAX_SKINNY_ROWS = 16
"""Above this many rows MKL's own choice for `F.linear` is as fast (measured)."""
MIN_SKINNY_WEIGHT = 1 << 16
"""Weights with fewer elements (256 KiB in float32) keep `F.linear`."""
SKINNY_DTYPES = (torch.float32,)


def skinny_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `skinny_linear` is used for weights of `dtype` on `device`."""
    return device.type == "cpu" and dtype in SKINNY_DTYPES


def transposed_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(inputs, weight, bias)` for inputs (..., in) of few rows, as `(W @ x.T).T`."""
    rows = inputs.reshape(-1, inputs.shape[-1])  # (R, in)
    if bias is None:
        product = torch.mm(weight, rows.t())  # (out, R)
    else:
        product = torch.addmm(bias[:, None], weight, rows.t())
    return product.t().contiguous().reshape(*inputs.shape[:-1], weight.shape[0])


def skinny_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(inputs, weight, bias)` for float32 CPU inputs (..., in) of few rows and a
    contiguous weight (and bias): the native kernel where it builds here, else
    `transposed_linear`."""
    if torch.compiler.is_compiling():
        return torch.ops.modal_core.skinny_linear(inputs, weight, bias)
    return _skinny_operator(inputs, weight, bias)


def _skinny_operator(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    kernel = native_linear_kernel()
    if kernel is None or not _native_fits(inputs, weight, bias):
        return transposed_linear(inputs, weight, bias)
    return kernel(inputs, weight, bias)


def _native_fits(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """What the native kernel takes: float32 CPU tensors, the weight and bias contiguous."""
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        return False
    return inputs.dtype == weight.dtype == torch.float32 and weight.device.type == inputs.device.type == "cpu" and weight.is_contiguous()


def _skinny_operator_shape(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return inputs.new_empty((*inputs.shape[:-1], weight.shape[0]))


# What a compiled step calls (a plain `torch.library` op: ~4 us of dispatch, a
# `custom_op` wrapper costs ~20 us).
_operators = torch.library.Library("modal_core", "DEF")
_operators.define("skinny_linear(Tensor inputs, Tensor weight, Tensor? bias) -> Tensor")
_operators.impl("skinny_linear", _skinny_operator, "CPU")
torch.library.register_fake("modal_core::skinny_linear", _skinny_operator_shape, lib=_operators)


def _worth_it(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether a layer qualifies (checked once per context, not per call)."""
    contiguous = weight.is_contiguous() and (bias is None or bias.is_contiguous())
    return contiguous and weight.numel() >= MIN_SKINNY_WEIGHT and skinny_available(weight.device, weight.dtype)


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
        self._lock = threading.Lock()
        self._depth = 0  # open `active()` contexts, of any thread
        self._routed: list[nn.Linear] = []

    @contextmanager
    def active(self) -> Iterator[None]:
        """Skinny products for the model's linear layers until the context closes.
        Contexts may nest or overlap (two threads decoding with one engine): the layers
        are given back when the last one closes."""
        native_linear_kernel()  # built (or found unusable) here, not inside a compiled step
        with self._lock:
            if self._depth == 0:
                self._route()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._give_back()

    def _route(self) -> None:
        self._routed = [
            module
            for module in self.model.modules()
            if type(module) is nn.Linear and "forward" not in module.__dict__ and _worth_it(module.weight, module.bias)
        ]
        for layer in self._routed:
            layer.forward = self._forward_of(layer)

    def _give_back(self) -> None:
        for layer in self._routed:
            del layer.forward
        self._routed = []

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
