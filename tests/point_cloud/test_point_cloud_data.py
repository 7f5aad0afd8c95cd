"""The synthetic shapes world, its data sets (registered through the plugin hook), the
ModelNet40 / ShapeNet folder loader, and the QA evaluator's scoring."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from modal_core.data.segments import Media, Text
from modal_core.errors import DataError, RecipeError
from modal_core_point_cloud.evaluation import ANSWERS, EVAL_SPLIT, FIGURE, evaluate_pointcloud_qa
from modal_core_point_cloud.io import PointSet
from modal_core_point_cloud.processing import PointCloudProcessor
from modal_core_point_cloud.synthetic import COLOURS, SHAPE_QUESTIONS, SHAPES, render_points, scene_for_index

from .helpers import point_cloud_plugins, write_box_mesh


def test_plugin_registers_modality_datasets_and_evaluator():
    plugins = point_cloud_plugins()
    spec = plugins.modality("point_cloud")
    assert spec.direction == "input" and spec.cli_flag == "points" and spec.build_head is None
    assert {"pointcloud_shapes", "pointcloud_text", "pointcloud_folder"} <= set(plugins.datasets())
    assert "pointcloud_qa" in plugins.evaluators()
    assert not plugins.failures


def test_scenes_are_deterministic_and_splits_differ():
    first = [scene_for_index(i, 0, "train") for i in range(20)]
    assert first == [scene_for_index(i, 0, "train") for i in range(20)]
    assert first != [scene_for_index(i, 0, "heldout") for i in range(20)]
    np.testing.assert_array_equal(render_points(first[3], 256).points, render_points(first[3], 256).points)
    assert {s.shape for s in (scene_for_index(i, 0, "train") for i in range(200))} == set(SHAPES)


def test_tall_answer_matches_the_rendered_points():
    checked = 0
    for index in range(80):
        scene = scene_for_index(index, 1, "train", occlusion_probability=0.0)
        points = render_points(scene, 512).points
        extent = np.ptp(points, axis=0)
        assert (extent[2] > max(extent[0], extent[1])) == scene.tall, scene
        checked += 1
    assert checked == 80
    tall = [scene_for_index(i, 0, "train").tall for i in range(400)]
    assert 0.35 < np.mean(tall) < 0.65  # both answers are common


def test_rendered_points_count_colour_normals_and_occlusion():
    scene = scene_for_index(0, 0, "train", occlusion_probability=1.0)
    point_set = render_points(scene, 300)
    assert point_set.points.shape == (300, 3) and point_set.normals.shape == (300, 3)
    np.testing.assert_allclose(point_set.colours, np.tile(COLOURS[scene.colour], (300, 1)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(point_set.normals, axis=1), 1.0, atol=1e-5)
    # The occluded part is cut by a vertical plane: no kept point lies beyond it.
    direction = np.array([np.cos(scene.occlusion_angle), np.sin(scene.occlusion_angle), 0.0])
    full = render_points(dataclasses.replace(scene, occlusion=0.0), 300).points
    assert (point_set.points @ direction).max() < (full @ direction).max() - 0.05


def test_qa_and_caption_samples():
    plugins = point_cloud_plugins()
    factory = plugins.datasets()["pointcloud_shapes"]
    qa = factory({"task": "qa", "size": 50, "points": 128, "colours": True}, 0, "train")
    answers = set()
    for index in range(50):
        segments = qa[index].segments
        media = [s for s in segments if isinstance(s, Media)]
        assert len(media) == 1 and media[0].modality == "point_cloud" and len(media[0].payload) == 128
        answer = segments[-1]
        assert isinstance(answer, Text) and answer.supervised
        answers.add(answer.text.split("<|")[0].strip())
        scene = scene_for_index(index, 0, "train")
        assert answer.text.strip().startswith(tuple(a for _, a in scene.questions(True)))
    assert answers & set(SHAPES) and answers & {"yes", "no"} and answers & set(COLOURS)
    caption = factory({"task": "caption", "size": 5}, 0, "train")[2].segments[-1].text
    assert caption.strip().startswith(scene_for_index(2, 0, "train").caption(with_colour=False))
    with pytest.raises(RecipeError, match=r"unknown option\(s\) \['colour'\]"):
        factory({"colour": True}, 0, "train")
    with pytest.raises(RecipeError, match="shapes"):
        factory({"shapes": ["blob"]}, 0, "train")


def test_text_corpus_for_the_tokenizer():
    corpus = point_cloud_plugins().datasets()["pointcloud_text"]({"num_sentences": 30}, 0, "train")
    texts = [corpus[i].segments[0].text for i in range(len(corpus))]
    assert len(texts) == 30 and all("<|Assistant|>" in t for t in texts)
    assert any(shape in " ".join(texts) for shape in SHAPES)


def test_modelnet_folder_layout(tmp_path):
    root = tmp_path / "ModelNet40"
    for name in ("night_stand", "chair"):
        for part, count in (("train", 3), ("test", 1)):
            for index in range(count):
                write_box_mesh(root / name / part / f"{name}_{index:04d}.off")
    factory = point_cloud_plugins().datasets()["pointcloud_folder"]
    train = factory({"path": str(root)}, 0, "train")
    heldout = factory({"path": str(root)}, 0, "heldout")
    assert len(train) == 6 and len(heldout) == 2
    sample = train[0]
    assert sample.segments[-1].text.strip().startswith("chair")
    assert train[5].segments[-1].text.strip().startswith("night stand")
    payload = PointCloudProcessor(num_points=64, mesh_points=500)(sample.segments[1].payload)
    assert payload.shape == (64, 3)
    with pytest.raises(DataError, match="data folder not found"):
        factory({"path": str(tmp_path / "nope")}, 0, "train")
    with pytest.raises(DataError, match=r"no modelnet meshes for split 'train'.*<class>/\{train,test\}/\*\.off"):
        factory({"path": str(tmp_path)}, 0, "train")


def test_shapenet_folder_layout_with_taxonomy(tmp_path):
    root = tmp_path / "ShapeNetCore.v2"
    for synset in ("03001627", "02691156"):
        for model in range(12):
            write_box_mesh(root / synset / f"model{model:02d}" / "models" / "model_normalized.obj")
    (root / "taxonomy.json").write_text(
        json.dumps([{"synsetId": "03001627", "name": "chair"}, {"synsetId": "02691156", "name": "airplane,aeroplane,plane"}])
    )
    factory = point_cloud_plugins().datasets()["pointcloud_folder"]
    options = {"path": str(root), "layout": "shapenet", "heldout_percent": 30}
    train, heldout = factory(options, 0, "train"), factory(options, 0, "heldout")
    assert len(train) + len(heldout) == 24 and len(heldout) > 0 and len(train) > len(heldout)
    labels = {train[i].segments[-1].text.strip().split("<|")[0] for i in range(len(train))}
    assert labels == {"chair", "airplane"}


class _Oracle:
    """A stand-in pipeline: names the shape right, says "no" to every other question,
    and records what it was shown."""

    def __init__(self):
        self.modalities = {"point_cloud": type("Runtime", (), {"processor": PointCloudProcessor(num_points=64)})()}
        self.seen = []

    def modality(self, direction, name=None, keyword=None):
        assert (direction, keyword) == ("input", "points")
        return "point_cloud"

    def answer(self, questions, media):
        clouds = media["point_cloud"]
        self.seen += clouds
        answers = []
        for question, cloud in zip(questions, clouds):
            assert isinstance(cloud, PointSet) and len(cloud) == 64
            answers.append(self.truth.pop(0) if question in SHAPE_QUESTIONS else "no.")
        return answers


def test_evaluator_scores_answers_and_writes_a_picture(tmp_path):
    oracle = _Oracle()
    scenes = [scene_for_index(i, 7, EVAL_SPLIT) for i in range(6)]
    oracle.truth = [s.shape.upper() for s in scenes]  # case is ignored
    metrics = evaluate_pointcloud_qa(oracle, {"limit": 6, "seed": 7, "batch_size": 4, "progress": False}, tmp_path)
    assert metrics["shape_accuracy"] == 1.0
    assert metrics["tall_accuracy"] == pytest.approx(sum(not s.tall for s in scenes) / 6)
    assert metrics["accuracy"] == pytest.approx((6 + sum(not s.tall for s in scenes)) / 12)
    assert metrics["questions"] == 12 and metrics["shape_chance"] == 1 / len(SHAPES)
    records = [json.loads(line) for line in (tmp_path / ANSWERS).read_text().splitlines()]
    assert len(records) == 12 and records[0]["expected"] == scenes[0].shape
    assert (tmp_path / FIGURE).stat().st_size > 10_000
