"""FSDP2 on CPU: 2 processes (gloo), launched by Lightning as `modal-core train`
launches them, checked against one process reading the same global batch.

One launch trains its runs in turn (starting processes is the slow part): `fsdp`
(text, sharded checkpoints at steps 2 and 4), `resumed` (continues `fsdp` from step 2),
`stage1` (images, only adapters, heads and LoRA factors train, full checkpoints),
`stage1_resumed` (continues `stage1` from its full step-1 checkpoint), `stage2` (an
understanding, generation and text mix: the ranks' batches hold different modalities;
`stage2_ddp` the same under DDP),
`plan` (one step of a larger model) and two steps each of the other `fsdp_sharding`
modes, of activation checkpointing and of `bf16-mixed`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_BACKBONE, tiny_image_recipe, tiny_text_recipe, with_image_plugins, write_recipe
from safetensors.torch import load_file
from test_image_plugins import TINY_IMAGES

from modal_core.checkpoints import store
from modal_core.checkpoints.run_folder import read_history
from modal_core.cli import main
from modal_core.config.loader import load_recipe
from modal_core.data.shapes_text import text_corpus
from modal_core.data.text_tokenizer import save_tokenizer, train_tokenizer
from modal_core.generation.pipeline import load
from modal_core.scale.plan import plan
from modal_core.scale.sharded import is_sharded_checkpoint
from modal_core.training.run import train

STEPS = 4
GLOBAL_BATCH = 8
WORKER = Path(__file__).with_name("fsdp_worker.py")


def launch(out_dir: Path, recipes: list[Path], timeout: int = 600) -> float:
    """Train `recipes` in turn on 2 CPU processes; returns the seconds it took."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(WORKER), str(out_dir), *map(str, recipes)],
        cwd=out_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    (out_dir / "worker.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"see {out_dir / 'worker.log'}\n" + done.stderr[-3000:]
    return time.perf_counter() - start


def _text(root: Path, name: str, tokenizer_dir: Path, **trainer) -> dict:
    recipe = tiny_text_recipe(
        root / name,
        tokenizer={"path": str(tokenizer_dir)},
        optim={"lr": 1e-2, "warmup_steps": 0},
        # Clipping at 0.1 acts in every step (see the norms checked in the parity test).
        trainer={"max_steps": STEPS, "log_every_n_steps": 1, "gradient_clip_val": 0.1, **trainer},
    )
    # Samples of varied length: the ranks' halves hold different numbers of supervised tokens.
    recipe["data"] = {**recipe["data"], "batch_size": GLOBAL_BATCH // trainer.get("devices", 1), "max_length": 64}
    return recipe


def _losses(history: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_history(history) if "train/loss" in r}


FSDP = {"devices": 2, "strategy": "fsdp", "fsdp_state_dict": "sharded", "checkpoint_every_n_steps": 2, "keep_last": -1}


PLAN_SIZE = {"hidden": 256, "layers": 4, "ffn": 688}
"""About 3.3 M parameters: the suite's size. At `hidden=768, layers=14, ffn=2048` (99 M) the
same check held too (see docs/multi-gpu.md), but takes minutes on two shared cores."""


def plan_recipe(root: Path, hidden: int, layers: int, ffn: int) -> dict:
    """One FSDP step of a random text model of the given size on 2 processes."""
    config = {**TINY_BACKBONE["config"], "hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": ffn}
    recipe = _text(root, "plan", root / "tokenizer", devices=2, strategy="fsdp", fsdp_state_dict="sharded", max_steps=1)
    recipe["backbone"] = {**TINY_BACKBONE, "config": config}
    recipe["data"] = {**recipe["data"], "batch_size": 1, "max_length": 64}
    return recipe


def stage2_recipe(root: Path, name: str, **trainer) -> dict:
    """Janus stage 2 in small: understanding, generation and text sources in one mixture;
    the backbone, adapters, heads and the understanding encoder train."""
    recipe = tiny_image_recipe(root / name)
    recipe["data"]["sources"].append({"dataset": "shapes_text", "options": {"num_sentences": 200}})
    recipe["data"]["batch_size"] = STAGE2_BATCH // trainer.get("devices", 1)
    recipe["train"] = ["backbone", "adapters", "heads", "encoders.image_understanding"]
    recipe["optim"] = {"lr": 1e-2, "warmup_steps": 0}
    recipe["trainer"] = {**recipe["trainer"], "max_steps": STAGE2_STEPS, **trainer}
    return recipe


STAGE2_BATCH, STAGE2_STEPS = 4, 3
"""With seed 0 the ranks' halves of these global batches hold different modalities (checked by the test)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    tokenizer_dir = root / "tokenizer"
    save_tokenizer(train_tokenizer(text_corpus(500, 0), 300, []), tokenizer_dir)
    fsdp = _text(root, "fsdp", tokenizer_dir, **FSDP)
    resumed = {**_text(root, "resumed", tokenizer_dir, **FSDP), "resume": str(root / "fsdp" / "checkpoints" / "step-000002")}
    stage1 = tiny_image_recipe(root / "stage1")
    # Every sample holds an image: under FSDP each rank must run the same modules every step.
    stage1.update(modalities={"image_understanding": TINY_IMAGES["image_understanding"]}, train=["adapters", "heads"], lora={"rank": 4})
    stage1["data"]["sources"] = stage1["data"]["sources"][:1]
    stage1["trainer"] = {**stage1["trainer"], "devices": 2, "strategy": "fsdp", "checkpoint_every_n_steps": 1, "keep_last": -1}
    stage1_resumed = {**stage1, "output_dir": str(root / "stage1_resumed"), "resume": str(root / "stage1" / "checkpoints" / "step-000001")}
    named = {"fsdp": fsdp, "resumed": resumed, "stage1": stage1, "stage1_resumed": stage1_resumed, "plan": plan_recipe(root, **PLAN_SIZE)}
    named["stage2"] = stage2_recipe(root, "stage2", devices=2, strategy="fsdp")
    named["stage2_ddp"] = stage2_recipe(root, "stage2_ddp", devices=2, strategy="ddp")  # static DDP needs every parameter used too
    two_steps = {"devices": 2, "strategy": "fsdp", "max_steps": 2}
    for sharding in ("SHARD_GRAD_OP", "NO_SHARD"):  # the other meshes and resharding
        named[sharding] = _text(root, sharding, tokenizer_dir, fsdp_sharding=sharding, **two_steps)
    named["checkpointed"] = _text(root, "checkpointed", tokenizer_dir, activation_checkpointing=True, **two_steps)
    named["bf16"] = _text(root, "bf16", tokenizer_dir, precision="bf16-mixed", **two_steps)
    recipes = [write_recipe(root / f"{name}.yaml", recipe) for name, recipe in named.items()]
    seconds = launch(root, recipes)
    print(f"2-process FSDP launch: {seconds:.1f} s")
    return root


def test_fsdp_matches_one_process_with_the_same_global_batch(runs, tmp_path, plugins):
    tokenizer_dir = runs / "tokenizer"
    single = train(load_recipe(write_recipe(tmp_path / "single.yaml", _text(tmp_path, "single", tokenizer_dir)), plugins=plugins), plugins)
    records = [json.loads((runs / "fsdp" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(record["sharded"] for record in records)
    assert records[0]["units"] == ["FSDPLlamaDecoderLayer", "FSDPUnifiedModel"]  # one unit per block, the rest in the root
    # Clipping sees the norm over both ranks' shards: afterwards it is the limit itself, on both ranks.
    norms = records[0]["gradient_norms"]
    assert norms == records[1]["gradient_norms"] and len(norms) == STEPS
    assert all(before > 0.1 and after == pytest.approx(0.1, rel=1e-4) for before, after in norms), norms

    single_losses, fsdp_losses = _losses(single.history), _losses(runs / "fsdp" / "history.jsonl")
    assert sorted(fsdp_losses) == sorted(single_losses) == list(range(1, STEPS + 1))
    for step in single_losses:
        assert fsdp_losses[step] == pytest.approx(single_losses[step], rel=2e-4), (step, fsdp_losses, single_losses)
    assert single_losses[STEPS] < single_losses[1]  # it trained
    first_two = {step: fsdp_losses[step] for step in (1, 2)}
    for variant in ("SHARD_GRAD_OP", "NO_SHARD", "checkpointed"):
        assert _losses(runs / variant / "history.jsonl") == pytest.approx(first_two, rel=1e-5), variant
    bf16 = _losses(runs / "bf16" / "history.jsonl")
    assert bf16 == pytest.approx(first_two, rel=2e-2) and bf16 != pytest.approx(first_two, rel=1e-5)  # bfloat16 computed it
    gathered, single_weights = load_file(str(runs / "fsdp" / "full.safetensors")), store.load_model_state(single.checkpoint)
    assert gathered.keys() == single_weights.keys()
    for key in gathered:
        torch.testing.assert_close(gathered[key], single_weights[key], rtol=0, atol=2e-4)


def test_sharded_resume_continues_exactly_and_exports_to_one_checkpoint(runs, tmp_path, plugins):
    final = runs / "fsdp" / "checkpoints" / "step-000004"
    assert is_sharded_checkpoint(final) and len(list(final.glob("*.distcp"))) == 2  # one shard file per rank
    uninterrupted, resumed = _losses(runs / "fsdp" / "history.jsonl"), _losses(runs / "resumed" / "history.jsonl")
    assert sorted(resumed) == [3, 4] and all(resumed[step] == uninterrupted[step] for step in resumed), (resumed, uninterrupted)
    expected, continued = load_file(str(runs / "fsdp" / "full.safetensors")), load_file(str(runs / "resumed" / "full.safetensors"))
    assert all(torch.equal(continued[key], expected[key]) for key in expected)

    assert main(["export-checkpoint", str(final), str(tmp_path / "export")], plugins) == 0
    exported = load(tmp_path / "export", plugins=plugins)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        logits = exported.model.backbone(input_ids=ids).logits
        exported.model.load_state_dict(expected)  # the weights the ranks held, gathered
        assert torch.equal(exported.model.backbone(input_ids=ids).logits, logits)


def test_stage1_lora_under_fsdp_trains_only_its_groups_resumes_from_full_checkpoints_and_loads(runs, plugins):
    units = json.loads((runs / "stage1" / "rank0.json").read_text())["units"]
    assert units == ["FSDPLlamaDecoderLayer", "FSDPSiglipEncoderLayer", "FSDPUnifiedModel"]  # the plugin's declared block too
    initial, final = load_file(str(runs / "stage1" / "initial.safetensors")), load_file(str(runs / "stage1" / "full.safetensors"))
    assert initial.keys() == final.keys()
    trained = {key for key in final if key.startswith(("adapters.", "heads.")) or key.endswith((".lora_a", ".lora_b"))}
    assert any(key.startswith("adapters.") for key in trained) and any(key.endswith(".lora_b") for key in trained)
    assert any(key.startswith("encoders.") for key in final)
    for key in final:
        changed = not torch.equal(final[key], initial[key])
        assert changed == (key in trained), (key, changed)  # frozen: bit for bit; trainable: moved

    full = runs / "stage1" / "checkpoints" / "step-000002"
    assert not is_sharded_checkpoint(full)
    continued = load_file(str(runs / "stage1_resumed" / "full.safetensors"))
    assert all(torch.equal(continued[key], final[key]) for key in final)
    assert _losses(runs / "stage1_resumed" / "history.jsonl") == {2: _losses(runs / "stage1" / "history.jsonl")[2]}

    loaded = load(full, plugins=with_image_plugins(plugins))
    saved = loaded.model.state_dict()
    assert all(torch.equal(saved[key], final[key]) for key in final)


def test_ranks_whose_batches_hold_different_modalities_match_one_process(runs, tmp_path, plugins):
    records = [json.loads((runs / "stage2" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    steps = list(zip(records[0]["modalities"], records[1]["modalities"]))
    assert len(steps) == STAGE2_STEPS and any(mine != theirs for mine, theirs in steps), steps  # e.g. images on one rank only
    image_plugins = with_image_plugins(plugins)
    single = train(
        load_recipe(write_recipe(tmp_path / "single.yaml", stage2_recipe(tmp_path, "single")), plugins=image_plugins), image_plugins
    )

    single_losses, fsdp_losses = _losses(single.history), _losses(runs / "stage2" / "history.jsonl")
    assert sorted(fsdp_losses) == sorted(single_losses) == list(range(1, STAGE2_STEPS + 1))
    for step in single_losses:
        assert fsdp_losses[step] == pytest.approx(single_losses[step], rel=2e-4), (step, fsdp_losses, single_losses)
    assert _losses(runs / "stage2_ddp" / "history.jsonl") == pytest.approx(single_losses, rel=2e-4)
    gathered, single_weights = load_file(str(runs / "stage2" / "full.safetensors")), store.load_model_state(single.checkpoint)
    initial = load_file(str(runs / "stage2" / "initial.safetensors"))
    assert gathered.keys() == single_weights.keys()
    for key in gathered:
        torch.testing.assert_close(gathered[key], single_weights[key], rtol=0, atol=2e-4)
    moved = {key.split(".")[0] + "." + key.split(".")[1] for key in gathered if not torch.equal(gathered[key], initial[key])}
    assert {"encoders.image_understanding", "adapters.image_understanding", "adapters.vq_generation", "heads.vq_generation"} <= moved


def test_planned_bytes_per_rank_match_the_local_shards(runs, plugins):
    parts = plan(load_recipe(runs / "plan.yaml", plugins=plugins), plugins).memory.parts
    planned = {"parameters": parts["weights"], "gradients": parts["gradients"], "optimizer": parts["optimizer (AdamW)"]}
    for rank in (0, 1):
        held = json.loads((runs / "plan" / f"rank{rank}.json").read_text())
        for kind, value in planned.items():
            assert held[kind] == pytest.approx(value, rel=0.10), (rank, kind, held[kind], value)
