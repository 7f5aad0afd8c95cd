"""Memory of `init_from` on a converted Janus: the lean start-up (meta-device build,
tensors adopted one at a time) against building a random model and loading a state
dict into it (the way start-up worked before, two copies at the peak).

Each start-up runs in a fresh process; the numbers reported are its peak resident
memory (`VmHWM`, reset through /proc/self/clear_refs right before) minus its resident
memory just before, in units of the checkpoint's file size: right after start-up, and
after every weight has been read once. Linux only.

    python benchmarks/init_from_memory.py [--size small]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = {"lean": "assemble(init_from=) (meta device + assign)", "copy": "assemble + load_state_dict"}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(checkpoint: Path, mode: str) -> tuple[float, float]:
    """Peak extra resident MiB of one start-up in this process: right after it, and
    after every weight has been read once."""
    from modal_core.assemble import assemble, prepare_tokenizer
    from modal_core.checkpoints import store
    from modal_core.config.loader import load_recipe
    from modal_core.plugins import get_plugin_manager

    plugins = get_plugin_manager()
    recipe = load_recipe(checkpoint / store.RECIPE_FILE, [f"init_from={checkpoint}"], plugins)
    tokenizer = prepare_tokenizer(recipe, plugins, checkpoint)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kib("VmRSS")
    if mode == "lean":
        model = assemble(recipe, plugins, tokenizer, init_from=checkpoint).model
    else:
        model = assemble(recipe, plugins, tokenizer).model
        store.load_into(model, checkpoint, partial=True)
    started = (_status_kib("VmHWM") - before) / 1024
    # safetensors maps the file: adopted tensors become resident when first read.
    total = sum(float(p.float().sum()) for p in model.parameters())
    assert total == total  # finite: every weight was read
    return started, (_status_kib("VmHWM") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", help="a size of benchmarks/janus_models.py")
    parser.add_argument("--measure", nargs=2, metavar=("CHECKPOINT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from janus_models import janus_pair

    with tempfile.TemporaryDirectory() as root:
        janus_pair(args.size, Path(root))
        checkpoint = Path(root) / "modal"
        size_mib = (checkpoint / "model.safetensors").stat().st_size / 2**20
        print(f"checkpoint: {size_mib:.0f} MiB ({args.size})")
        for mode, label in MODES.items():
            run = subprocess.run([sys.executable, __file__, "--measure", str(checkpoint), mode], capture_output=True, text=True, check=True)
            started, read = json.loads(run.stdout.strip().splitlines()[-1])
            print(
                f"{label:46s} peak +{started:5.0f} MiB = {started / size_mib:.2f} x checkpoint after start-up, "
                f"+{read:5.0f} MiB = {read / size_mib:.2f} x once every weight was read"
            )


if __name__ == "__main__":
    main()
