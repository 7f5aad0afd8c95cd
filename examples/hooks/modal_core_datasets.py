"""A data set a recipe names under `data.sources[*].dataset: greetings`."""

from modal_core import hookimpl
from modal_core.data.chat import plain_text

NAMES = ["Ada", "Grace", "Alan", "Edsger"]


def greetings(options: dict, seed: int, split: str):
    """Options: `repeat` (default 1). A list of `Sample`s is a valid data set."""
    return [plain_text(f"Hello, {name}!") for name in NAMES * int(options.get("repeat", 1))]


@hookimpl
def modal_core_datasets():
    return {"greetings": greetings}
