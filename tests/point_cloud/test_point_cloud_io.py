"""Readers for every format (written with open3d, read back), processing and
down-sampling, with numbers checked against the written data and references."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch

from modal_core_point_cloud.io import read_points
from modal_core_point_cloud.processing import PointCloudProcessor, farthest_point_indices, normalise, resample

from .helpers import brute_force_fps


@pytest.fixture
def cloud() -> o3d.geometry.PointCloud:
    rng = np.random.default_rng(0)
    points = rng.uniform(-2, 3, size=(200, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    normals = rng.normal(size=(200, 3))
    cloud.normals = o3d.utility.Vector3dVector(normals / np.linalg.norm(normals, axis=1, keepdims=True))
    cloud.colors = o3d.utility.Vector3dVector(rng.uniform(0, 1, size=(200, 3)))
    return cloud


@pytest.mark.parametrize(
    "suffix, has_normals, has_colours",
    [
        (".ply", True, True),
        (".pcd", True, True),
        (".xyz", False, False),
        (".pts", False, True),
        (".xyzn", True, False),
        (".xyzrgb", False, True),
    ],
)
def test_point_formats_round_trip(tmp_path, cloud, suffix, has_normals, has_colours):
    path = tmp_path / f"cloud{suffix}"
    assert o3d.io.write_point_cloud(str(path), cloud, write_ascii=suffix != ".ply")
    point_set = read_points(path)
    assert point_set.name == str(path)
    # Text formats keep about 6-10 significant digits.
    np.testing.assert_allclose(point_set.points, np.asarray(cloud.points), atol=1e-5)
    assert (point_set.normals is not None) == has_normals
    assert (point_set.colours is not None) == has_colours
    if has_normals:
        np.testing.assert_allclose(point_set.normals, np.asarray(cloud.normals), atol=1e-5)
    if has_colours:
        np.testing.assert_allclose(point_set.colours, np.asarray(cloud.colors), atol=1 / 255)


def _unit_box_mesh() -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
    mesh.compute_triangle_normals()
    mesh.compute_vertex_normals()
    return mesh


@pytest.mark.parametrize("suffix", [".obj", ".stl", ".off", ".ply"])
@pytest.mark.parametrize("sampling", ["uniform", "poisson"])
def test_meshes_are_sampled_on_their_surface(tmp_path, suffix, sampling):
    path = tmp_path / f"box{suffix}"
    assert o3d.io.write_triangle_mesh(str(path), _unit_box_mesh())
    point_set = read_points(path, mesh_points=300, sampling=sampling, seed=1)
    points = point_set.points
    assert 0.8 * 300 <= len(points) <= 300  # Poisson-disk may return slightly fewer
    assert points.min() >= -1e-6 and points.max() <= 1 + 1e-6
    # On the surface of the unit box: some coordinate is 0 or 1.
    on_face = np.minimum(np.abs(points), np.abs(points - 1)).min(axis=1)
    assert on_face.max() < 1e-5
    # Every face gets points (uniform area sampling; 6 faces of equal area).
    per_face = [int((np.abs(points[:, axis] - side) < 1e-5).sum()) for axis in range(3) for side in (0.0, 1.0)]
    assert min(per_face) > 0, per_face
    # Triangle normals come along and are unit length and axis-aligned.
    np.testing.assert_allclose(np.linalg.norm(point_set.normals, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.abs(point_set.normals).max(axis=1), 1.0, atol=1e-5)


def test_mesh_sampling_is_deterministic_per_seed(tmp_path):
    path = tmp_path / "box.obj"
    o3d.io.write_triangle_mesh(str(path), _unit_box_mesh())
    first, again, other = (read_points(path, 200, seed=s).points for s in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_normalise_centres_and_scales_to_unit_sphere():
    points = np.random.default_rng(1).normal(5.0, 3.0, size=(500, 3))
    result = normalise(points)
    np.testing.assert_allclose(result.mean(axis=0), 0.0, atol=1e-9)
    assert np.linalg.norm(result, axis=1).max() == pytest.approx(1.0)
    # Shape is kept: distances scale by one factor.
    ratio = np.linalg.norm(result[1] - result[0]) / np.linalg.norm(points[1] - points[0])
    assert np.linalg.norm(result[7] - result[3]) == pytest.approx(ratio * np.linalg.norm(points[7] - points[3]))


def test_open3d_fps_matches_brute_force():
    points = np.random.default_rng(2).uniform(-1, 1, size=(120, 3)).astype(np.float32)
    # open3d returns the chosen points in input order, so compare the chosen sets.
    assert sorted(farthest_point_indices(points, 12).tolist()) == sorted(brute_force_fps(points.astype(np.float64), 12))


def test_processor_payload_channels_values_and_count(cloud, tmp_path):
    path = tmp_path / "cloud.ply"
    o3d.io.write_point_cloud(str(path), cloud)
    payload = PointCloudProcessor(num_points=64, normals=True, colours=True)(path)
    assert payload.shape == (64, 9) and payload.dtype == torch.float32
    xyz = payload[:, :3].numpy()
    assert np.linalg.norm(xyz, axis=1).max() <= 1.0 + 1e-6
    # Each output point is one of the input points, normalised, with its own normal and colour.
    expected = normalise(np.asarray(cloud.points))
    index = [int(np.argmin(np.linalg.norm(expected - p, axis=1))) for p in xyz]
    np.testing.assert_allclose(xyz, expected[index], atol=1e-5)
    np.testing.assert_allclose(payload[:, 3:6].numpy(), np.asarray(cloud.normals)[index], atol=1e-5)
    np.testing.assert_allclose(payload[:, 6:].numpy(), np.asarray(cloud.colors)[index] * 2 - 1, atol=2 / 255)  # PLY stores 8-bit colours


def test_processor_fills_missing_normals_and_colours(tmp_path):
    points = np.random.default_rng(3).normal(size=(100, 3))
    points[:, 2] = 0.0  # a flat disc: estimated normals must be +-z
    path = tmp_path / "disc.xyz"
    o3d.io.write_point_cloud(str(path), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points)))
    payload = PointCloudProcessor(num_points=50, normals=True, colours=True)(path)
    np.testing.assert_allclose(payload[:, 5].abs().numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(payload[:, 6:].numpy(), 0.0)  # grey 0.5 -> 0 in [-1, 1]


def test_voxel_and_random_downsampling_and_padding():
    rng = np.random.default_rng(4)
    points = rng.uniform(-1, 1, size=(2000, 3))
    voxel = PointCloudProcessor(num_points=2000, voxel_size=0.5)(points)
    # A voxel grid of side 0.5 over a cube of side ~2 keeps at most 5^3 distinct points.
    assert len(torch.unique(voxel, dim=0)) <= 125
    first, again = (
        PointCloudProcessor(num_points=100, downsample="random")(points),
        PointCloudProcessor(num_points=100, downsample="random")(points),
    )
    torch.testing.assert_close(first, again)
    few = rng.uniform(-1, 1, size=(10, 3))
    padded = PointCloudProcessor(num_points=25)(few)
    torch.testing.assert_close(padded[:10], padded[10:20])  # repeated in turn
    assert len(torch.unique(padded, dim=0)) == 10


def test_resample_keeps_exact_count():
    from modal_core_point_cloud.io import PointSet

    point_set = PointSet(np.random.default_rng(5).normal(size=(300, 3)).astype(np.float32))
    for count in (1, 64, 300, 450):
        assert len(resample(point_set, count, "fps")) == count
