"""The `modal-core` command line. Plugins add sub-commands through `modal_core_commands`."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from modal_core import __version__, arguments, recipes
from modal_core.disk import written_whole
from modal_core.errors import ModalCoreError, ModelInputError
from modal_core.evaluation.command import add_eval_command
from modal_core.generation.cli_options import add_compile_argument, add_decoding_argument
from modal_core.generation.settings import GUIDANCE_SCHEDULES
from modal_core.plugins import PluginManager, get_plugin_manager
from modal_core.preparation.command import add_prepare_command
from modal_core.scaffold import add_new_plugin_command
from modal_core.scale.commands import add_scale_commands
from modal_core.serve.command import add_serve_command

EXIT_INTERRUPTED = 143
"""Exit code of a run stopped by SIGTERM or Ctrl+C after saving a resumable checkpoint."""


def _train(args: argparse.Namespace, plugins: PluginManager) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from modal_core.training.api import train

    try:
        result = train(args.recipe, args.overrides, plugins)
    except SIGTERMException:
        return EXIT_INTERRUPTED  # the checkpoint callback saved and said where
    print(f"done: checkpoint {result.checkpoint}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    root = Path(args.dir) if args.dir else recipes.shipped_dir()
    listing = recipes.describe(root)
    if not listing:
        print(f"no recipes under {root}")
        return 1
    width = max(len(entry.name) for entry in listing)
    for entry in listing:
        if entry.problem is None:
            print(f"{entry.name:<{width}}  {entry.description}")
    broken = [entry for entry in listing if entry.problem is not None]
    for entry in broken:
        print(f"error: {root / entry.name}: {entry.problem}", file=sys.stderr)
    return 1 if broken else 0


def _plugins(args: argparse.Namespace, plugins: PluginManager) -> int:
    for info in plugins.describe():
        print(f"{info.name}  ({info.distribution} {info.version})")
        for kind in ("modalities", "datasets", "evaluators", "rewards", "commands", "block_classes"):
            items = getattr(info, kind)
            if items:
                print(f"    {kind.replace('_', ' ')}: {', '.join(items)}")
    for failure in plugins.failures:
        print(f"BROKEN {failure}")
    return 1 if plugins.failures else 0


def _generate(args: argparse.Namespace, plugins: PluginManager) -> int:
    from modal_core.generation.pipeline import Pipeline

    pipeline = Pipeline.load(args.checkpoint, plugins=plugins, device=args.device, compile_mode=args.compile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = pipeline.generate(
        args.prompt,
        n=args.n,
        cfg=args.cfg,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        decoding=args.decoding,
        cfg_schedule=args.cfg_schedule,
        cfg_plausibility=args.cfg_plausibility,
    )
    for p, (prompt, items) in enumerate(zip(args.prompt, outputs)):
        for i, item in enumerate(items):
            path = out / f"prompt{p:02d}_{i:03d}.png"
            with written_whole(path):
                item.save(path)
            print(f"{path}\t{prompt}")
    return 0


def _understand(args: argparse.Namespace, plugins: PluginManager) -> int:
    from modal_core.generation.pipeline import Pipeline

    pipeline = Pipeline.load(args.checkpoint, plugins=plugins, device=args.device, compile_mode=args.compile)
    given = {spec.name: (spec.cli_flag, getattr(args, f"media_{spec.cli_flag}", None)) for spec in _input_specs(plugins)}
    media = {name: value for name, (flag, value) in given.items() if value is not None}
    unusable = [f"--{given[name][0]}" for name in media if name not in pipeline.modalities]
    if unusable:
        takes = [f"--{runtime.spec.cli_flag} ({name})" for name, runtime in pipeline.modalities.items() if runtime.spec.cli_flag]
        raise ModelInputError(f"{', '.join(unusable)}: this checkpoint has no such input; it takes {', '.join(takes) or 'text only'}")
    print(pipeline.answer(args.question, media=media, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed))
    for name, layout in pipeline.input_layouts(media).items():  # stderr: stdout stays the answer alone
        print(f"{name}: {layout}", file=sys.stderr)
    return 0


def _input_specs(plugins: PluginManager) -> list:
    """The installed input modalities that take a file on the command line."""
    return [spec for spec in plugins.modalities().values() if spec.direction == "input" and spec.cli_flag]


def _add_inference_commands(commands, plugins: PluginManager) -> None:
    generate = commands.add_parser("generate", help="draw images (or other outputs) for text prompts")
    generate.add_argument("checkpoint", help="checkpoint directory (or a run directory: its last checkpoint)")
    generate.add_argument("--prompt", action="append", required=True, type=arguments.text, help="a prompt; repeat for several")
    generate.add_argument("--n", type=int, default=4, help="outputs per prompt, drawn in one batch (default 4)")
    defaults = "default: the checkpoint's, from its recipe's generation: section"
    generate.add_argument("--cfg", type=float, help=f"classifier-free guidance scale ({defaults}; Janus: 5)")
    generate.add_argument(
        "--cfg-schedule",
        choices=GUIDANCE_SCHEDULES,
        help=f"constant, or linear: from no guidance at the first code to --cfg at the last ({defaults})",
    )
    generate.add_argument(
        "--cfg-plausibility",
        type=float,
        help=f"a in (0, 1]: draw only codes at least a times as probable as the likeliest under the prompt; 0 = off ({defaults})",
    )
    generate.add_argument("--temperature", type=float, help=f"sampling temperature, 0 = greedy ({defaults}; Janus: 1)")
    generate.add_argument("--top-k", type=int, help=f"sample among the k most likely codes; 0 = all ({defaults})")
    generate.add_argument("--top-p", type=float, help=f"nucleus sampling mass; 1 = all ({defaults})")
    generate.add_argument("--seed", type=arguments.seed, default=0, help="random seed (default 0)")
    generate.add_argument("--out", type=arguments.output_folder, default="generated", help="output folder for PNGs (default: generated)")
    generate.add_argument("--device", type=arguments.device, default="cpu", help="torch device (default cpu)")
    add_compile_argument(generate)
    add_decoding_argument(generate)
    generate.set_defaults(handler=_generate)

    understand = commands.add_parser("understand", help="answer a question about an image (or another input)")
    understand.add_argument("checkpoint", help="checkpoint directory (or a run directory: its last checkpoint)")
    understand.add_argument("--question", required=True, type=arguments.text, help="the question")
    inputs = understand.add_argument_group(
        "inputs", "one flag per installed input modality; a checkpoint takes those of the modalities it was trained with"
    )
    for spec in _input_specs(plugins):
        inputs.add_argument(f"--{spec.cli_flag}", dest=f"media_{spec.cli_flag}", help=f"a file for modality {spec.name} (plugin flag)")
    understand.add_argument("--max-new-tokens", type=int, default=32, help="longest answer in tokens (default 32)")
    understand.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    understand.add_argument("--seed", type=arguments.seed, default=0, help="random seed (default 0)")
    understand.add_argument("--device", type=arguments.device, default="cpu", help="torch device (default cpu)")
    add_compile_argument(understand)
    understand.set_defaults(handler=_understand)


def build_parser(plugins: PluginManager) -> argparse.ArgumentParser:
    """The full parser: built-in commands plus every plugin's."""
    parser = argparse.ArgumentParser(prog="modal-core", description="Train and run unified multimodal models.")
    parser.add_argument("--version", action="version", version=f"modal-core {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train from a recipe: modal-core train RECIPE key=value ...")
    train.add_argument("recipe", help="recipe YAML file, or a shipped recipe's name such as quickstart/text (see `modal-core recipes`)")
    train.add_argument("overrides", nargs="*", help="key=value overrides (e.g. trainer.max_steps=10)")
    train.set_defaults(handler=_train)

    recipe_list = commands.add_parser("recipes", help="list the shipped recipes")
    recipe_list.add_argument("--dir", default=None, help="recipe folder (default: the shipped recipes)")
    recipe_list.set_defaults(handler=_recipes)

    listing = commands.add_parser("plugins", help="list installed plugins and what they contribute")
    listing.set_defaults(handler=_plugins)

    _add_inference_commands(commands, plugins)
    add_scale_commands(commands)
    add_prepare_command(commands)
    add_serve_command(commands)
    add_new_plugin_command(commands)
    add_eval_command(commands)
    plugins.add_commands(commands)
    for command in commands.choices.values():  # `--debug` also after the command's name
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks for errors")
    return parser


def main(argv: Sequence[str] | None = None, plugins: PluginManager | None = None) -> int:
    """Run the CLI; user errors print one clear line (a traceback with --debug)."""
    plugins = plugins or get_plugin_manager()
    parser = build_parser(plugins)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        code = args.handler(args, plugins) if _takes_plugins(args.handler) else args.handler(args)
    except ModalCoreError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 1
    return int(code or 0)


def _takes_plugins(handler) -> bool:
    return handler.__code__.co_argcount >= 2
