"""Reading point clouds and meshes with open3d, with errors that name the file.

Point-cloud files (PLY, PCD, XYZ, XYZN, XYZRGB, PTS) are read as points; mesh files
(OBJ, STL, OFF, and a PLY whose header declares faces) are sampled to points on their
surface, uniformly or by Poisson-disk sampling. Everything comes back as a `PointSet`
of plain numpy arrays, which (unlike open3d objects) can cross process boundaries.

open3d itself answers most bad files with an empty result and a warning, so every
failure it can hide (missing file, empty file, unparsable header, too few columns,
NaN or infinite coordinates, no points) is checked here and raised as
`PointCloudInputError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modal_core.errors import DataError

POINT_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts")
MESH_SUFFIXES = (".obj", ".stl", ".off")
SUPPORTED_SUFFIXES = POINT_SUFFIXES + MESH_SUFFIXES
TEXT_POINT_SUFFIXES = (".xyz", ".xyzn", ".xyzrgb", ".pts")
SAMPLING_METHODS = ("uniform", "poisson")
IN_MEMORY_NAME = "<in-memory point cloud>"


class PointCloudInputError(DataError, ValueError):
    """A point-cloud or mesh file (or array) is missing, unreadable, empty or malformed."""


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare by identity
class PointSet:
    """Points with optional per-point normals and colours, all numpy arrays.

    `points` is (N, 3) float; `normals` (N, 3) or None; `colours` (N, 3) in [0, 1] or
    None. `name` says where the points came from (a file path) for error messages.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colours: np.ndarray | None = None
    name: str = IN_MEMORY_NAME

    def __len__(self) -> int:
        return len(self.points)

    def subset(self, index: np.ndarray) -> PointSet:
        """The points (and their normals and colours) at `index`."""
        normals = None if self.normals is None else self.normals[index]
        colours = None if self.colours is None else self.colours[index]
        return PointSet(self.points[index], normals, colours, self.name)


def read_points(path: str | os.PathLike, mesh_points: int = 4096, sampling: str = "uniform", seed: int = 0) -> PointSet:
    """Read a point-cloud or mesh file into a validated `PointSet`.

    Meshes are sampled to `mesh_points` points with `sampling` ("uniform" or
    "poisson", i.e. Poisson-disk); the sampled points carry the triangle normals, and
    vertex colours when the mesh has them. A PLY file whose header declares faces is
    read as a mesh.

    Raises:
        PointCloudInputError: naming the file and what was expected.
    """
    if sampling not in SAMPLING_METHODS:
        raise PointCloudInputError(f"mesh sampling must be one of {SAMPLING_METHODS}, got {sampling!r}")
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise PointCloudInputError(f"{path}: unsupported extension {suffix or '(none)'!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    if not path.exists():
        raise PointCloudInputError(f"{path}: no such file, expected a point-cloud or mesh file")
    if not path.is_file():
        raise PointCloudInputError(f"{path}: not a regular file, expected a point-cloud or mesh file")
    if path.stat().st_size == 0:
        raise PointCloudInputError(f"{path}: the file is empty, expected {suffix[1:].upper()} data")
    _check_header(path, suffix)
    declared = _ply_counts(path) if suffix == ".ply" else {}
    if suffix in MESH_SUFFIXES or declared.get("face", 0) > 0:
        return validate(_read_mesh(path, mesh_points, sampling, seed), str(path))
    point_set = _read_cloud(path, suffix)
    if len(point_set) == 0 and suffix in TEXT_POINT_SUFFIXES:
        _explain_text_columns(path)
    return validate(point_set, str(path))


def validate(point_set: PointSet, name: str | None = None) -> PointSet:
    """Check that a point set holds finite 3-D points (and matching normals/colours).

    Raises:
        PointCloudInputError: empty, not (N, 3), NaN/infinite values, or all points
            at one location (nothing to normalise).
    """
    name = name or point_set.name
    points = np.asarray(point_set.points)
    if points.ndim != 2 or points.shape[-1] != 3:
        raise PointCloudInputError(f"{name}: points have shape {tuple(points.shape)}; expected (N, 3) x, y, z coordinates")
    if len(points) == 0:
        raise PointCloudInputError(f"{name}: has no points")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise PointCloudInputError(f"{name}: {int(bad.sum())} of {len(points)} points have NaN or infinite coordinates")
    if np.ptp(points, axis=0).max() == 0.0:
        raise PointCloudInputError(f"{name}: all {len(points)} points lie at one location; expected a shape with extent")
    extras = {"normals": point_set.normals, "colours": point_set.colours}
    for label, array in extras.items():
        if array is not None and (np.shape(array) != points.shape or not np.isfinite(array).all()):
            raise PointCloudInputError(f"{name}: {label} must be finite and of shape {points.shape}, got {np.shape(array)}")
    return PointSet(points.astype(np.float32), *(None if a is None else np.asarray(a, np.float32) for a in extras.values()), name)


def from_open3d(cloud: Any, name: str = IN_MEMORY_NAME) -> PointSet:
    """A `PointSet` from an `open3d.geometry.PointCloud` (normals and colours kept)."""
    points = np.asarray(cloud.points, dtype=np.float32)
    normals = np.asarray(cloud.normals, dtype=np.float32) if cloud.has_normals() else None
    colours = np.asarray(cloud.colors, dtype=np.float32) if cloud.has_colors() else None
    return PointSet(points, normals, colours, name)


def to_open3d(point_set: PointSet) -> Any:
    """An `open3d.geometry.PointCloud` holding the points, normals and colours."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(point_set.points.astype(np.float64)))
    if point_set.normals is not None:
        cloud.normals = o3d.utility.Vector3dVector(point_set.normals.astype(np.float64))
    if point_set.colours is not None:
        cloud.colors = o3d.utility.Vector3dVector(point_set.colours.astype(np.float64))
    return cloud


def _quiet() -> Any:
    """Silence open3d's own warnings: every failure is reported by our checks."""
    import open3d as o3d

    return o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error)


def _check_header(path: Path, suffix: str) -> None:
    """Reject files whose first bytes cannot be the format the extension claims (open3d
    would print a parser error and return nothing)."""
    with path.open("rb") as stream:
        head = stream.read(256)
    first_line = head.split(b"\n", 1)[0].strip()
    if suffix == ".ply" and first_line != b"ply":
        raise PointCloudInputError(f"{path}: not a PLY file (it must start with the line 'ply')")
    if suffix == ".off" and not first_line.endswith(b"OFF"):
        raise PointCloudInputError(f"{path}: not an OFF file (it must start with 'OFF')")
    if suffix in TEXT_POINT_SUFFIXES + (".obj", ".pcd") and b"\x00" in head:
        raise PointCloudInputError(f"{path}: holds binary data; expected a text {suffix[1:].upper()} file")


_PLY_TYPE_BYTES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2}
_PLY_TYPE_BYTES |= {"int": 4, "uint": 4, "float": 4, "int32": 4, "uint32": 4, "float32": 4, "double": 8, "float64": 8}


def _ply_counts(path: Path) -> dict[str, int]:
    """Element counts a PLY header declares, e.g. {"vertex": 100, "face": 196}.

    Raises:
        PointCloudInputError: the file holds fewer rows than its header declares (an
            ASCII PLY with fewer data lines, a binary one of fixed-size rows with fewer
            bytes); open3d would pad the missing points with NaN or garbage.
    """
    counts: dict[str, int] = {}
    row_bytes: dict[str, int | None] = {}
    binary, header_bytes, element = False, 0, ""
    with path.open("rb") as stream:
        for raw in stream:
            header_bytes += len(raw)
            line = raw.decode("ascii", errors="replace").split()
            if line[:1] == ["format"]:
                binary = len(line) > 1 and line[1].startswith("binary")
            elif line[:1] == ["element"] and len(line) == 3 and line[2].isdigit():
                element, counts[line[1]], row_bytes[line[1]] = line[1], int(line[2]), 0
            elif line[:1] == ["property"] and element:
                size = _PLY_TYPE_BYTES.get(line[1]) if len(line) == 3 else None  # lists have no fixed size
                row_bytes[element] = None if size is None or row_bytes[element] is None else row_bytes[element] + size
            elif line[:1] == ["end_header"]:
                break
        rows = None if binary else sum(1 for raw in stream if raw.strip())  # ASCII: one element row a line
    if rows is not None and rows < sum(counts.values()):
        raise PointCloudInputError(
            f"{path}: the header declares {counts} ({sum(counts.values())} rows) but the file holds {rows} data rows; "
            "it was cut short or its header is wrong"
        )
    if binary and all(size is not None for size in row_bytes.values()):
        expected = header_bytes + sum(counts[name] * size for name, size in row_bytes.items())
        if path.stat().st_size < expected:
            raise PointCloudInputError(
                f"{path}: truncated: the header declares {counts} but the file is {expected - path.stat().st_size} bytes short"
            )
    return counts


def _read_cloud(path: Path, suffix: str) -> PointSet:
    import open3d as o3d

    with _quiet():
        # NaN and infinite points are kept so that `validate` can report them.
        cloud = o3d.io.read_point_cloud(str(path), format=suffix[1:], remove_nan_points=False, remove_infinite_points=False)
    return from_open3d(cloud, str(path))


def _read_mesh(path: Path, count: int, sampling: str, seed: int) -> PointSet:
    import open3d as o3d

    with _quiet():
        mesh = o3d.io.read_triangle_mesh(str(path))
    if not np.isfinite(np.asarray(mesh.vertices)).all():  # first: open3d may drop the faces of such vertices
        raise PointCloudInputError(f"{path}: the mesh has NaN or infinite vertex coordinates")
    if len(mesh.triangles) == 0:
        raise PointCloudInputError(f"{path}: could not be read as a mesh, or holds no triangles to sample points from")
    return sample_mesh(mesh, count, sampling, seed, name=str(path))


def sample_mesh(mesh: Any, count: int, sampling: str = "uniform", seed: int = 0, name: str = IN_MEMORY_NAME) -> PointSet:
    """`count` points on the surface of an open3d triangle mesh, with triangle normals.

    open3d's samplers draw from a global generator, so it is seeded here: the same mesh
    and seed give the same points.
    """
    import open3d as o3d

    o3d.utility.random.seed(seed)
    with _quiet():
        if sampling == "poisson":
            cloud = mesh.sample_points_poisson_disk(count, use_triangle_normal=True)
        else:
            cloud = mesh.sample_points_uniformly(count, use_triangle_normal=True)
    return from_open3d(cloud, name)


def _explain_text_columns(path: Path) -> None:
    """open3d reads a text file with too few columns as zero points; say why."""
    with path.open("r", errors="replace") as stream:
        for line in stream:
            fields = line.split()
            if not fields or line.lstrip().startswith("#"):
                continue
            if len(fields) == 1 and fields[0].isdigit():  # the point count some PTS files start with
                continue
            if len(fields) < 3:
                raise PointCloudInputError(
                    f"{path}: lines have {len(fields)} value(s) ({line.strip()[:40]!r}); expected x y z per line (a 3-D point cloud)"
                )
            try:
                [float(value) for value in fields[:3]]
            except ValueError:
                raise PointCloudInputError(f"{path}: line {line.strip()[:40]!r} is not numbers; expected x y z per line") from None
    raise PointCloudInputError(f"{path}: no points could be read")
