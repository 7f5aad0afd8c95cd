"""LoRA: train a low-rank update of the backbone's linear layers, the weights frozen.

A target layer `y = x W^T + b` becomes `y = x W^T + b + (alpha / r) * x A^T B^T` with
`A` (r, in) and `B` (out, r) the only new parameters (Hu et al., 2021). `B` starts at
zero, so a model with fresh LoRA factors computes exactly what its base did. The
wrapped layer keeps the names `weight` and `bias`, so checkpoints of the base model
load into it unchanged and a LoRA checkpoint holds every base weight plus
`<layer>.lora_a` / `<layer>.lora_b`. Exporting folds the factors into the weights
(`W + alpha / r * B A`, see `fold_lora`), leaving a plain model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from modal_core.errors import CheckpointError, RecipeError

LORA_A, LORA_B = "lora_a", "lora_b"


class LoRALinear(nn.Module):
    """A linear layer plus a trainable low-rank update scaled by `alpha / rank`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        # The base parameters are adopted, not copied: same objects, same state-dict names.
        self.weight = base.weight
        self.bias = base.bias
        # Factors stay float32 even over a bfloat16 base: they are what the optimizer updates.
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, dtype=torch.float32))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., out)
        update = F.linear(F.linear(self.dropout(x).to(self.lora_a.dtype), self.lora_a), self.lora_b)  # (..., out)
        return out + self.scaling * update.to(out.dtype)

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` computing what this layer computes (the update folded in)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        with torch.no_grad():
            linear.weight = nn.Parameter(fold(self.weight, self.lora_a, self.lora_b, self.scaling), requires_grad=False)
            if self.bias is not None:
                linear.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.lora_a.shape[0]}, scaling={self.scaling:g}"


def fold(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """`W + scaling * B A` in float32, returned in the weight's dtype."""
    return (weight.detach().float() + scaling * (lora_b.detach().float() @ lora_a.detach().float())).to(weight.dtype)


def add_lora(backbone: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> int:
    """Replace every linear layer of the backbone's decoder (not its LM head) whose name
    ends in one of `targets` by a `LoRALinear`; returns how many were replaced."""
    if rank <= 0:
        raise RecipeError(f"lora.rank must be positive to add LoRA, got {rank}")
    if alpha <= 0:
        raise RecipeError(f"lora.alpha must be positive, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise RecipeError(f"lora.dropout must be in [0, 1), got {dropout}")
    if not targets:
        raise RecipeError("lora.targets is empty: name the backbone's linear layers to adapt, e.g. q_proj, v_proj")
    decoder = getattr(backbone, "base_model", backbone)
    linears = {name: module for name, module in decoder.named_modules() if isinstance(module, nn.Linear)}
    short_names = {name.rpartition(".")[2] for name in linears}
    unknown = sorted(set(targets) - short_names)
    if unknown:
        raise RecipeError(f"lora.targets: {unknown} name no linear layer of the backbone; its linear layers are {sorted(short_names)}")
    chosen = [name for name in linears if name.rpartition(".")[2] in targets]
    for name in chosen:
        owner_name, _, attribute = name.rpartition(".")
        setattr(decoder.get_submodule(owner_name), attribute, LoRALinear(linears[name], rank, alpha, dropout))
    return len(chosen)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def train_lora(model: nn.Module, train: list[str]) -> int:
    """Make the LoRA factors train (their base weights stay frozen); returns the number
    of trainable factor elements. Call after the recipe's `train:` groups are set."""
    layers = lora_layers(model)
    if not layers:
        raise RecipeError("lora.rank > 0 but the model has no LoRA layers")
    if "backbone" in train:
        raise RecipeError(
            "train: `backbone` trains every backbone weight, which LoRA is meant to keep frozen; with lora.rank > 0 "
            "the LoRA factors train on their own, so list only the other groups (e.g. train: [adapters, heads])"
        )
    count = 0
    for layer in layers.values():
        for factor in (layer.lora_a, layer.lora_b):
            factor.requires_grad_(True)
            count += factor.numel()
    return count


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """While open, every LoRA layer of `model` computes its base layer alone (the update's
    scale is 0): the model is its base weights, e.g. the reference of preference tuning."""
    layers = list(lora_layers(model).values())
    scalings = [layer.scaling for layer in layers]
    for layer in layers:
        layer.scaling = 0.0
    try:
        yield
    finally:
        for layer, scaling in zip(layers, scalings):
            layer.scaling = scaling


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA layer of `model` into a plain `nn.Linear`, in place; returns how
    many were merged. The model then computes the same outputs without the factors."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        owner_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner_name), attribute, layer.merged())
    return len(layers)


def fold_lora(keys: Iterable[str], read: Callable[[str], torch.Tensor], scaling: float | None) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a saved state, read one at a time with `read(key)`, with every
    LoRA pair folded into its layer's weight (`W + scaling * B A`); the factors
    themselves are not yielded. `scaling` is the recipe's `alpha / rank` (None: the
    state must hold no factors)."""
    keys = list(keys)
    present = set(keys)
    for key in keys:
        owner, _, name = key.rpartition(".")
        if name in (LORA_A, LORA_B):
            if f"{owner}.weight" not in present or {f"{owner}.{LORA_A}", f"{owner}.{LORA_B}"} - present:
                raise CheckpointError(f"LoRA factor {key} comes without its layer's weight or its other factor")
            continue
        if name == "weight" and f"{owner}.{LORA_A}" in present:
            if scaling is None:
                raise CheckpointError(f"{key} has LoRA factors but the recipe sets no lora.rank, so their scale is unknown")
            yield key, fold(read(key), read(f"{owner}.{LORA_A}"), read(f"{owner}.{LORA_B}"), scaling)
        else:
            yield key, read(key)
