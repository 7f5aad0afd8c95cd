"""From a raw point cloud to the model's payload: normalise, down-sample, add channels.

The payload of one item is a float tensor (num_points, C) with C = 3 (x, y, z) + 3 if
normals are used + 3 if colours are used, in that order. Coordinates are centred on
their mean and scaled into the unit sphere; colours are mapped from [0, 1] to [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modal_core_point_cloud.io import PointCloudInputError, PointSet, from_open3d, read_points, to_open3d, validate

DOWNSAMPLE_METHODS = ("fps", "random")
GREY = 0.5
NORMAL_NEIGHBOURS = 16


def normalise(points: np.ndarray) -> np.ndarray:
    """Centre (N, 3) points on their mean and scale them so the farthest lies at radius 1."""
    centred = points - points.mean(axis=0, keepdims=True)
    return centred / np.linalg.norm(centred, axis=1).max()


def voxel_downsample(point_set: PointSet, voxel_size: float) -> PointSet:
    """One point per occupied voxel of side `voxel_size` (averaging normals/colours)."""
    cloud = to_open3d(point_set).voxel_down_sample(voxel_size)
    return from_open3d(cloud, point_set.name)


def farthest_point_indices(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` points chosen by farthest-point sampling (open3d's C++ version),
    starting from the point farthest from the centroid so the choice ignores input order."""
    import open3d as o3d

    start = int(np.argmax(np.linalg.norm(points - points.mean(axis=0), axis=1)))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    chosen = np.asarray(cloud.farthest_point_down_sample(count, start_index=start).points)
    # open3d returns coordinates, not indices: find each chosen point again (exact copies).
    lookup = {row.tobytes(): index for index, row in enumerate(points.astype(np.float64))}
    return np.array([lookup[row.tobytes()] for row in chosen], dtype=np.int64)


def resample(point_set: PointSet, count: int, method: str, seed: int = 0) -> PointSet:
    """Exactly `count` points: farthest-point or random subset when there are more,
    every point repeated in turn when there are fewer."""
    total = len(point_set)
    if total == count:
        return point_set
    if total < count:
        return point_set.subset(np.arange(count) % total)
    if method == "fps":
        return point_set.subset(farthest_point_indices(point_set.points, count))
    rng = np.random.default_rng(seed)
    return point_set.subset(np.sort(rng.choice(total, size=count, replace=False)))


def estimate_normals(point_set: PointSet) -> np.ndarray:
    """Unit normals (N, 3) from each point's neighbourhood (sign is arbitrary)."""
    import open3d as o3d

    cloud = to_open3d(point_set)
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(NORMAL_NEIGHBOURS))
    return np.asarray(cloud.normals, dtype=np.float32)


@dataclass
class PointCloudProcessor:
    """Turns one raw point cloud into a payload tensor (num_points, C).

    Accepts a file path (see `io.read_points`), a `PointSet`, an
    `open3d.geometry.PointCloud`, or an (N, 3) array of coordinates.
    """

    num_points: int = 1024
    downsample: str = "fps"
    voxel_size: float = 0.0
    normals: bool = False
    colours: bool = False
    mesh_points: int = 4096
    mesh_sampling: str = "uniform"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.downsample not in DOWNSAMPLE_METHODS:
            raise PointCloudInputError(f"downsample must be one of {DOWNSAMPLE_METHODS}, got {self.downsample!r}")

    @property
    def channels(self) -> int:
        """Values per point in the payload."""
        return 3 + 3 * self.normals + 3 * self.colours

    def load(self, item: Any) -> PointSet:
        """The validated `PointSet` of a raw item."""
        if isinstance(item, (str, os.PathLike)):
            return read_points(item, self.mesh_points, self.mesh_sampling, self.seed)
        if isinstance(item, PointSet):
            return validate(item)
        if isinstance(item, (np.ndarray, torch.Tensor)):
            array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
            return validate(PointSet(np.asarray(array, dtype=np.float32)))
        if type(item).__name__ == "PointCloud" and hasattr(item, "points"):
            return validate(from_open3d(item))
        raise PointCloudInputError(
            f"cannot read a point cloud from a {type(item).__name__}; expected a file path, PointSet, open3d PointCloud or (N, 3) array"
        )

    def __call__(self, item: Any) -> torch.Tensor:
        point_set = self.load(item)
        point_set = PointSet(normalise(point_set.points), point_set.normals, point_set.colours, point_set.name)
        if self.voxel_size > 0:
            point_set = voxel_downsample(point_set, self.voxel_size)
        point_set = resample(point_set, self.num_points, self.downsample, self.seed)
        channels = [point_set.points]
        if self.normals:
            channels.append(point_set.normals if point_set.normals is not None else estimate_normals(point_set))
        if self.colours:
            colours = point_set.colours if point_set.colours is not None else np.full_like(point_set.points, GREY)
            channels.append(colours * 2.0 - 1.0)
        return torch.from_numpy(np.concatenate(channels, axis=1).astype(np.float32))  # (num_points, C)
