"""A toy plugin with one input and one output modality, small enough to check by hand.

`toy_vector` items are (3, 5) float features; `toy_codes` items are 4 codes out of 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modal_core import ModalitySpec, hookimpl


@dataclass
class ToyVectorOptions:
    positions: int = 3
    features: int = 5


@dataclass
class ToyCodesOptions:
    positions: int = 4
    codebook: int = 16


class FeatureEncoder(nn.Module):
    """Input encoder: a linear map of the given features."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.proj = nn.Linear(features, features)

    def encode(self, payload: torch.Tensor) -> torch.Tensor:
        return self.proj(payload)


class IdentityTokenizer(nn.Module):
    """Output encoder: the payload already is the codes."""

    def encode(self, payload: torch.Tensor) -> torch.Tensor:
        return payload.long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes


def _as_tensor(item) -> torch.Tensor:
    return torch.as_tensor(item)


TOY_VECTOR = ModalitySpec(
    name="toy_vector",
    direction="input",
    options=ToyVectorOptions,
    build_encoder=lambda o: FeatureEncoder(o.features),
    build_adapter=lambda o, hidden: nn.Linear(o.features, hidden),
    build_processor=lambda o: lambda item: torch.as_tensor(item, dtype=torch.float32),
    num_positions=lambda o: o.positions,
    payload_shape=lambda o: (o.positions, o.features),
    begin_token="<toy>",
    end_token="</toy>",
    placeholder_token="<toy_slot>",
    cli_flag="toy",
    description="toy features",
)

TOY_CODES = ModalitySpec(
    name="toy_codes",
    direction="output",
    options=ToyCodesOptions,
    build_encoder=lambda o: IdentityTokenizer(),
    build_adapter=lambda o, hidden: nn.Embedding(o.codebook, hidden),
    build_head=lambda o, hidden: nn.Linear(hidden, o.codebook),
    build_processor=lambda o: _as_tensor,
    num_positions=lambda o: o.positions,
    payload_shape=lambda o: (o.positions,),
    payload_dtype=torch.long,
    begin_token="<codes>",
    end_token="</codes>",
    placeholder_token="<code_slot>",
    to_output=lambda codes: codes.tolist(),
    description="toy codes",
)


@hookimpl
def modal_core_modalities():
    return [TOY_VECTOR, TOY_CODES]
