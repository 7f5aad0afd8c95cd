"""The worked example plugin of the docs (`examples/plugin-template/`) installs from its
folder without network, shows up in `modal-core plugins` and trains its recipe;
`modal-core new-plugin` scaffolds the same package under a new name, and the scaffold
installs and passes its own tests (which train a step and run the evaluator).

Packages are installed into a temporary `--target` folder put on PYTHONPATH for the
subprocesses, so the shared environment stays untouched."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modal_core.cli import main
from modal_core.scaffold import TEMPLATE_DIR, template_files

TEMPLATE_SPELLINGS = re.compile(r"time_series|time-series|TimeSeries|TIME_SERIES", re.IGNORECASE)


def install(source: Path, target: Path) -> None:
    """`pip install` a plugin folder into `target`, offline, from a copy (pip writes
    build files next to the sources)."""
    copy = target.parent / f"src-{source.name}"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*", "runs"))
    offline = ["--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", *offline, "--target", str(target), str(copy)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Python with `site` on its path; of the installed plugins only the example loads
    (through its entry point), which keeps start-up cheap."""
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "MODAL_CORE_PLUGINS": "time_series,audio_clips"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


QUICK = ["trainer.max_steps=3", "trainer.log_every_n_steps=1", "trainer.progress_bar=false", "data.batch_size=4", "data.val_samples=0"]


def test_template_installs_lists_and_trains(tmp_path):
    site = tmp_path / "site"
    install(TEMPLATE_DIR, site)
    assert (site / "modal_core_time_series" / "plugin.py").is_file()

    listing = run("-m", "modal_core", "plugins", site=site, cwd=tmp_path)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "time_series  (modal-core-time-series 0.1.0)" in listing.stdout
    contributions = "modalities: time_series\n    datasets: time_series_waves, time_series_waves_text\n    evaluators: time_series_waves"
    assert contributions in listing.stdout

    recipe = TEMPLATE_DIR / "recipes" / "time_series.yaml"
    run_dir = tmp_path / "run"
    overrides = [f"output_dir={run_dir}", "tokenizer.train.num_sentences=300", *QUICK]
    trained = run("-m", "modal_core", "train", str(recipe), *overrides, site=site, cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert "done: checkpoint" in trained.stdout
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    assert len(losses) == 3 and all(math.isfinite(loss) and loss > 0 for loss in losses)


def test_new_plugin_scaffolds_an_installable_package_whose_tests_pass(tmp_path, capsys):
    out = tmp_path / "modal-core-audio-clips"
    assert main(["new-plugin", "audio_clips", "--out", str(out)]) == 0
    assert f"wrote plugin modal-core-audio-clips to {out}" in capsys.readouterr().out

    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    expected = sorted(str(path).replace("time_series", "audio_clips") for path in template_files())
    assert written == expected
    assert "modal_core_audio_clips/modality.py" in written and "recipes/audio_clips.yaml" in written
    leftovers = [path for path in written if TEMPLATE_SPELLINGS.search((out / path).read_text(encoding="utf-8"))]
    assert not leftovers, f"template name left in {leftovers}"
    pyproject = (out / "pyproject.toml").read_text()
    assert 'name = "modal-core-audio-clips"' in pyproject and 'audio_clips = "modal_core_audio_clips.plugin"' in pyproject
    assert "class AudioClipsEncoder(nn.Module)" in (out / "modal_core_audio_clips" / "modality.py").read_text()

    site = tmp_path / "site"
    install(out, site)
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:dash", "tests", site=site, cwd=out)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    written_tests = len(re.findall(r"^def test_", (out / "tests" / "test_audio_clips.py").read_text(), re.M))  # none is parametrised
    assert written_tests >= 8 and re.search(rf"\b{written_tests} passed\b", tests.stdout), tests.stdout[-500:]


@pytest.mark.parametrize(
    ("name", "message"),
    [("Audio", "use lower-case words joined by underscores"), ("audio-clips", "use lower-case words"), ("9lives", "lower-case")],
)
def test_new_plugin_rejects_names_that_are_not_snake_case(name, message, tmp_path, capsys):
    assert main(["new-plugin", name, "--out", str(tmp_path / "x")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_new_plugin_never_writes_into_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new-plugin", "audio_clips", "--out", str(tmp_path)]) == 1
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
