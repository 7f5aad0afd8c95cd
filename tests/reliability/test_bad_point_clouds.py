"""Bad point-cloud input: every case is a `PointCloudInputError` (a `DataError`) whose
message names the file (or the in-memory array) and says what was expected."""

from __future__ import annotations

import struct

import numpy as np
import open3d as o3d
import pytest
import torch

from modal_core.errors import DataError, RecipeError
from modal_core_point_cloud.io import IN_MEMORY_NAME, PointCloudInputError, PointSet, read_points
from modal_core_point_cloud.processing import PointCloudProcessor


def _ply_header(vertices: int, binary: bool = False) -> bytes:
    fmt = "binary_little_endian" if binary else "ascii"
    return f"ply\nformat {fmt} 1.0\nelement vertex {vertices}\nproperty float x\nproperty float y\nproperty float z\nend_header\n".encode()


def _xyz(lines: str):
    return lambda path: path.write_text(lines)


FILE_CASES = {
    "missing": ("cloud.ply", None, "no such file"),
    "empty_file": ("cloud.ply", lambda p: p.write_bytes(b""), "the file is empty, expected PLY data"),
    "wrong_extension": ("cloud.png", lambda p: p.write_bytes(b"\x89PNG\r\n"), "unsupported extension '.png'; expected one of .ply"),
    "no_extension": ("cloud", lambda p: p.write_text("1 2 3\n"), r"unsupported extension '\(none\)'"),
    "ply_garbage_header": ("cloud.ply", lambda p: p.write_text("hello world\n"), "not a PLY file"),
    "ply_zero_vertices": ("cloud.ply", lambda p: p.write_bytes(_ply_header(0)), "has no points"),
    "ply_truncated_binary": (
        "cloud.ply",
        lambda p: p.write_bytes(_ply_header(100, binary=True) + struct.pack("<3f", 1, 2, 3) * 10),
        r"truncated: the header declares \{'vertex': 100\} but the file is 1080 bytes short",
    ),
    "ply_ascii_fewer_rows_than_declared": (
        "cloud.ply",
        lambda p: p.write_bytes(_ply_header(1000) + b"0 0 0\n1 2 3\n" * 80),
        r"the header declares \{'vertex': 1000\} \(1000 rows\) but the file holds 160 data rows; it was cut short",
    ),
    "xyz_nan": ("cloud.xyz", _xyz("0 0 0\n1 nan 2\n3 4 5\n"), "1 of 3 points have NaN or infinite coordinates"),
    "xyz_inf": ("cloud.xyz", _xyz("0 0 0\n1 inf 2\n3 4 5\n"), "NaN or infinite"),
    "xyz_two_dimensional": ("cloud.xyz", _xyz("1 2\n3 4\n5 6\n"), r"lines have 2 value\(s\) .*expected x y z per line"),
    "xyz_not_numbers": ("cloud.xyz", _xyz("x y z\nfoo bar baz\n"), "is not numbers; expected x y z per line"),
    "xyz_binary_junk": ("cloud.xyz", lambda p: p.write_bytes(b"\x00\x01\x02" * 50), "holds binary data; expected a text XYZ file"),
    "pts_single_point_repeated": ("cloud.pts", _xyz("3\n1 1 1\n1 1 1\n1 1 1\n"), "all 3 points lie at one location"),
    "pcd_garbage": ("cloud.pcd", _xyz("this is not a pcd file\n"), "has no points"),
    "off_garbage_header": ("mesh.off", _xyz("NOT A MESH\n"), "not an OFF file"),
    "off_without_faces": ("mesh.off", _xyz("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n"), "holds no triangles to sample points from"),
    "obj_without_vertices": ("mesh.obj", _xyz("# only a comment\n"), "could not be read as a mesh"),
    "stl_garbage": ("mesh.stl", lambda p: p.write_bytes(b"solid x\nnonsense\n"), "could not be read as a mesh"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_is_named_with_the_reason(tmp_path, case):
    name, write, reason = FILE_CASES[case]
    path = tmp_path / name
    if write is not None:
        write(path)
    with pytest.raises(PointCloudInputError, match=reason) as caught:
        PointCloudProcessor(num_points=16)(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, DataError)


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "scan.ply"
    folder.mkdir()
    with pytest.raises(PointCloudInputError, match=f"{folder}: not a regular file"):
        read_points(folder)


def test_mesh_with_nan_vertex(tmp_path):
    mesh = o3d.geometry.TriangleMesh.create_box()
    vertices = np.asarray(mesh.vertices)
    vertices[0] = np.nan
    mesh.vertices = o3d.utility.Vector3dVector(vertices)
    path = tmp_path / "nan.off"
    o3d.io.write_triangle_mesh(str(path), mesh)
    with pytest.raises(PointCloudInputError, match=f"{path}: .*NaN"):
        read_points(path)


ARRAY_CASES = {
    "two_columns": (np.zeros((10, 2)), r"points have shape \(10, 2\); expected \(N, 3\)"),
    "flat_vector": (np.zeros(9), r"points have shape \(9,\); expected \(N, 3\)"),
    "empty": (np.zeros((0, 3)), "has no points"),
    "nan_tensor": (torch.tensor([[0.0, 0.0, 0.0], [float("nan"), 1.0, 2.0]]), "1 of 2 points have NaN"),
    "normals_wrong_shape": (
        PointSet(np.eye(3, dtype=np.float32), normals=np.zeros((2, 3))),
        r"normals must be finite and of shape \(3, 3\)",
    ),
    "colours_nan": (PointSet(np.eye(3, dtype=np.float32), colours=np.full((3, 3), np.nan)), "colours must be finite"),
}


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_bad_array_is_named(case):
    item, reason = ARRAY_CASES[case]
    with pytest.raises(PointCloudInputError, match=f"{IN_MEMORY_NAME}: {reason}"):
        PointCloudProcessor(num_points=16)(item)


def test_unsupported_object_type():
    with pytest.raises(PointCloudInputError, match="cannot read a point cloud from a dict"):
        PointCloudProcessor()({"points": []})


def test_bad_processing_options_are_recipe_errors():
    from modal_core_point_cloud.plugin import POINT_CLOUD, PointCloudOptions

    with pytest.raises(RecipeError, match="downsample: expected one of"):
        POINT_CLOUD.build_processor(PointCloudOptions(downsample="grid"))
    with pytest.raises(RecipeError, match=r"num_patches \(64\) and neighbours \(32\) must be between 1 and num_points \(16\)"):
        POINT_CLOUD.build_encoder(PointCloudOptions(num_points=16))
    with pytest.raises(PointCloudInputError, match="mesh sampling must be one of"):
        read_points("x.ply", sampling="random")
