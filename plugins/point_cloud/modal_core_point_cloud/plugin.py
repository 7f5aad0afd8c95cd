"""Hook implementations of the point-cloud plugin: the `point_cloud` modality, its data
sets, its evaluator and the `pointcloud-quickstart` command."""

from __future__ import annotations

from dataclasses import dataclass

from modal_core.errors import RecipeError
from modal_core.hookspecs import hookimpl
from modal_core.modality import ModalitySpec
from modal_core_point_cloud.datasets import MODALITY, POINT_CLOUD_DATASETS
from modal_core_point_cloud.encoder import PointPatchEncoder, build_adapter
from modal_core_point_cloud.processing import DOWNSAMPLE_METHODS, PointCloudProcessor

POINTS_PLACEHOLDER = "<points_placeholder>"
BEGIN_OF_POINTS = "<begin_of_points>"
END_OF_POINTS = "<end_of_points>"


@dataclass
class PointCloudOptions:
    """Recipe options of `modalities.point_cloud`."""

    num_points: int = 1024
    """Points per cloud after down-sampling (padded by repetition when a cloud has fewer)."""
    downsample: str = "fps"
    """How clouds with more points are thinned: `fps` (farthest-point) or `random`."""
    voxel_size: float = 0.0
    """If > 0, first keep one point per voxel of this side (in units of the normalised cloud)."""
    normals: bool = False
    """Add normals as 3 extra channels (estimated from neighbours when a file has none)."""
    colours: bool = False
    """Add RGB colours as 3 extra channels (grey when a file has none)."""
    mesh_points: int = 4096
    """Points sampled on the surface of mesh files (OBJ, STL, OFF) before down-sampling."""
    mesh_sampling: str = "uniform"
    """Mesh surface sampling: `uniform` or `poisson` (Poisson-disk, evenly spaced, slower)."""
    num_patches: int = 64
    """Patch tokens per cloud (farthest-point sampled centres) = sequence positions per item."""
    neighbours: int = 32
    """Points per patch (k nearest neighbours of its centre)."""
    pointnet_width: int = 128
    """Hidden width of the shared mini-PointNet."""
    width: int = 256
    """Width of the patch tokens."""
    num_layers: int = 2
    """Transformer layers over the patch tokens inside the encoder (0: none)."""
    num_heads: int = 4
    """Attention heads of those layers."""
    adapter_depth: int = 2
    """Linear layers of the adapter MLP (GELU between), as Janus's aligner."""


def _check(options: PointCloudOptions) -> PointCloudOptions:
    if options.downsample not in DOWNSAMPLE_METHODS:
        raise RecipeError(f"modalities.point_cloud.downsample: expected one of {DOWNSAMPLE_METHODS}, got {options.downsample!r}")
    if options.mesh_sampling not in ("uniform", "poisson"):
        raise RecipeError(f"modalities.point_cloud.mesh_sampling: expected 'uniform' or 'poisson', got {options.mesh_sampling!r}")
    if not 0 < options.neighbours <= options.num_points or not 0 < options.num_patches <= options.num_points:
        raise RecipeError(
            f"modalities.point_cloud: num_patches ({options.num_patches}) and neighbours ({options.neighbours}) "
            f"must be between 1 and num_points ({options.num_points})"
        )
    if options.width % options.num_heads:
        raise RecipeError(f"modalities.point_cloud: width {options.width} must be divisible by num_heads {options.num_heads}")
    return options


def channels(options: PointCloudOptions) -> int:
    """Values per point: x, y, z, then normals and colours when enabled."""
    return 3 + 3 * options.normals + 3 * options.colours


def _encoder(options: PointCloudOptions) -> PointPatchEncoder:
    _check(options)
    return PointPatchEncoder(
        channels=channels(options),
        num_patches=options.num_patches,
        neighbours=options.neighbours,
        pointnet_width=options.pointnet_width,
        width=options.width,
        num_layers=options.num_layers,
        num_heads=options.num_heads,
    )


def _processor(options: PointCloudOptions) -> PointCloudProcessor:
    _check(options)
    return PointCloudProcessor(
        num_points=options.num_points,
        downsample=options.downsample,
        voxel_size=options.voxel_size,
        normals=options.normals,
        colours=options.colours,
        mesh_points=options.mesh_points,
        mesh_sampling=options.mesh_sampling,
    )


POINT_CLOUD = ModalitySpec(
    name=MODALITY,
    direction="input",
    options=PointCloudOptions,
    build_encoder=_encoder,
    build_adapter=lambda options, hidden: build_adapter(options.width, hidden, options.adapter_depth),
    build_processor=_processor,
    num_positions=lambda options: options.num_patches,
    payload_shape=lambda options: (options.num_points, channels(options)),
    begin_token=BEGIN_OF_POINTS,
    end_token=END_OF_POINTS,
    placeholder_token=POINTS_PLACEHOLDER,
    cli_flag="points",
    keyword="points",
    description="3-D point clouds (PLY, PCD, XYZ, PTS; OBJ/STL/OFF meshes) -> point-patch encoder + MLP adapter; text head",
)


@hookimpl
def modal_core_modalities() -> list[ModalitySpec]:
    return [POINT_CLOUD]


@hookimpl
def modal_core_datasets() -> dict:
    return dict(POINT_CLOUD_DATASETS)


@hookimpl
def modal_core_evaluators() -> dict:
    from modal_core_point_cloud.evaluation import evaluate_pointcloud_qa

    return {"pointcloud_qa": evaluate_pointcloud_qa}


@hookimpl
def modal_core_commands(subparsers) -> None:
    from modal_core_point_cloud.command import add_quickstart_command

    add_quickstart_command(subparsers)
