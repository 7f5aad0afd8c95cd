"""The recipes modal-core ships, and finding a recipe by path or by shipped name.

The YAML files in this folder are package data, so an installed wheel has them too; in a
source checkout the top-level `recipes/` is a link to this folder. A shipped recipe is
named by its path under this folder, with or without `.yaml`: `quickstart/text`.

    find("quickstart/text")             # the shipped recipe
    find("recipes/quickstart/text.yaml")  # the same, also where no such file is (a wheel)
    find("my/recipe.yaml")              # a file of yours, as given
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import yaml

from modal_core.errors import RecipeError

SUFFIX = ".yaml"
CHECKOUT_PREFIX = "recipes/"
"""How the docs write a shipped recipe's path in a source checkout."""


def shipped_dir() -> Path:
    """The folder of the shipped recipes."""
    # pip unpacks wheels, so the package is a plain folder and its resource root a Path.
    return Path(str(resources.files(__name__)))


def names(root: Path | None = None) -> list[str]:
    """Every recipe under `root` (default: the shipped ones) as `folder/name.yaml`, sorted."""
    root = shipped_dir() if root is None else Path(root)
    return sorted(path.relative_to(root).as_posix() for path in root.rglob(f"*{SUFFIX}"))


class RecipeEntry(NamedTuple):
    """One recipe file of a listing: its name, its one-line description, and what is
    wrong with it when it cannot be read (else None)."""

    name: str
    description: str
    problem: str | None = None


def describe(root: Path | None = None) -> list[RecipeEntry]:
    """Every recipe under `root` (default: the shipped ones); a file that is not a YAML
    mapping is listed with its problem instead of stopping the listing."""
    root = shipped_dir() if root is None else Path(root)
    listing = []
    for name in names(root):
        try:
            recipe = yaml.safe_load((root / name).read_text(encoding="utf-8-sig")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            listing.append(RecipeEntry(name, "", f"not valid YAML ({' '.join(str(error).split())})"))
            continue
        if not isinstance(recipe, dict):
            listing.append(RecipeEntry(name, "", f"a recipe must be a mapping of keys, got {type(recipe).__name__}"))
            continue
        listing.append(RecipeEntry(name, str(recipe.get("description", ""))))
    return listing


def find(name_or_path: str | Path) -> Path:
    """The recipe file for a path or a shipped recipe's name.

    An existing file is returned as given. Otherwise `name_or_path` is read as a shipped
    name (`quickstart/text`, `quickstart/text.yaml`, or `recipes/quickstart/text.yaml` as
    the docs write it). Raises `RecipeError` naming the closest shipped recipes when
    neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.as_posix().removeprefix(CHECKOUT_PREFIX)
    name = name if name.endswith(SUFFIX) else name + SUFFIX
    shipped = shipped_dir() / name
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name, names(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(n.removesuffix(SUFFIX) for n in close)}?" if close else ""
    raise RecipeError(
        f"recipe file not found: {name_or_path} is neither a file nor a shipped recipe{hint} (`modal-core recipes` lists the shipped ones)"
    )
