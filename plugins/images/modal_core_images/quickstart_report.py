"""The quickstart's numbers against issue #28's goals, as a Markdown table (the README's)
and as `report/index.html`: one offline page with the numbers, curves, the judged
generation grids, the understanding grid, VQ reconstructions and, for several seeds,
a seed table with mean ± sd."""

from __future__ import annotations

import html
import io
import statistics
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from modal_core.reporting import png_data_uri, write_text
from modal_core_images.evaluation.shapes_eval import GenerationResult, UnderstandingResult, answer_is_right


@dataclass(frozen=True)
class Goal:
    """One measure of `metrics.json` (a dotted key) and the goal it is held to, if any.

    With several seeds the mean must meet the goal and, where `seeds_within` is set,
    every seed must lie within it of the mean."""

    key: str
    label: str
    at_least: float | None = None
    at_most: float | None = None
    seeds_within: float | None = None

    def describe(self) -> str:
        """The goal in words, e.g. "≥ 0.9, each seed within 0.05 of the mean", or "" for none."""
        if self.at_least is None and self.at_most is None:
            return ""
        limit = self.at_least if self.at_least is not None else self.at_most
        shown = _number(self.key, limit) if _is_seconds(self.key) else f"{limit:g}"
        bound = f"{'≥' if self.at_least is not None else '≤'} {shown}"
        if self.seeds_within is not None:
            bound += f", each seed within {self.seeds_within:g} of the mean"
        return bound

    def met(self, value: float, per_seed: list[float]) -> bool | None:
        """Whether `value` (the mean where there are several seeds) meets the goal."""
        if self.at_least is None and self.at_most is None:
            return None
        ok = value >= self.at_least if self.at_least is not None else value <= self.at_most
        if self.seeds_within is not None and len(per_seed) > 1:
            ok = ok and all(abs(seed - value) <= self.seeds_within + 1e-9 for seed in per_seed)
        return ok


GOALS = (
    Goal("understanding_accuracy", "understanding: exact answers about held-out images", at_least=0.95, seeds_within=0.05),
    Goal("understanding_questions", "questions asked"),
    Goal("generation_accuracy", "generation: one object drawn right, CFG 3", at_least=0.9, seeds_within=0.05),
    Goal("generation_accuracy_cfg5", "generation: one object drawn right, CFG 5 (Janus's default)", at_least=0.9, seeds_within=0.05),
    Goal("generation_two_object_accuracy", "two-object captions, both objects in order, CFG 3"),
    Goal("generation_two_object_accuracy_cfg5", "two-object captions, both objects in order, CFG 5", at_least=0.8, seeds_within=0.05),
    Goal("generated_images", "images drawn at each guidance"),
    Goal(
        "diversity_cfg5.generated.share_covering_3_quadrants",
        "diversity: share of one-object prompts whose 16 draws at CFG 5 put the object in ≥ 3 of 4 quadrants",
        at_least=1.0,
    ),
    Goal("diversity_cfg5.generated.mean_thirds_entropy_bits", "positional entropy of those draws (3 x 3 thirds, bits)"),
    Goal("diversity_cfg5.training.mean_thirds_entropy_bits", "positional entropy of as many training scenes per object (bits)"),
    Goal("shapes_geneval.overall", "shapes_geneval (GenEval-mini) overall at the suite's defaults", at_least=0.8, seeds_within=0.05),
    Goal("shapes_geneval.tags.colors", "shapes_geneval: colors"),
    Goal("shapes_geneval.tags.counting", "shapes_geneval: counting"),
    Goal("shapes_geneval.tags.two_object", "shapes_geneval: two objects"),
    Goal("shapes_geneval.tags.position", "shapes_geneval: position"),
    Goal("vq_tokenizer.psnr_db", "VQ tokenizer: reconstruction of unseen images, dB PSNR", at_least=30.0),
    Goal("vq_tokenizer.codebook_usage", "VQ tokenizer: share of the codebook used"),
    Goal("training_seconds.total", "training time, all five runs"),
    Goal("seconds_total", "quickstart time: training and evaluation, set-up excluded", at_most=900.0),
)
"""The rows of the report, in order; goals from issue #28 (held-out, mean over seeds)."""


def lookup(metrics: dict, key: str) -> float | None:
    """The number at dotted `key` of `metrics`, or None where it is absent."""
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def numeric_leaves(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Every number of a (nested) metrics dict, keyed by its dotted path."""
    leaves = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            leaves.update(numeric_leaves(value, f"{prefix}{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            leaves[f"{prefix}{name}"] = value
    return leaves


def summarise_seeds(per_seed: dict[int, dict]) -> dict:
    """The `metrics.json` of a run of several seeds: each seed's metrics, and the mean and
    sample standard deviation of every number they all have (dotted keys)."""
    leaves = [numeric_leaves(metrics) for metrics in per_seed.values()]
    shared = [key for key in leaves[0] if key != "seed" and all(key in seed for seed in leaves)]
    return {
        "seeds": sorted(per_seed),
        "per_seed": {str(seed): metrics for seed, metrics in sorted(per_seed.items())},
        "mean": {key: round(statistics.mean(seed[key] for seed in leaves), 4) for key in shared},
        "sd": {key: round(statistics.stdev(seed[key] for seed in leaves), 4) for key in shared},
    }


@dataclass(frozen=True)
class Row:
    """One measure as shown: its label, the value per seed and overall, the goal and verdict."""

    label: str
    per_seed: list[str]
    value: str
    goal: str
    met: bool | None


def _is_seconds(key: str) -> bool:
    return "seconds" in key


def _number(key: str, value: float) -> str:
    if _is_seconds(key):
        minutes, seconds = divmod(round(value), 60)
        return " ".join(([f"{minutes} min"] if minutes else []) + ([f"{seconds} s"] if seconds or not minutes else []))
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}" if key.endswith("psnr_db") else f"{value:.3f}".rstrip("0").rstrip(".")


def rows(metrics: dict) -> list[Row]:
    """The `GOALS` rows of a `metrics.json`, one seed's (flat) or several seeds' (`summarise_seeds`)."""
    several = "per_seed" in metrics
    result = []
    for goal in GOALS:
        seeds = [lookup(m, goal.key) for m in metrics["per_seed"].values()] if several else []
        if several:
            if any(value is None for value in seeds):
                continue
            mean, sd = metrics["mean"][goal.key], metrics["sd"][goal.key]
            value = f"{_number(goal.key, mean)} ± {_number(goal.key, sd)}"
        else:
            mean = lookup(metrics, goal.key)
            if mean is None:
                continue
            value = _number(goal.key, mean)
        result.append(Row(goal.label, [_number(goal.key, s) for s in seeds], value, goal.describe(), goal.met(mean, seeds)))
    return result


def _verdict(met: bool | None) -> str:
    return "" if met is None else "met" if met else "not met"


def markdown_table(metrics: dict) -> str:
    """The README's results table for a `metrics.json`."""
    seeds = [f"seed {seed}" for seed in metrics.get("seeds", [])]
    value = "mean ± sd" if seeds else f"seed {metrics.get('seed', 0)}"
    lines = ["| measure | " + " | ".join([*seeds, value]) + " | goal |", "|---" * (len(seeds) + 3) + "|"]
    for row in rows(metrics):
        goal = f"{row.goal}: {_verdict(row.met)}" if row.goal else ""
        lines.append(f"| {row.label} | " + " | ".join([*row.per_seed, f"**{row.value}**" if row.goal else row.value]) + f" | {goal} |")
    return "\n".join(lines) + "\n"


@dataclass
class SeedEvaluation:
    """What one seed's final model did, for the report page."""

    seed: int
    generations: dict[float, GenerationResult]  # by guidance scale
    understanding: UnderstandingResult
    reconstructions: list[tuple[Image.Image, Image.Image]]  # original, through the VQ tokenizer
    curves: Path


def _image(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f'<img src="{png_data_uri(buffer.getvalue())}" alt="">'


def _cell(image: Image.Image, ok: bool | None, lines: list[str]) -> str:
    mark = {True: ("right", "✓ right"), False: ("wrong", "✗ wrong"), None: ("plain", "")}[ok]
    text = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
    verdict = f'<div class="verdict">{mark[1]}</div>' if mark[1] else ""
    return f'<figure class="{mark[0]}">{_image(image)}<figcaption>{verdict}{text}</figcaption></figure>'


def _numbers_table(metrics: dict) -> str:
    seeds = [f"seed {seed}" for seed in metrics.get("seeds", [])]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in ["measure", *seeds, "mean ± sd" if seeds else "value", "goal", ""])
    body = []
    for row in rows(metrics):
        cells = [row.label, *row.per_seed, row.value, row.goal, _verdict(row.met)]
        css = "" if row.met is None else ' class="met"' if row.met else ' class="unmet"'
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _seed_section(evaluation: SeedEvaluation, title: str) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    if evaluation.curves.is_file():
        curves = png_data_uri(evaluation.curves.read_bytes())
        parts.append(f'<h3>Training curves</h3><img class="curves" src="{curves}" alt="training curves">')
    for cfg, result in evaluation.generations.items():
        right = sum(drawn.ok for drawn in result.images)
        parts.append(f"<h3>Generation at CFG {cfg:g}: {right} of {result.total} judged right by the checker</h3>")
        cells = [_cell(drawn.image, drawn.ok, [drawn.prompt, drawn.reason]) for drawn in result.images]
        parts.append(f'<div class="grid">{"".join(cells)}</div>')
    judged = [
        (image, question, answer, expected, answer_is_right(answer, expected))
        for image, question, answer, expected in evaluation.understanding.examples
    ]
    right = sum(ok for *_, ok in judged)
    parts.append(f"<h3>Understanding: {right} of {len(judged)} answers exact</h3>")
    cells = [_cell(image, ok, [question, f"answer: {answer}", f"truth: {expected}"]) for image, question, answer, expected, ok in judged]
    parts.append(f'<div class="grid">{"".join(cells)}</div>')
    parts.append("<h3>VQ tokenizer: unseen images (left) and their reconstructions (right)</h3>")
    pairs = [f'<figure class="pair">{_image(original)}{_image(rebuilt)}</figure>' for original, rebuilt in evaluation.reconstructions]
    parts.append(f'<div class="grid">{"".join(pairs)}</div>')
    return "\n".join(parts)


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
tr.met td:last-child { color: #1a7f37; font-weight: bold; }
tr.unmet td:last-child { color: #c62828; font-weight: bold; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; }
figure { margin: 0; width: 150px; font-size: 11px; border: 2px solid #ccc; padding: 3px; }
figure.right { border-color: #1a7f37; }
figure.wrong { border-color: #c62828; }
figure.pair { width: auto; }
figure img { width: 96px; height: 96px; image-rendering: pixelated; }
.verdict { font-weight: bold; }
figure.right .verdict { color: #1a7f37; }
figure.wrong .verdict { color: #c62828; }
img.curves { max-width: 100%; }
"""


def write_index(path: Path, metrics: dict, evaluations: list[SeedEvaluation]) -> None:
    """Write the report page: numbers with goals, then each seed's curves and grids."""
    several = len(evaluations) > 1
    sections = [_seed_section(evaluation, f"Seed {evaluation.seed}" if several else "What the model does") for evaluation in evaluations]
    over_seeds = " (mean ± sample sd over seeds)" if several else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>modal-core quickstart report</title><style>{_STYLE}</style></head>
<body>
<h1>modal-core quickstart report</h1>
<p>Held-out scenes, judged by the deterministic shapes checker; goals from issue #28{over_seeds}.</p>
{_numbers_table(metrics)}
{"".join(sections)}
</body></html>
"""
    write_text(page, path)
