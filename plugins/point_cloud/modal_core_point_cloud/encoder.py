"""The point-patch encoder (in the style of Point-BERT / Point-MAE) and its adapter.

A cloud of P points becomes G patch tokens:

1. farthest-point sampling picks G patch centres, starting from the point farthest from
   the centroid (so the choice depends on the geometry, not on the order of the input);
2. each centre's k nearest points form its patch, in coordinates relative to the centre;
3. a mini-PointNet shared by all patches embeds each patch: per-point MLP, max-pool,
   the pooled feature concatenated back to every point, a second MLP, max-pool again.
   Max-pooling makes a patch's token independent of the order of its points;
4. an MLP embedding of the centre's position is added, and optional transformer layers
   let the patch tokens see each other.

Pure torch, no custom CUDA kernels: it runs on CPU and GPU, batched, and deterministically.
"""

from __future__ import annotations

import torch
from torch import nn

from modal_core.errors import ModelInputError


def farthest_point_sample(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count) of farthest-point samples of points (B, P, 3).

    The first sample is the point farthest from the centroid; each next one is the point
    whose distance to the chosen set is largest (ties go to the lowest index).
    """
    batch, points, _ = xyz.shape
    rows = torch.arange(batch, device=xyz.device)
    chosen = torch.empty(batch, count, dtype=torch.long, device=xyz.device)
    current = (xyz - xyz.mean(dim=1, keepdim=True)).square().sum(-1).argmax(-1)  # (B,)
    nearest = torch.full((batch, points), float("inf"), dtype=xyz.dtype, device=xyz.device)  # (B, P)
    for step in range(count):
        chosen[:, step] = current
        distance = (xyz - xyz[rows, current].unsqueeze(1)).square().sum(-1)  # (B, P)
        nearest = torch.minimum(nearest, distance)
        current = nearest.argmax(-1)
    return chosen


def knn_indices(xyz: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, G, k) of the k points of `xyz` (B, P, 3) nearest to each centre
    (B, G, 3), nearest first."""
    # Exact distances (no matrix-product shortcut), so neighbours match a brute-force check.
    distance = torch.cdist(centres, xyz, compute_mode="donot_use_mm_for_euclid_dist")  # (B, G, P)
    return distance.topk(k, dim=-1, largest=False, sorted=True).indices


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, P, C) picked at index (B, ...) -> (B, ..., C)."""
    batch = values.shape[0]
    flat = index.reshape(batch, -1)  # (B, M)
    picked = torch.gather(values, 1, flat.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return picked.reshape(*index.shape, values.shape[-1])


class MiniPointNet(nn.Module):
    """Embeds a patch of points (..., k, C) into one vector (..., width), invariant to
    the order of the k points."""

    def __init__(self, channels: int, hidden: int, width: int) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Linear(channels, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.second = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.LayerNorm(2 * hidden), nn.GELU(), nn.Linear(2 * hidden, width))

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        local = self.first(patch)  # (..., k, hidden)
        pooled = local.max(dim=-2, keepdim=True).values.expand_as(local)  # (..., k, hidden)
        return self.second(torch.cat([pooled, local], dim=-1)).max(dim=-2).values  # (..., width)


class PointPatchEncoder(nn.Module):
    """Point clouds (n, P, C) -> patch tokens (n, G, width).

    The first 3 channels are x, y, z (used for sampling and grouping); any further
    channels (normals, colours) are embedded with them.
    """

    def __init__(
        self,
        channels: int = 3,
        num_patches: int = 64,
        neighbours: int = 32,
        pointnet_width: int = 128,
        width: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        if channels < 3:
            raise ValueError(f"channels must be >= 3 (x, y, z first), got {channels}")
        self.channels, self.num_patches, self.neighbours, self.width = channels, num_patches, neighbours, width
        self.patch_embed = MiniPointNet(channels, pointnet_width, width)
        self.position_embed = nn.Sequential(nn.Linear(3, width), nn.GELU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, num_heads, 2 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False) if num_layers else nn.Identity()
        self.norm = nn.LayerNorm(width)

    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch centres (n, G, 3) and patches (n, G, k, C) with coordinates relative
        to their centre."""
        xyz = points[..., :3]
        centres = gather(xyz, farthest_point_sample(xyz, self.num_patches))  # (n, G, 3)
        patches = gather(points, knn_indices(xyz, centres, self.neighbours))  # (n, G, k, C)
        relative = patches[..., :3] - centres.unsqueeze(2)
        return centres, torch.cat([relative, patches[..., 3:]], dim=-1)

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """Patch tokens (n, G, width) of point clouds (n, P, C)."""
        self._check(points)
        centres, patches = self.group(points.float())
        tokens = self.patch_embed(patches) + self.position_embed(centres)  # (n, G, width)
        return self.norm(self.mixer(tokens))

    forward = encode

    def _check(self, points: torch.Tensor) -> None:
        if points.ndim != 3 or points.shape[-1] != self.channels:
            raise ModelInputError(
                f"point-cloud payload has shape {tuple(points.shape)}; expected (n, P, {self.channels}) "
                "(x, y, z, then normals and colours if enabled)"
            )
        if points.shape[1] < max(self.num_patches, self.neighbours):
            raise ModelInputError(
                f"point-cloud payload has {points.shape[1]} points; need at least num_patches={self.num_patches} "
                f"and neighbours={self.neighbours}"
            )
        if not torch.isfinite(points).all():
            raise ModelInputError("point-cloud payload contains NaN or infinite values")


def build_adapter(width: int, hidden_size: int, depth: int = 2) -> nn.Module:
    """MLP from patch tokens (…, width) into the backbone's width (…, hidden_size):
    Linear, then (GELU, Linear) x (depth - 1), as Janus's understanding aligner."""
    if depth < 1:
        raise ValueError(f"adapter depth must be >= 1, got {depth}")
    layers: list[nn.Module] = [nn.Linear(width, hidden_size)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
    return nn.Sequential(*layers)
