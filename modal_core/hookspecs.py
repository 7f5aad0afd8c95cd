"""The plugin contract: every hook a plugin may implement.

A plugin is a module (or object) with functions decorated by `modal_core.hookimpl`, named
exactly like the specs below. Plugins may accept fewer arguments than a spec declares, so
hooks can grow new arguments without breaking old plugins. All hooks are called with
keyword arguments.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("modal_core")
hookimpl = pluggy.HookimplMarker("modal_core")


@hookspec
def modal_core_modalities() -> list[Any]:
    """Contribute modalities.

    Called once when the plugin manager first builds its modality registry.
    Return a list of `modal_core.ModalitySpec`; each `name` must be unique across all
    installed plugins.

    Example::

        @hookimpl
        def modal_core_modalities():
            return [ModalitySpec(name="audio", direction="input", ...)]
    """


@hookspec
def modal_core_datasets() -> dict[str, Any]:
    """Contribute data sets a recipe can name under `data.sources[*].dataset`.

    Called once when the dataset registry is built. Return a dict mapping a unique
    dataset name to a factory `factory(options: dict, seed: int, split: str) ->
    torch.utils.data.Dataset` whose items are `modal_core.Sample` objects, or, for
    data streamed from WebDataset tar shards, a
    `modal_core.data.streaming.ShardSource(path, make, name)` (`make` turns one shard
    record into a `Sample`).

    Example::

        @hookimpl
        def modal_core_datasets():
            return {"my_captions": lambda options, seed, split: MyCaptions(**options)}
    """


@hookspec
def modal_core_evaluators() -> dict[str, Any]:
    """Contribute evaluators that `modal-core eval --suite NAME` can run.

    Called once when the evaluator registry is built. Return a dict mapping a unique
    suite name to a callable `evaluate(pipeline, options: dict, out_dir: Path) -> dict`:
    `pipeline` is a loaded `modal_core.Pipeline` (`.answer(...)`, `.generate(...)`),
    `options` holds the suite's settings from the command line (e.g. `data`, `limit`,
    `seed`, `batch_size`), and files the evaluator writes (report pieces, images) go
    under `out_dir`. It returns JSON-serialisable metrics. `modal-core eval --list`
    describes a suite by the callable's `description` attribute if it has one, else by
    the first sentence of its docstring. Evaluators that score item by item can use
    `modal_core.evaluation.items.score_items` to be batched and resumable.

    Example::

        def evaluate_my_qa(pipeline, options, out_dir):
            return {"accuracy": 1.0}

        evaluate_my_qa.description = "Accuracy on my question set."

        @hookimpl
        def modal_core_evaluators():
            return {"my_qa": evaluate_my_qa}
    """


@hookspec
def modal_core_commands(subparsers: Any) -> None:
    """Add sub-commands to the `modal-core` command line.

    Called while the CLI parser is built. `subparsers` is the `argparse` sub-parser
    collection; add a parser with `subparsers.add_parser(name, help=...)` and set its
    handler with `parser.set_defaults(handler=function)`; the handler receives the
    parsed `argparse.Namespace` and returns an exit code (or None for 0).
    """


@hookspec
def modal_core_block_classes() -> list[Any]:
    """Declare the repeated blocks (transformer layers) of this plugin's encoders,
    adapters and heads.

    Called when training is set up. Return a list of `torch.nn.Module` subclasses.
    With `trainer.strategy: fsdp` every instance becomes its own FSDP unit (its weights
    are gathered one block at a time), and with `trainer.activation_checkpointing: true`
    its activations are recomputed in the backward pass instead of being stored. The
    backbone's decoder layers need no declaration: transformers marks them.

    Example::

        @hookimpl
        def modal_core_block_classes():
            return [SiglipEncoderLayer]
    """


@hookspec
def modal_core_rewards() -> dict[str, Any]:
    """Contribute reward functions that preference tuning (`preference.method: grpo` or
    `dpo`) can name under `preference.rewards[*].name`.

    Called once when the reward registry is built. Return a dict mapping a unique reward
    name to a factory `factory(options: dict, context) -> reward`: `options` are the
    recipe entry's `options`, `context` a `modal_core.preference.rewards.RewardContext`
    (the model being tuned, its collator, tokenizer and device). The reward is called
    on a whole batch, `reward(prompts, items, metadata)`: `prompts` the n prompt
    strings, `items` the n decoded outputs (PIL images for images), `metadata` n dicts
    (the data source of each prompt under `source`); it returns n float scores.

    Example::

        def make_brightness(options, context):
            return lambda prompts, images, metadata: [sum(im.convert("L").getdata()) / 255 for im in images]

        @hookimpl
        def modal_core_rewards():
            return {"brightness": make_brightness}
    """
