"""The `prepare` command of the `modal-core` CLI."""

from __future__ import annotations

import argparse

from modal_core import arguments
from modal_core.plugins import PluginManager


def _prepare(args: argparse.Namespace, plugins: PluginManager) -> int:
    from modal_core import recipes
    from modal_core.config.loader import load_recipe, to_yaml
    from modal_core.preparation.run import PREPARED_RECIPE, prepare, prepared_recipe

    recipe = load_recipe(recipes.find(args.recipe), args.overrides, plugins)
    results = prepare(
        recipe,
        plugins,
        args.output,
        modalities=args.modalities,
        split=args.split,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        device=args.device,
        features_dtype=args.features_dtype,
        overwrite=args.overwrite,
    )
    prepared = prepared_recipe(recipe, results)
    target = args.output / PREPARED_RECIPE
    target.write_text(to_yaml(prepared))
    for result in results:
        where = result.folder if result.folder is not None else "nothing to encode; left as it is"
        bad = f", {result.bad_samples} bad" if result.bad_samples else ""
        samples = "streamed" if result.samples is None else f"{result.samples} samples"
        print(f"data.sources[{result.index}] {result.dataset}: {samples}{bad} -> {where}")
    print(f"train on the prepared data: modal-core train {target}")
    return 0


def add_prepare_command(commands) -> None:
    """Register `prepare` on the CLI's sub-parsers."""
    parser = commands.add_parser(
        "prepare", help="encode a recipe's data once (VQ codes, frozen-encoder features) into shards training reads back"
    )
    parser.add_argument("recipe", help="recipe YAML file or shipped recipe name; its init_from checkpoint holds the encoders")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--output", type=arguments.output_folder, required=True, help="folder to write the prepared sources into")
    parser.add_argument(
        "--modalities", nargs="+", default=[], metavar="NAME", help="modalities to encode (default: the recipe's output modalities)"
    )
    parser.add_argument("--split", default="train", help="data split to prepare (default: train)")
    parser.add_argument("--shard-size", type=arguments.positive_int, default=1000, help="samples per shard (default: 1000)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=16, help="items encoded at once (default: 16)")
    parser.add_argument("--device", type=arguments.device, default="cpu", help="device to encode on (default: cpu)")
    parser.add_argument(
        "--features-dtype", choices=("float16", "float32"), default="float32", help="dtype of cached input features (default: float32)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a folder prepared differently before")
    parser.set_defaults(handler=_prepare)
