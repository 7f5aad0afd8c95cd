"""The semantic tokenizer of the Janus ablation: a VQ tokenizer whose quantised codes also
feed a semantic decoder that regresses a frozen understanding encoder's features, beside
the pixel reconstruction losses (Janus paper, appendix: trained in two stages, as two
`modality_tokenizer` recipes, the second starting from the first).

The teacher is frozen and kept out of the tokenizer's checkpoints; the semantic decoder is
saved with it, and a plain `VQImageTokenizer` loads such a checkpoint without it
(`plugin.build_tokenizer`): only the codes matter once the tokenizer is trained."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modal_core_vq_generation.tokenizer import VQImageTokenizer

SEMANTIC_LOSSES = ("cosine", "l2")
SEMANTIC_DECODER = "semantic_decoder"
"""The attribute (and checkpoint key prefix) of the semantic decoder."""
TEACHER = "teacher"


def semantic_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over positions of 1 - cosine similarity (`cosine`) or of the squared error
    (`l2`) between predicted and target features (B, N, D)."""
    if kind == "cosine":
        return (1 - F.cosine_similarity(predicted, target, dim=-1)).mean()
    return F.mse_loss(predicted, target)


class SemanticDecoder(nn.Module):
    """Quantised code grid (B, code_dim, g, g) -> conv, SiLU, conv -> features on the
    teacher's grid (B, t*t, width), resized bilinearly where the grids differ."""

    def __init__(self, code_dim: int, width: int, teacher_grid: int, channels: int = 128) -> None:
        super().__init__()
        self.teacher_grid = teacher_grid
        self.layers = nn.Sequential(nn.Conv2d(code_dim, channels, 3, padding=1), nn.SiLU(), nn.Conv2d(channels, width, 3, padding=1))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        features = self.layers(grid)
        if features.shape[-1] != self.teacher_grid:
            features = F.interpolate(features, size=(self.teacher_grid, self.teacher_grid), mode="bilinear", align_corners=False)
        return features.flatten(2).transpose(1, 2)


class SemanticVQTokenizer(VQImageTokenizer):
    """`VQImageTokenizer` trained with `semantic_weight * semantic_loss(decoder(codes),
    teacher(images))` added to its pixel and VQ losses. `teacher` is a frozen module
    whose `encode(pixels)` gives (B, t*t, width) features of the tokenizer's images."""

    def __init__(
        self,
        *,
        teacher: nn.Module,
        teacher_grid: int,
        teacher_width: int,
        semantic_weight: float = 1.0,
        semantic_loss: str = "cosine",
        **vq,
    ) -> None:
        super().__init__(**vq)
        if semantic_loss not in SEMANTIC_LOSSES:
            raise ValueError(f"semantic_loss must be one of {SEMANTIC_LOSSES}, got {semantic_loss!r}")
        if semantic_weight < 0:
            raise ValueError(f"semantic_weight must be non-negative, got {semantic_weight}")
        self.semantic_weight, self.semantic_kind = semantic_weight, semantic_loss
        self.semantic_decoder = SemanticDecoder(self.code_dim, teacher_width, teacher_grid)
        self.teacher = teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SemanticVQTokenizer:
        """Like `nn.Module.train`, but the frozen teacher stays in eval mode."""
        super().train(mode)
        if hasattr(self, TEACHER):
            self.teacher.eval()
        return self

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """The tokenizer's and semantic decoder's tensors, without the frozen teacher's."""
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in state if k.startswith(f"{prefix}{TEACHER}.")]:
            del state[key]
        return state

    def loss(self, pixels: torch.Tensor, recon_weight_l1: float = 1.0, recon_weight_l2: float = 1.0) -> dict[str, torch.Tensor]:
        """`VQImageTokenizer.loss` plus `semantic` (the unweighted semantic loss between the
        semantic decoder on the straight-through codes and the teacher's features), with
        `semantic_weight * semantic` added to `loss`."""
        output = self(pixels)
        losses = self._losses(pixels, output, recon_weight_l1, recon_weight_l2)
        grid = output.straight_through.reshape(pixels.shape[0], self.grid_size, self.grid_size, self.code_dim).permute(0, 3, 1, 2)
        with torch.no_grad():
            target = self.teacher.encode(pixels)
        semantic = semantic_loss(self.semantic_decoder(grid), target.to(grid.dtype), self.semantic_kind)
        return {**losses, "loss": losses["loss"] + self.semantic_weight * semantic, "semantic": semantic}
