"""The shipped recipes, training one step, `modal-core understand --eeg`, and the
held-out evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from eeg.recordings import make_raw, mixed_rhythms
from modal_core.cli import main
from modal_core.config.loader import load_recipe
from modal_core.training.run import train
from modal_core_eeg.evaluate import METRICS, PICTURE, evaluate_simulated
from modal_core_eeg.simulate import CLASS_NAMES

RECIPES = REPO / "recipes" / "eeg"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The quickstart recipe trained for two steps (tiny batch, no validation)."""
    from modal_core.plugins import PluginManager
    from modal_core_eeg import plugin

    plugins = PluginManager(load_entry_points=False)
    plugins.register(plugin, name="eeg")
    out = tmp_path_factory.mktemp("eeg_run")
    overrides = [f"output_dir={out}", "trainer.max_steps=2", "data.batch_size=4", "data.val_samples=0", "data.num_workers=0"]
    recipe = load_recipe(RECIPES / "quickstart.yaml", overrides + ["trainer.progress_bar=false"], plugins=plugins)
    return train(recipe, plugins).checkpoint


def test_shipped_eeg_recipes_validate(eeg_plugins):
    quickstart = load_recipe(RECIPES / "quickstart.yaml", plugins=eeg_plugins)
    sketch = load_recipe(RECIPES / "eegmmi.yaml", plugins=eeg_plugins)
    assert quickstart.modalities.eeg.sfreq == 128.0 and sketch.modalities.eeg.max_channels == 64
    assert sketch.data.sources[0].dataset == "eegmmi_folder"


def test_understand_answers_about_an_eeg_file(checkpoint, eeg_plugins, tmp_path, capsys):
    path = tmp_path / "patient_raw.fif"
    make_raw(mixed_rhythms(256.0, 3.0), 256.0).save(path, verbose="error")
    code = main(
        ["understand", str(checkpoint), "--eeg", str(path), "--question", "what activity does this eeg show?", "--max-new-tokens", "4"],
        plugins=eeg_plugins,
    )
    assert code == 0
    assert capsys.readouterr().out.strip()  # an untrained model says something; the evaluator judges what


def test_understand_reports_a_bad_eeg_file_without_traceback(checkpoint, eeg_plugins, tmp_path, capsys):
    path = tmp_path / "slow_raw.fif"
    make_raw(mixed_rhythms(64.0, 3.0), 64.0).save(path, verbose="error")
    code = main(["understand", str(checkpoint), "--eeg", str(path), "--question", "what?"], plugins=eeg_plugins)
    error = capsys.readouterr().err
    assert code == 1 and "slow_raw.fif: recorded at 64 Hz" in error and "Traceback" not in error


def test_evaluator_runs_on_a_checkpoint(checkpoint, eeg_plugins, tmp_path):
    from modal_core.generation.pipeline import Pipeline

    pipeline = Pipeline.load(checkpoint, plugins=eeg_plugins)
    metrics = eeg_plugins.evaluators()["eeg_sim"](pipeline, {"limit": 6, "batch_size": 3}, tmp_path)
    assert metrics["total"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
    assert json.loads((tmp_path / METRICS).read_text())["total"] == 6
    assert (tmp_path / PICTURE).read_bytes()[:4] == b"\x89PNG"


def test_loading_computes_the_buffers_a_checkpoint_does_not_hold(checkpoint, eeg_plugins):
    """The model is built on the meta device; the EEG encoder's Fourier frequencies and
    the backbone's rotary frequencies are computed again, as a normal build has them."""
    import torch

    from modal_core.assemble import assemble
    from modal_core.generation.pipeline import Pipeline

    loaded = Pipeline.load(checkpoint, plugins=eeg_plugins)
    recipe = load_recipe(checkpoint / "recipe.yaml", plugins=eeg_plugins)
    built = assemble(recipe, eeg_plugins, loaded.tokenizer).model
    computed = {name: buffer for name, buffer in built.named_buffers() if name not in built.state_dict()}
    assert "encoders.eeg.channel_embedding.frequencies" in computed
    for name, buffer in computed.items():
        assert torch.equal(loaded.model.get_buffer(name), buffer), name


class _AlwaysAlpha:
    """A stand-in pipeline that answers "alpha rest" to everything."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def modality(self, direction, name=None, keyword=None):
        assert (direction, keyword) == ("input", "eeg")
        return "eeg"

    def answer(self, questions, media):
        self.seen += [len(raw.ch_names) for raw in media["eeg"]]
        return ["alpha rest."] * len(questions)


def test_evaluator_scores_answers_per_class(tmp_path):
    pipeline = _AlwaysAlpha()
    metrics = evaluate_simulated(pipeline, {"limit": 12}, tmp_path)
    assert metrics["accuracy"] == pytest.approx(1 / 6) and metrics["accuracy_10_channels"] == pytest.approx(1 / 6)
    assert metrics["per_class_accuracy"] == {name: float(name == "alpha rest") for name in CLASS_NAMES}
    assert metrics["confusions"]["spike and wave -> alpha rest"] == 2
    assert sorted(set(pipeline.seen)) == [10, 19]  # every recording asked with all channels, then 10


def test_simulated_dataset_items_are_deterministic_and_balanced(eeg_plugins):
    dataset = eeg_plugins.datasets()["eeg_sim"]({"size": 12, "question": "activity"}, 0, "train")
    answers = [dataset[i].segments[-1].text for i in range(12)]
    assert sorted({a.strip().removesuffix("<|end_of_sentence|>") for a in answers}) == sorted(CLASS_NAMES)
    first, again = dataset[3].segments[1].payload, dataset[3].segments[1].payload
    np.testing.assert_array_equal(first.get_data(), again.get_data())
