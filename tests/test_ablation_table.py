"""The encoder ablation's table writer on fixed numbers."""

from __future__ import annotations

import math

from PIL import Image

from modal_core_images.ablation_report import ArmResult, TokenizerQuality, markdown_table, summarise, write_table

RESULTS = [
    ArmResult("decoupled", 0, 0.8, 0.5, 0.2, 100.0),
    ArmResult("understanding-only", 0, 0.9, None, None, 60.0),
    ArmResult("decoupled", 1, 0.6, 0.7, 0.4, 110.0),
    ArmResult("understanding-only", 1, 0.7, None, None, 64.0),
]


def test_summary_is_mean_and_sample_sd_over_seeds():
    summary = summarise(RESULTS)
    assert list(summary) == ["decoupled", "understanding-only"]
    mean, sd = summary["decoupled"]["understanding_accuracy"]
    assert math.isclose(mean, 0.7) and math.isclose(sd, math.sqrt(((0.8 - 0.7) ** 2 + (0.6 - 0.7) ** 2) / 1))
    assert summary["understanding-only"]["generation_accuracy"] is None
    assert summary["understanding-only"]["seconds"] == (62.0, math.sqrt(8.0))


def test_markdown_table_on_fixed_numbers():
    tokenizers = {"seed0/semantic-tokenizer": TokenizerQuality(24.456, 0.8125)}
    assert markdown_table(RESULTS, tokenizers) == (
        "| arm | understanding accuracy | generation accuracy | two-object accuracy | wall time (s) |\n"
        "|---|---|---|---|---|\n"
        "| decoupled | 0.700 ± 0.141 | 0.600 ± 0.141 | 0.300 ± 0.141 | 105 ± 7 |\n"
        "| understanding-only | 0.800 ± 0.141 | — | — | 62 ± 3 |\n"
        "\nSeeds: 0, 1 (mean ± sd).\n"
        "\n| tokenizer run | PSNR (dB) | codebook usage |\n|---|---|---|\n"
        "| seed0/semantic-tokenizer | 24.46 | 0.812 |\n"
    )
    one_seed = markdown_table(RESULTS[:2])
    assert "| decoupled | 0.800 | 0.500 | 0.200 | 100 |" in one_seed and one_seed.endswith("Seeds: 0.\n")


def test_write_table_writes_markdown_and_png(tmp_path):
    write_table(RESULTS, tmp_path / "ablation.md", tmp_path / "ablation.png")
    assert (tmp_path / "ablation.md").read_text() == markdown_table(RESULTS)
    with Image.open(tmp_path / "ablation.png") as image:
        assert image.format == "PNG" and image.width > 200
