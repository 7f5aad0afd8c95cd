"""Shared pieces of the point-cloud tests: the plugin on a hermetic manager, tiny
options, and brute-force references the fast code is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TINY_POINT_CLOUD = {
    "num_points": 128,
    "num_patches": 8,
    "neighbours": 8,
    "pointnet_width": 16,
    "width": 32,
    "num_layers": 1,
    "num_heads": 2,
}


def point_cloud_plugins():
    """A manager with the core's built-ins and the point-cloud plugin only."""
    import modal_core_point_cloud.plugin as point_cloud_plugin
    from modal_core.plugins import PluginManager

    plugins = PluginManager(load_entry_points=False)
    plugins.register(point_cloud_plugin, name="point_cloud")
    return plugins


def write_box_mesh(path: Path, scale: float = 1.0) -> None:
    """A box mesh (scale x scale x 2 scale) at `path`, in the format its suffix names."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh.create_box(scale, scale, 2 * scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    o3d.io.write_triangle_mesh(str(path), mesh)


def brute_force_fps(points: np.ndarray, count: int) -> list[int]:
    """Farthest-point sampling written out point by point, starting from the point
    farthest from the centroid."""
    centroid = points.mean(axis=0)
    chosen = [max(range(len(points)), key=lambda i: float(np.sum((points[i] - centroid) ** 2)))]
    while len(chosen) < count:
        distance_to_set = [min(float(np.sum((points[i] - points[j]) ** 2)) for j in chosen) for i in range(len(points))]
        chosen.append(int(np.argmax(distance_to_set)))
    return chosen


def brute_force_knn(points: np.ndarray, centre: np.ndarray, k: int) -> list[int]:
    """The k points nearest to `centre`, by sorting every distance."""
    return sorted(range(len(points)), key=lambda i: float(np.sum((points[i] - centre) ** 2)))[:k]


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    """A random proper 3-D rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()
