"""An input modality: a fixed-size feature vector per item, one sequence position."""

from dataclasses import dataclass

import torch
from torch import nn

from modal_core import DataError, ModalitySpec, hookimpl


@dataclass
class VectorOptions:
    size: int = 16  # numbers per item


def build_processor(options: VectorOptions):
    def process(item) -> torch.Tensor:  # a list or array of `size` numbers -> (1, size)
        vector = torch.as_tensor(item, dtype=torch.float32).reshape(1, -1)
        if vector.shape[1] != options.size:
            raise DataError(f"vector item: {vector.shape[1]} numbers, expected {options.size}")
        return vector

    return process


class VectorEncoder(nn.Module):
    def __init__(self, options: VectorOptions) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(options.size)

    def encode(self, payload: torch.Tensor) -> torch.Tensor:
        return self.norm(payload)  # (n, 1, size) -> (n, 1, size)


@hookimpl
def modal_core_modalities():
    return [
        ModalitySpec(
            name="vector",
            direction="input",
            options=VectorOptions,
            build_encoder=VectorEncoder,
            build_adapter=lambda options, hidden: nn.Linear(options.size, hidden),
            build_processor=build_processor,
            num_positions=lambda options: 1,
            payload_shape=lambda options: (1, options.size),
            begin_token="<begin_of_vector>",
            end_token="<end_of_vector>",
            placeholder_token="<vector_placeholder>",
        )
    ]
