"""Train a recipe with the built-in plugins and, on every rank, save the weights the
rank holds when training ends to `OUT/rank<r>.safetensors`.

Run as a script: Lightning's DDP launcher starts the other ranks by running this same
command line again, exactly as it does for `modal-core train`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from modal_core.config.loader import load_recipe
from modal_core.plugins import PluginManager
from modal_core.training import run
from modal_core.training.module import UnifiedTrainingModule


class WeightsDumpingModule(UnifiedTrainingModule):
    """The training module, plus a dump of this rank's weights after the last step."""

    out_dir: Path

    def on_train_end(self) -> None:
        state = {key: value.detach().clone().contiguous() for key, value in self.model.state_dict().items()}
        save_file(state, str(self.out_dir / f"rank{self.global_rank}.safetensors"))


def main(recipe_path: str, out_dir: str) -> None:
    WeightsDumpingModule.out_dir = Path(out_dir)
    run.UnifiedTrainingModule = WeightsDumpingModule  # the one class `train` instantiates
    plugins = PluginManager(load_entry_points=False)
    run.train(load_recipe(recipe_path, plugins=plugins), plugins)


if __name__ == "__main__":
    main(*sys.argv[1:3])
