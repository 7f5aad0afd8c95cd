"""A built wheel works on its own: it ships the recipes and the plugin template, lists
the recipes, trains a shipped recipe by name and scaffolds a plugin, with the source
tree out of reach.

The wheel is built from a copy of the checkout (setuptools keeps a `build/` folder whose
stale files would go into later wheels) and installed into a `--target` folder put on
PYTHONPATH; every command runs outside the checkout and first checks that `modal_core`
is imported from that folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, tiny_quickstart_text_overrides

from modal_core import recipes
from modal_core.scaffold import TEMPLATE_DIR, template_files

pytestmark = pytest.mark.slow

NOT_SOURCES = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "runs", "site")
RUN_INSTALLED = """\
import runpy, sys
from pathlib import Path
import modal_core
site, args = sys.argv[1], sys.argv[2:]
assert Path(modal_core.__file__).resolve().is_relative_to(Path(site).resolve()), f"imported {modal_core.__file__}, not the wheel in {site}"
sys.argv = ["modal-core", *args]
runpy.run_module("modal_core", run_name="__main__")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCES)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    [wheel] = (root / "dist").glob("modal_core-*.whl")
    return wheel


@pytest.fixture(scope="module")
def site(wheel: Path) -> Path:
    """A folder with the wheel installed into it."""
    target = wheel.parent.parent / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    return target


def run_installed(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m modal_core ARGS` importing modal-core from `site` only."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-c", RUN_INSTALLED, str(site), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_wheel_ships_every_recipe_and_the_whole_plugin_template_and_no_build_output(wheel, site):
    assert recipes.names(site / "modal_core" / "recipes") == recipes.names()
    assert template_files(site / "modal_core" / TEMPLATE_DIR.name) == template_files()
    stray = [name for name in zipfile.ZipFile(wheel).namelist() if "__pycache__" in name or ".egg-info" in name or "/build/" in name]
    assert not stray


def test_installed_wheel_lists_the_shipped_recipes_and_trains_one_by_name(site, tmp_path):
    listing = run_installed(site, "recipes", cwd=tmp_path)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "quickstart/text.yaml" in listing.stdout and "janus/stage2.yaml" in listing.stdout
    assert "Tiny Llama language model" in listing.stdout

    run_dir = tmp_path / "run"
    trained = run_installed(site, "train", "quickstart/text", f"output_dir={run_dir}", *tiny_quickstart_text_overrides(), cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert "done: checkpoint" in trained.stdout
    assert (run_dir / "checkpoints" / "step-000001" / "model.safetensors").is_file()
    assert (run_dir / "recipe.yaml").is_file()


def test_installed_wheel_names_close_recipes_when_one_is_missing(site, tmp_path):
    result = run_installed(site, "train", "quickstart/txt", cwd=tmp_path)
    assert result.returncode == 1
    assert "recipe file not found: quickstart/txt" in result.stderr and "did you mean quickstart/text" in result.stderr


def test_installed_wheel_scaffolds_a_plugin_from_its_template(site, tmp_path):
    out = tmp_path / "modal-core-audio-clips"
    result = run_installed(site, "new-plugin", "audio_clips", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert written == sorted(str(path).replace("time_series", "audio_clips") for path in template_files())
