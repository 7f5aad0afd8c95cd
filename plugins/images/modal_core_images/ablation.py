"""`modal-core ablate`: the Janus encoder ablation as one command.

Every top-level recipe of the folder that trains the unified model (not a
`modality_tokenizer`) is an arm; recipes in its subfolders are trained only where an arm
needs them. Each arm trains per seed into `out/seed<S>/<arm>`, then is scored on the shapes
world (understanding: held-out questions; generation: the checker on single- and
two-object prompts); the table goes to `out/ablation.md` and `out/ablation.png`, the
numbers to `out/results.json`. What an arm starts from (`init_from`, a trained tokenizer,
a semantic teacher: a path inside another recipe's `output_dir`, in this folder, its
subfolders, or shipped) is trained first, once, with the first seed, into
`out/seed<S>/<that recipe>`. The extra `key=value` overrides apply to the arms only (e.g.
their data), so every arm gets the same. A run whose final checkpoint exists is not
trained again: an interrupted ablation continues.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from modal_core import recipes, train
from modal_core.checkpoints.run_folder import HISTORY_FILE, checkpoint_name, read_history
from modal_core.checkpoints.store import CHECKPOINT_DIR
from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import PluginManager
from modal_core.reporting import write_json
from modal_core_images.ablation_report import ArmResult, TokenizerQuality, write_table
from modal_core_images.evaluation.shapes_eval import evaluate_generation, evaluate_understanding
from modal_core_images.modalities import GENERATION
from modal_core_images.quickstart import QUICKSTART_CFG

TIMINGS_FILE = "timings.json"
"""Training seconds of each run, keyed by its folder under `out`, kept for a later report."""


class Ablation:
    """Trains and scores the arms of one recipe folder into `out`."""

    def __init__(
        self,
        folder: Path,
        out: Path,
        plugins: PluginManager,
        overrides: tuple[str, ...] = (),
        step_scale: float = 1.0,
        eval_scale: float = 1.0,
        progress_bar: bool = True,
    ) -> None:
        self.folder, self.out, self.plugins = Path(folder), Path(out), plugins
        self.overrides, self.step_scale, self.eval_scale, self.progress_bar = tuple(overrides), step_scale, eval_scale, progress_bar
        files = sorted(self.folder.glob("*.yaml"))
        self.arms = [path for path in files if not load_recipe(path, plugins=plugins).modality_tokenizer]
        if not self.arms:
            raise RecipeError(f"{self.folder}: no arm recipes (top-level *.yaml files that train the unified model)")
        # Which recipe writes each output_dir: the folder's (arms, and any under its subfolders) first, then the shipped ones.
        self.producers: dict[str, Path] = {}
        for path in [*files, *sorted(self.folder.glob("*/**/*.yaml")), *(recipes.shipped_dir() / name for name in recipes.names())]:
            # Without plugins: only output_dir is read, and a shipped recipe may need plugins not loaded here.
            self.producers.setdefault(load_recipe(path).output_dir.rstrip("/"), path)
        self.runs: dict[tuple[Path, int], Path] = {}

    def name(self, path: Path) -> str:
        """A recipe's folder name under a seed: its name in the folder, else its shipped name."""
        path = path.resolve()
        if path.is_relative_to(self.folder.resolve()):
            return path.relative_to(self.folder.resolve()).with_suffix("").as_posix()
        return path.relative_to(recipes.shipped_dir().resolve()).with_suffix("").as_posix()

    def run(self, seeds: tuple[int, ...]) -> list[ArmResult]:
        """Train and score every arm for every seed; write the table; return its rows."""
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
        self.first_seed = seeds[0]
        results = []
        for seed in seeds:
            for arm in self.arms:
                run_dir = self.train(arm, seed)
                results.append(self.score(arm, run_dir, seed))
        write_json({"results": [asdict(result) for result in results]}, self.out / "results.json")
        write_table(results, self.out / "ablation.md", self.out / "ablation.png", self.tokenizer_quality())
        print(f"[ablate] table in {self.out / 'ablation.md'}:\n{(self.out / 'ablation.md').read_text()}")
        return results

    def train(self, path: Path, seed: int) -> Path:
        """Train recipe `path` with `seed` (its dependencies first) unless done; its run folder."""
        key = (path.resolve(), seed)
        if key in self.runs:
            return self.runs[key]
        arm = path.resolve() in {a.resolve() for a in self.arms}
        extra = list(self.overrides) if arm else []
        recipe = load_recipe(path, extra, self.plugins)
        folder = self.out / f"seed{seed}" / self.name(path)
        overrides = [*extra, f"output_dir={folder}", f"seed={seed}", f"trainer.progress_bar={str(self.progress_bar).lower()}"]
        overrides += self._dependencies(recipe, path)
        if self.step_scale != 1.0:
            steps = max(2, round(recipe.trainer.max_steps * self.step_scale))
            overrides += [f"trainer.max_steps={steps}", "trainer.checkpoint_every_n_steps=0", "trainer.val_every_n_steps=0"]
        recipe = load_recipe(path, overrides, self.plugins)
        label = folder.relative_to(self.out).as_posix()
        if (folder / CHECKPOINT_DIR / checkpoint_name(recipe.trainer.max_steps)).is_dir():
            print(f"[ablate] {label}: already trained")
        else:
            if folder.exists():
                print(f"[ablate] {label}: an earlier run stopped before its last step; training it again")
                recipe = load_recipe(path, [*overrides, "overwrite=true"], self.plugins)
            print(f"[ablate] {label}: {recipe.description}")
            started = time.perf_counter()
            train(recipe, plugins=self.plugins)
            timings = self.timings()
            timings[label] = round(time.perf_counter() - started, 1)
            write_json(timings, self.out / TIMINGS_FILE)
        self.runs[key] = folder
        return folder

    def _dependencies(self, recipe, path: Path) -> list[str]:
        """Overrides pointing `init_from` and the modalities' weight paths at the runs made
        here of the recipes whose output_dir they lie in (trained first)."""
        references = {"init_from": recipe.init_from}
        for modality, options in recipe.modalities.items():
            for key in self.plugins.modality(modality).weight_paths:
                references[f"modalities.{modality}.{key}"] = (options or {}).get(key)
        overrides = []
        for key, value in references.items():
            for output_dir, producer in self.producers.items():
                if value and producer.resolve() != path.resolve() and (value == output_dir or value.startswith(output_dir + "/")):
                    run_dir = self.train(producer, self.first_seed)
                    overrides.append(f"{key}={run_dir}{value[len(output_dir) :]}")
                    break
        return overrides

    def timings(self) -> dict[str, float]:
        """The training seconds recorded so far (`TIMINGS_FILE`)."""
        file = self.out / TIMINGS_FILE
        return json.loads(file.read_text()) if file.is_file() else {}

    def score(self, arm: Path, run_dir: Path, seed: int) -> ArmResult:
        """Understanding and generation scores of an arm's final model (None for a task it lacks)."""
        pipeline = Pipeline.load(run_dir, plugins=self.plugins)
        recipe = load_recipe(arm, list(self.overrides), self.plugins)
        grid = next((s.options.get("grid") for s in recipe.data.sources if s.dataset == "shapes"), None)
        readers = [r for r in pipeline.modalities.values() if r.spec.direction == "input" and r.spec.keyword == "image"]
        understanding = generation = two_object = None
        if readers:
            count = max(20, round(200 * self.eval_scale))
            understanding = evaluate_understanding(pipeline, readers[0].payload_shape[-1], grid, count=count).accuracy
        if GENERATION in pipeline.modalities:
            per_prompt, two_object_prompts = max(1, round(2 * self.eval_scale)), max(2, round(10 * self.eval_scale))
            drawn = evaluate_generation(pipeline, per_prompt, cfg=QUICKSTART_CFG, two_object_prompts=two_object_prompts)
            generation, two_object = drawn.accuracy, drawn.two_object_accuracy
        label = run_dir.relative_to(self.out).as_posix()
        return ArmResult(arm.stem, seed, understanding, generation, two_object, self.timings().get(label, float("nan")))

    def tokenizer_quality(self) -> dict[str, TokenizerQuality]:
        """The last validation PSNR and codebook usage (else the training ones) of every
        modality tokenizer trained here that logged them, as its training did."""
        quality = {}
        for (path, _), run_dir in self.runs.items():
            if load_recipe(path, plugins=self.plugins).modality_tokenizer:
                records = read_history(run_dir / HISTORY_FILE)
                last = {}
                for split in ("train", "val"):  # a validation value, where logged, replaces the training one
                    for record in records:
                        last.update({key: record[f"{split}/{key}"] for key in ("psnr", "codebook_usage") if f"{split}/{key}" in record})
                if len(last) == 2:  # a run too short to log any is left out
                    quality[run_dir.relative_to(self.out).as_posix()] = TokenizerQuality(last["psnr"], last["codebook_usage"])
        return quality
