"""Declare an encoder's repeated layer: one FSDP unit and one checkpointing boundary each."""

from torch import nn

from modal_core import hookimpl


@hookimpl
def modal_core_block_classes():
    return [nn.TransformerEncoderLayer]
