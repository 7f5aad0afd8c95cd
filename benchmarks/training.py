"""The training loop's overhead: `modal-core train` (Lightning, our collator and task
mix, callbacks, progress bar) against a minimal hand-written PyTorch loop on the same
model, the same batches and the same optimizer, measured in the same run.

Both start from the same seed, so they build the same weights and read the same batches;
their losses are compared as a check that they do the same work. The plain loop gets
its batches collated in advance (its time is the model's and the optimizer's alone);
`modal-core train` runs as a user runs it, with the recipe's own data loading, logging
and progress bar. Steady state only: the clock runs from the end of the `--warmup`-th
optimizer step to the end of the last one, for both. The two alternate, `--repeats`
times, and the medians are printed: tokens/s of both, their ratio, and MFU from
`modal_core.scale.throughput.FlopsModel` against a peak: `--peak-tflops`, else this CPU's
dense float32 matrix-product rate measured in the same run. Both loops run on the CPU
(the quickstart recipes' `trainer.accelerator: cpu`).

    python benchmarks/training.py [--models text stage2] [--steps 40] [--warmup 5] [--repeats 3] [--threads 1 --clock cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from modal_core.assemble import assemble, prepare_tokenizer
from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.data.datamodule import MixtureDataModule
from modal_core.data.text_tokenizer import save_tokenizer
from modal_core.plugins import PluginManager, get_plugin_manager
from modal_core.recipes import find
from modal_core.scale.throughput import FlopsModel
from modal_core.training import run
from modal_core.training.schedule import configure_adamw

MODELS = {
    "text": ("quickstart/text", []),
    # Random weights are as fast as trained ones: no stage-1 checkpoint or VQ tokenizer needed.
    "stage2": ("quickstart/stage2", ["init_from=null", "modalities.vq_generation.tokenizer_path=null"]),
}
"""Benchmark name -> (shipped recipe, overrides that let it start from nothing)."""


@dataclass
class Measurement:
    """One loop's steady-state window."""

    tokens: int
    flops: float
    seconds: float
    losses: dict[int, float]
    """Loss by optimizer step (the plain loop: every step; `modal-core train`: the steps its history logs)."""

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""`cpu`: this process's CPU seconds, which other programs on a shared machine barely
move; a fair clock with `--threads 1` and `data.num_workers=0`, where nothing waits."""


class WindowClock(L.Callback):
    """Counts the tokens and FLOPs of the optimizer steps after `warmup` and times them,
    from the end of step `warmup` to the end of the last step (added last, so every
    other callback's per-step work is inside the window)."""

    def __init__(self, warmup: int, clock: Callable[[], float]) -> None:
        self.warmup, self.clock = warmup, clock
        self.tokens, self.model_flops = 0, 0.0
        self.start = self.end = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.flops = FlopsModel.of(pl_module.model)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step > self.warmup:
            self.tokens += batch.num_tokens
            self.model_flops += self.flops.batch_flops(batch.num_tokens, batch.input_ids.shape[1])
        self.end = self.clock()
        if trainer.global_step == self.warmup:
            self.start = self.end


def measure_modal_core_train(recipe: DictConfig, plugins: PluginManager, warmup: int, clock: Callable[[], float]) -> Measurement:
    """`modal_core.train` as `modal-core train` calls it, with a `WindowClock` added to its trainer."""
    window = WindowClock(warmup, clock)
    build_trainer = run._trainer

    def trainer_with_clock(*args, **kwargs) -> L.Trainer:
        trainer = build_trainer(*args, **kwargs)
        trainer.callbacks.append(window)
        return trainer

    run._trainer = trainer_with_clock
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            result = run.train(recipe, plugins)
    finally:
        run._trainer = build_trainer
    losses = {record["step"]: record["train/loss"] for record in read_history(result.history) if "train/loss" in record}
    return Measurement(window.tokens, window.model_flops, window.end - window.start, losses)


def measure_plain_loop(recipe: DictConfig, plugins: PluginManager, warmup: int, clock: Callable[[], float]) -> Measurement:
    """The same model, batches and AdamW in a minimal loop: forward, backward, gradient
    clipping, step, schedule step, zero_grad."""
    if str(recipe.trainer.precision) not in ("32", "32-true") or recipe.trainer.accumulate_grad_batches != 1:
        raise SystemExit("the plain loop runs float32 without gradient accumulation: use trainer.precision=32-true, accumulate 1")
    # As `modal_core.train` does, in the same order: seed, tokenizer, model, data.
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    assembled = assemble(recipe, plugins, prepare_tokenizer(recipe, plugins))
    model = assembled.model
    model.set_trainable(list(recipe.train))
    model.train()
    outputs = frozenset(name for name, runtime in assembled.modalities.items() if runtime.spec.direction == "output")
    mixture = run.build_mixture(recipe, plugins, outputs, "train", recipe.seed)
    loader = MixtureDataModule(mixture, assembled.collator, batch_size=recipe.data.batch_size).train_dataloader()
    steps = recipe.trainer.max_steps
    batches = [batch for batch, _ in zip(loader, range(steps))]
    configured = configure_adamw(model.trainable_parameters(), steps, **dict(recipe.optim))
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    flops_model, clip = FlopsModel.of(model), recipe.trainer.gradient_clip_val
    tokens, model_flops, losses, start = 0, 0.0, {}, 0.0
    for step, batch in enumerate(batches, start=1):
        loss = model(**batch.model_inputs()).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses[step] = loss.item()
        if step > warmup:
            tokens += batch.num_tokens
            model_flops += flops_model.batch_flops(batch.num_tokens, batch.input_ids.shape[1])
        if step == warmup:
            start = clock()
    return Measurement(tokens, model_flops, clock() - start, losses)


def matmul_flops_per_sec(clock: Callable[[], float], seconds: float = 1.0, size: int = 1024) -> float:
    """Dense float32 matrix products per second on this CPU, measured now: the peak MFU is taken against here."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, start = 0, clock()
    while clock() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (clock() - start)


def benchmark(name: str, steps: int, warmup: int, repeats: int, peak: float | None, clock: str, extra: list[str]) -> None:
    plugins = get_plugin_manager()
    recipe_name, overrides = MODELS[name]
    with tempfile.TemporaryDirectory() as root:
        settings = [*overrides, f"output_dir={root}/run", "overwrite=true", f"trainer.max_steps={steps + warmup}"]
        settings += ["trainer.checkpoint_every_n_steps=0", "data.val_samples=0", *extra]
        recipe = load_recipe(find(recipe_name), settings, plugins)
        # The tokenizer is trained once, outside both loops' set-up.
        save_tokenizer(prepare_tokenizer(recipe, plugins), Path(root) / "tokenizer")
        recipe = load_recipe(find(recipe_name), [*settings, f"tokenizer.path={root}/tokenizer"], plugins)
        ours, plain = [], []
        for repeat in range(repeats):  # A B B A A B ...: neither always runs first
            order = [measure_modal_core_train, measure_plain_loop][:: 1 if repeat % 2 == 0 else -1]
            for measure in order:
                (ours if measure is measure_modal_core_train else plain).append(measure(recipe, plugins, warmup, CLOCKS[clock]))
    logged = set(ours[0].losses) & set(plain[0].losses)
    loss_gap = max(abs(ours[0].losses[step] - plain[0].losses[step]) for step in logged) if logged else float("nan")
    ratios = [a.tokens_per_sec / b.tokens_per_sec for a, b in zip(ours, plain)]
    print(f"{name} ({recipe_name}): {steps} steps after {warmup} warm-up steps, {repeats} repeats, {clock} clock, medians")
    for label, runs in (("modal-core train", ours), ("plain PyTorch loop", plain)):
        tokens_per_sec = statistics.median(r.tokens_per_sec for r in runs)
        mfu = statistics.median(r.flops / r.seconds / peak for r in runs) if peak else None
        spread = ", ".join(f"{r.tokens_per_sec:,.0f}" for r in runs)
        print(f"  {label:20s} {tokens_per_sec:10,.0f} tokens/s" + (f"  MFU {mfu:6.1%}" if mfu else "") + f"   (runs: {spread})")
    print(f"  ratio modal-core / plain: {statistics.median(ratios):.3f}   (pairs: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"  largest loss difference at the {len(logged)} logged steps: {loss_gap:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS, reverse=True))
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="what a second is (cpu: this process's CPU time)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own choice); 1 is steadier on a shared machine")
    parser.add_argument("overrides", nargs="*", help="recipe key=value overrides for both loops (e.g. data.batch_size=16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None:
        peak = matmul_flops_per_sec(CLOCKS[args.clock])
        print(
            f"peak for MFU: {peak / 1e9:.1f} GFLOP/s, this CPU's float32 matrix products measured now ({torch.get_num_threads()} threads)"
        )
    for name in args.models:
        benchmark(name, args.steps, args.warmup, args.repeats, peak, args.clock, args.overrides)


if __name__ == "__main__":
    main()
