"""`modal-core convert --from hf-janus|official-janus` and `modal-core export --to hf-janus`:
bring Janus checkpoints in and back out from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from modal_core.plugins import PluginManager

# This module sits outside the `janus` package, whose converters import transformers'
# Janus classes: they are imported when a command runs, so starting the CLI stays fast.


def add_janus_commands(subparsers: Any) -> None:
    """Register the `convert` and `export` sub-commands."""
    convert = subparsers.add_parser("convert", help="turn a Janus checkpoint (transformers or official layout) into a modal-core one")
    convert.add_argument("source", help="local folder of the Janus checkpoint")
    convert.add_argument("--from", dest="source_format", required=True, choices=["hf-janus", "official-janus"], help="layout of SOURCE")
    convert.add_argument("--to", required=True, help="modal-core checkpoint folder to write")
    convert.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="cast the weights (default: keep)")
    convert.set_defaults(handler=run_convert)
    export = subparsers.add_parser(
        "export", help="write a modal-core Janus checkpoint as a transformers JanusForConditionalGeneration folder"
    )
    export.add_argument("checkpoint", help="checkpoint directory (or a run directory: its last checkpoint)")
    export.add_argument("out", help="folder to write")
    export.add_argument("--to", default="hf-janus", choices=["hf-janus"], help="target layout (default hf-janus)")
    export.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    export.set_defaults(handler=run_export)


def run_convert(args: argparse.Namespace, plugins: PluginManager) -> int:
    """`modal-core convert`: write the modal-core checkpoint and say where."""
    from modal_core_images.janus import from_hf_janus, from_official_janus

    convert = from_hf_janus if args.source_format == "hf-janus" else from_official_janus
    print(f"done: checkpoint {convert(args.source, args.to, dtype=args.dtype, plugins=plugins)}")
    return 0


def run_export(args: argparse.Namespace, plugins: PluginManager) -> int:
    """`modal-core export`: write the transformers folder and say where."""
    from modal_core_images.janus import to_hf_janus

    print(f"done: {to_hf_janus(args.checkpoint, args.out, max_shard_size=args.max_shard_size, plugins=plugins)}")
    return 0
