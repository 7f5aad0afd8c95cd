"""A synthetic world of 3-D shapes built from open3d primitives, with captions and QA.

Each scene is one object: a primitive mesh (box, sphere, cylinder, cone, torus,
tetrahedron, octahedron, arrow) stretched by a random scale per axis, tilted a little,
turned about the vertical axis, sampled to points on its surface, jittered, and in some
scenes partly occluded (the points beyond a random vertical plane are cut away, as if
hidden behind a wall). Scene i of a split is a pure function of (seed, split, i).

"Tall" compares the object's own height (z extent) with its width (largest horizontal
extent); shapes are drawn tall or wide with equal odds (except where that would need an
absurd stretch, so a torus is always wide), never with a ratio close to 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from modal_core_point_cloud.io import PointSet, sample_mesh

SHAPES = ("box", "sphere", "cylinder", "cone", "torus", "tetrahedron", "octahedron", "arrow")
COLOURS = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.2, 0.7, 0.25),
    "blue": (0.2, 0.35, 0.9),
    "yellow": (0.95, 0.85, 0.2),
    "purple": (0.6, 0.25, 0.75),
    "orange": (0.95, 0.55, 0.1),
}
TALL_BAND = (0.75, 1.33)
"""Height / width ratios inside this band are redrawn: neither tall nor wide enough."""
TALL_RATIOS = (1.4, 2.2)
WIDE_RATIOS = (0.4, 0.7)
STRETCH_RANGE = (0.3, 3.0)
"""Vertical stretches beyond this range would deform a primitive past recognition."""
MAX_TILT_DEGREES = 12.0
MAX_REDRAWS = 50

SHAPE_QUESTIONS = ("what shape is this?", "what is this object?", "name the shape.")
TALL_QUESTIONS = ("is it taller than it is wide?", "is this object tall?")
COLOUR_QUESTIONS = ("what colour is it?",)
DESCRIBE = "describe the shape."


@cache
def base_mesh(shape: str) -> Any:
    """The open3d primitive of `shape`, about unit size, centred at the origin, z up."""
    import open3d as o3d

    make = o3d.geometry.TriangleMesh
    meshes = {
        "box": lambda: make.create_box(1.0, 1.0, 1.0),
        "sphere": lambda: make.create_sphere(radius=0.5, resolution=16),
        "cylinder": lambda: make.create_cylinder(radius=0.5, height=1.0, resolution=24),
        "cone": lambda: make.create_cone(radius=0.5, height=1.0, resolution=24),
        "torus": lambda: make.create_torus(torus_radius=0.4, tube_radius=0.15, radial_resolution=24, tubular_resolution=12),
        "tetrahedron": lambda: make.create_tetrahedron(radius=0.6),
        "octahedron": lambda: make.create_octahedron(radius=0.6),
        "arrow": lambda: make.create_arrow(cylinder_radius=0.12, cone_radius=0.25, cylinder_height=0.6, cone_height=0.4),
    }
    if shape not in meshes:
        raise KeyError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    mesh = meshes[shape]()
    mesh.translate(-mesh.get_axis_aligned_bounding_box().get_center())
    mesh.compute_triangle_normals()
    return mesh


@dataclass(frozen=True)
class ShapeScene:
    """One object: what it is, how it was placed, and how its points are made."""

    shape: str
    colour: str
    transform: tuple[tuple[float, ...], ...]  # 3x3 linear map applied to the primitive
    occlusion: float  # fraction of points cut away (0: none)
    occlusion_angle: float  # direction of the cutting plane's normal, radians about z
    jitter: float  # std of the Gaussian noise added to each coordinate
    tall: bool
    sample_seed: int

    def caption(self, with_colour: bool = True) -> str:
        """E.g. "a tall red cone, partly hidden"."""
        words = ["a", "tall" if self.tall else "wide", *([self.colour] if with_colour else []), self.shape]
        return " ".join(words) + (", partly hidden" if self.occlusion > 0 else "")

    def questions(self, with_colour: bool = True) -> list[tuple[str, str]]:
        """Every (question, answer) pair this scene answers."""
        pairs = [(q, self.shape) for q in SHAPE_QUESTIONS]
        pairs += [(q, "yes" if self.tall else "no") for q in TALL_QUESTIONS]
        if with_colour:
            pairs += [(q, self.colour) for q in COLOUR_QUESTIONS]
        return pairs


def _rotation(yaw: float, tilt: float, tilt_axis: float) -> np.ndarray:
    """Tilt by `tilt` about a horizontal axis at angle `tilt_axis`, then turn by `yaw` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    axis = np.array([np.cos(tilt_axis), np.sin(tilt_axis), 0.0])
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    tilt_matrix = np.eye(3) + np.sin(tilt) * cross + (1 - np.cos(tilt)) * cross @ cross  # Rodrigues
    return turn @ tilt_matrix


def height_to_width(shape: str, transform: np.ndarray) -> float:
    """z extent over the largest horizontal extent of the transformed primitive."""
    vertices = np.asarray(base_mesh(shape).vertices) @ transform.T
    extent = np.ptp(vertices, axis=0)
    return float(extent[2] / max(extent[0], extent[1]))


def scene_for_index(
    index: int,
    seed: int,
    split: str,
    shapes: tuple[str, ...] = SHAPES,
    occlusion_probability: float = 0.5,
    max_occlusion: float = 0.3,
    jitter: float = 0.01,
) -> ShapeScene:
    """Scene `index` of `split` (a pure function of its arguments)."""
    rng = random.Random(f"pointcloud/{seed}/{split}/{index}")
    shape = shapes[rng.randrange(len(shapes))]
    colour = rng.choice(sorted(COLOURS))
    rotation = _rotation(rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(0, MAX_TILT_DEGREES)), rng.uniform(0, 2 * np.pi))
    # Draw tall or wide first, then stretch z to a target ratio, so that most shapes are
    # tall or wide equally often (the answer cannot be guessed from the shape alone).
    tall = rng.random() < 0.5
    for _ in range(MAX_REDRAWS):
        target = rng.uniform(*TALL_RATIOS) if tall else rng.uniform(*WIDE_RATIOS)
        horizontal = [rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4)]
        stretch = target / height_to_width(shape, rotation @ np.diag([*horizontal, 1.0]))
        if not STRETCH_RANGE[0] <= stretch <= STRETCH_RANGE[1]:
            tall = not tall  # e.g. a torus is never tall: stretching it 5x would not look like one
            continue
        transform = rotation @ np.diag([*horizontal, stretch])
        ratio = height_to_width(shape, transform)  # the tilt makes z stretch not exactly linear
        if (ratio > 1.0) == tall and not TALL_BAND[0] <= ratio <= TALL_BAND[1]:
            break
    else:  # unreachable in practice; the bound keeps a pathological seed from spinning
        raise RuntimeError(f"scene {index} of {split}: no {shape} with a clear height/width ratio in {MAX_REDRAWS} draws")
    occluded = rng.random() < occlusion_probability
    return ShapeScene(
        shape=shape,
        colour=colour,
        transform=tuple(tuple(float(v) for v in row) for row in transform),
        occlusion=rng.uniform(0.1, max_occlusion) if occluded else 0.0,
        occlusion_angle=rng.uniform(0, 2 * np.pi),
        jitter=jitter,
        tall=tall,
        sample_seed=rng.randrange(2**31),
    )


def render_points(scene: ShapeScene, count: int = 1024) -> PointSet:
    """Exactly `count` surface points of the scene, with normals and its colour."""
    transform = np.array(scene.transform)
    # Sample enough that `count` points remain once the occluded part is cut away.
    total = int(np.ceil(count / (1.0 - scene.occlusion)))
    sampled = sample_mesh(base_mesh(scene.shape), total, "uniform", seed=scene.sample_seed)
    points = sampled.points.astype(np.float64) @ transform.T
    normals = sampled.normals.astype(np.float64) @ np.linalg.inv(transform)  # normals map by the inverse transpose
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    rng = np.random.default_rng(scene.sample_seed)
    points += rng.normal(0.0, scene.jitter, size=points.shape)
    # Keep the `count` points nearest along the plane normal: the rest are hidden.
    direction = np.array([np.cos(scene.occlusion_angle), np.sin(scene.occlusion_angle), 0.0])
    keep = np.sort(np.argsort(points @ direction, kind="stable")[:count])
    colours = np.tile(np.array(COLOURS[scene.colour]), (count, 1))
    return PointSet(points[keep].astype(np.float32), normals[keep].astype(np.float32), colours.astype(np.float32), f"{scene.shape} scene")
