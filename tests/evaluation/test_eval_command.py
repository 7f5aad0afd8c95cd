"""`modal-core eval` on a tiny trained checkpoint: every built-in suite writes
results.json and report.md, reruns resume, and mistakes are clear one-line errors."""

from __future__ import annotations

import json
import types

import pytest
from conftest import run_cli

from modal_core.cli import main
from modal_core_images.evaluation import geneval
from modal_core_images.evaluation.shapes_benchmarks import write_shapes_benchmarks

from .conftest import image_plugins


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    return write_shapes_benchmarks(tmp_path_factory.mktemp("bench"), count=6)


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_vqa_through_the_installed_command(tiny_checkpoint, benchmarks, tmp_path):
    out = tmp_path / "vqa"
    args = [
        "eval",
        str(tiny_checkpoint),
        "--suite",
        "vqa",
        "--data",
        str(benchmarks),
        "--limit",
        "4",
        "--out",
        str(out),
        "-o",
        "max_new_tokens=3",
    ]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    results = _results(out)
    assert results["suite"] == "vqa" and results["options"]["max_new_tokens"] == 3 and results["options"]["limit"] == 4
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 4 and results["metrics"]["count"] == 4
    # The reported accuracy is the mean of the per-item scores, whatever the tiny model said.
    assert results["metrics"]["exact_match"] == pytest.approx(sum(i["exact_match"] for i in items) / 4)
    report = (out / "report.md").read_text()
    assert "| vqa_accuracy |" in report and "![examples.png](examples.png)" in report
    assert "exact_match:" in result.stdout
    # The protocol card: in results.json (not among the metrics) and at the top of report.md.
    card = results["protocol"]
    assert "protocol" not in results["metrics"]
    assert card["suite"] == "vqa" and card["protocol"] == "official" and card["reference"].startswith("GT-Vision-Lab/VQA@a013f004")
    assert card["items"] == 4 and card["prompt_template"].endswith("<|User|>: <image>{question}\n\n<|Assistant|>:")
    assert card["preprocessing"].startswith("preprocess modal-core: EXIF-upright RGB")
    no_sampling = {"cfg": None, "cfg_schedule": None, "cfg_plausibility": None, "top_k": None, "top_p": None}
    no_sampling |= {"images_per_prompt": None, "method": None}
    assert card["decoding"] == {"temperature": 0.0, "seed": 0, "max_new_tokens": 3, **no_sampling}
    rows = ("| protocol | official |", "| reference | GT-Vision-Lab/VQA@", "| prompt template | `")
    rows += ("| preprocessing | preprocess modal-core",)
    rows += ("| decoding: temperature | 0.0000 |", "| decoding: max new tokens | 3 |", "| decoding: cfg | n/a |", "| items | 4 |")
    assert all(row in report for row in rows) and report.index("## Protocol card") < report.index("## Metrics")
    # Another seed is another evaluation: the folder is refused, without a traceback.


def test_a_folder_of_another_evaluation_is_refused(tiny_checkpoint, benchmarks, tmp_path, capsys):
    args = ["eval", str(tiny_checkpoint), "--suite", "pope", "--data", str(benchmarks), "--limit", "1", "--out", str(tmp_path)]
    assert main(args, plugins=image_plugins()) == 0
    assert main([*args, "--seed", "1"], plugins=image_plugins()) == 1
    assert "holds results of another evaluation (options differ" in capsys.readouterr().err


def test_understanding_suites_and_resume(tiny_checkpoint, benchmarks, tmp_path, capsys):
    plugins = image_plugins()
    for suite in ("multiple_choice", "pope"):
        out = tmp_path / suite
        common = ["eval", str(tiny_checkpoint), "--suite", suite, "--data", str(benchmarks), "--out", str(out), "-o", "max_new_tokens=2"]
        assert main([*common, "--limit", "2"], plugins=plugins) == 0
        assert main([*common, "--limit", "3", "--batch-size", "2"], plugins=plugins) == 0
        lines = (out / "items.jsonl").read_text().splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert len(ids) == len(set(ids))  # the rerun appended only new items
        metrics = _results(out)["metrics"]
        if suite == "pope":
            assert len(ids) == 3 and metrics["count"] == 3
            assert metrics["true_positive"] + metrics["false_negative"] == 2  # labels alternate yes, no, yes
        else:
            assert metrics["questions"] == 3 and metrics["passes"] == len(ids)


def test_shapes_geneval_writes_a_geneval_folder(tiny_checkpoint, tmp_path):
    out = tmp_path / "gen"
    args = ["eval", str(tiny_checkpoint), "--suite", "shapes_geneval", "--limit", "4", "--out", str(out), "-o", "n=1", "-o", "cfg=3"]
    args += ["-o", "decoding=sjd:4"]
    assert main(args, plugins=image_plugins()) == 0
    results = _results(out)
    assert results["metrics"]["images"] == 4 and set(results["metrics"]["tags"]) == {"colors", "counting", "two_object", "position"}
    assert geneval.validate_folder(out, samples_per_prompt=1) == 4
    assert "![generations.png](generations.png)" in (out / "report.md").read_text()
    decoding = results["protocol"]["decoding"]
    assert decoding == {"temperature": 1.0, "seed": 0, "max_new_tokens": None, "cfg": 3.0, "top_k": None, "top_p": None} | {
        "cfg_schedule": "linear",  # the model's own, from its recipe (MODEL_GENERATION), beside -o cfg=3
        "cfg_plausibility": 0.2,
        "images_per_prompt": 1,
        "method": "sjd:4",
    }
    assert "| decoding: images per prompt | 1 |" in (out / "report.md").read_text()
    before = {p: p.stat().st_mtime_ns for p in out.glob("0000*/samples/*.png")}
    assert main(args, plugins=image_plugins()) == 0  # resumed: nothing is drawn again
    assert {p: p.stat().st_mtime_ns for p in out.glob("0000*/samples/*.png")} == before
    assert _results(out)["metrics"] == results["metrics"]


def test_fid_is_reported_unavailable_offline(tiny_checkpoint, tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"caption": "a red circle"}\n{"prompt": "a blue square"}\n')
    out = tmp_path / "fid"
    assert main(["eval", str(tiny_checkpoint), "--suite", "fid", "--data", str(captions), "--out", str(out)], plugins=image_plugins()) == 0
    metrics = _results(out)["metrics"]
    assert metrics["images"] == 2 and sorted(p.name for p in (out / "samples").iterdir()) == ["00000.png", "00001.png"]
    assert metrics["fid"] is None and "pytorch-fid" in metrics["fid_unavailable"]
    assert "| fid | n/a |" in (out / "report.md").read_text()


def test_list_shows_every_suite_with_a_description(capsys):
    plugin = types.ModuleType("extra_suites")

    def documented(pipeline, options, out_dir):
        """Scores things. More detail that the list leaves out."""

    def attributed(pipeline, options, out_dir):
        """Not this."""

    attributed.description = "An explicit description."
    from modal_core.hookspecs import hookimpl

    plugin.modal_core_evaluators = hookimpl(lambda: {"documented": documented, "attributed": attributed, "bare": lambda p, o, d: {}})
    plugins = image_plugins()
    plugins.register(plugin, name="extra")
    assert main(["eval", "--list"], plugins=plugins) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    suites = {"vqa", "multiple_choice", "pope", "geneval", "shapes_geneval", "shapes_understanding", "fid"}
    assert set(lines) == suites | {"documented", "attributed", "bare"}
    assert lines["documented"].split(None, 1)[1] == "Scores things.  [extra]"
    assert "An explicit description.  [extra]" in lines["attributed"]
    assert "(no description)" in lines["bare"]
    assert "[images]" in lines["vqa"]


def test_usage_errors(tiny_checkpoint, tmp_path, capsys):
    plugins = image_plugins()
    assert main(["eval", str(tiny_checkpoint), "--suite", "nope", "--out", str(tmp_path)], plugins=plugins) == 1
    assert "unknown evaluation suite 'nope'; registered: [" in capsys.readouterr().err
    assert main(["eval", str(tiny_checkpoint), "--suite", "vqa"], plugins=plugins) == 1
    assert "needs --out" in capsys.readouterr().err
    assert main(["eval", str(tiny_checkpoint), "--suite", "vqa", "--out", str(tmp_path / "x"), "-o", "novalue"], plugins=plugins) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err
