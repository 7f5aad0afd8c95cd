"""Load, inherit, override and validate recipes.

Every layer (each recipe file in the `base` chain, then the command-line overrides) is
validated on its own against the schema, so an error names the file or override that
caused it. Nothing here builds a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from modal_core.config.schema import Recipe, check_values
from modal_core.errors import RecipeError
from modal_core.plugins import PluginManager


def load_recipe(
    path: str | Path,
    overrides: list[str] | None = None,
    plugins: PluginManager | None = None,
) -> DictConfig:
    """Load a recipe file with its bases and `key=value` overrides, and validate it.

    When `plugins` is given, each `modalities.<name>` block is also validated against
    that modality's options schema.
    """
    layers = _file_layers(Path(path), seen=())
    overrides = list(overrides or [])
    # `data.sources.0.options.path=X` indexes into a list: it is applied to the merged
    # recipe in place (a dotlist layer would turn the list into a mapping).
    indexed = [item for item in overrides if _indexes_a_list(item)]
    plain = [item for item in overrides if item not in indexed]
    if plain:
        layers.append(("command-line overrides", _parse_overrides(plain)))
    merged = OmegaConf.structured(Recipe)
    for source, layer in layers:
        merged = _merge(merged, layer, source)
    for item in indexed:
        _update_list_item(merged, item)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise RecipeError(f"{path}: required key(s) {', '.join(missing)} have no value; set them in the recipe or as key=value")
    try:
        check_values(merged)
    except RecipeError as error:
        raise RecipeError(f"{path}: {error}") from None
    if plugins is not None:
        validate_modalities(merged, plugins, source=str(path))
    OmegaConf.set_readonly(merged, True)
    return merged


def _file_layers(path: Path, seen: tuple[Path, ...]) -> list[tuple[str, DictConfig]]:
    """The recipe at `path` preceded by its bases, depth first."""
    resolved = path.resolve()
    if resolved in seen:
        raise RecipeError(f"{path}: recipe inheritance loops back to itself via {' -> '.join(map(str, seen))}")
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise RecipeError(f"{path}: not a text file (a recipe is UTF-8 YAML; {error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}")
    bases = raw.get("base") or []
    layers: list[tuple[str, DictConfig]] = []
    for base in [bases] if isinstance(bases, str) else bases:
        layers += _file_layers(path.parent / base, seen + (resolved,))
    raw.pop("base", None)
    layers.append((str(path), OmegaConf.create(raw)))
    return layers


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise RecipeError(f"command-line overrides {overrides}: not a valid `key=value` ({' '.join(str(error).split())})") from error


def _indexes_a_list(item: str) -> bool:
    key = item.split("=", 1)[0]
    return any(part.isdigit() for part in key.split("."))


def _update_list_item(recipe: DictConfig, item: str) -> None:
    """Apply one `key=value` override whose key indexes into a list (`a.0.b=...`)."""
    _parse_overrides([item])  # the same form and value checks as other overrides
    key, text = item.split("=", 1)
    head = key.split(".")
    index_at = next(i for i, part in enumerate(head) if part.isdigit())
    container = OmegaConf.select(recipe, ".".join(head[:index_at]))
    if not OmegaConf.is_list(container) or not int(head[index_at]) < len(container):
        size = len(container) if OmegaConf.is_list(container) else None
        raise RecipeError(
            f"command-line overrides: {key}: {'.'.join(head[:index_at])} "
            + (f"has {size} item(s), so index {head[index_at]} does not exist" if size is not None else "is not a list")
        )
    try:
        OmegaConf.update(recipe, key, yaml.safe_load(text) if text else "", merge=True)
    except OmegaConfBaseException as error:
        raise RecipeError(f"command-line overrides: {_describe(error)}") from error


def _merge(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as error:
        raise RecipeError(f"{source}: {_describe(error)}") from error


def _describe(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    message = str(error).splitlines()[0]
    if "Key '" in message and "not in" in message:
        return f"unknown key '{key}' (check the spelling against the recipe reference in docs/recipes.md)"
    return f"key '{key}': {message}" if key else message


def validate_modalities(recipe: DictConfig, plugins: PluginManager, source: str) -> None:
    """Check each `modalities.<name>` block against its plugin's options dataclass."""
    for name, options in recipe.modalities.items():
        spec = plugins.modalities().get(name)
        if spec is None:
            installed = ", ".join(sorted(plugins.modalities())) or "none"
            raise RecipeError(f"{source}: modalities.{name}: no installed plugin provides modality {name!r} (installed: {installed})")
        try:
            OmegaConf.merge(OmegaConf.structured(spec.options), options or {})
        except OmegaConfBaseException as error:
            raise RecipeError(f"{source}: modalities.{name}: {_describe(error)}") from error


def modality_options(recipe: DictConfig, plugins: PluginManager, name: str) -> Any:
    """The validated options dataclass instance of modality `name`."""
    spec = plugins.modality(name)
    options = recipe.modalities.get(name)
    # Resolved here: a block's interpolations (`${modalities.other.key}`) name keys of the whole recipe.
    resolved = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    merged = OmegaConf.merge(OmegaConf.structured(spec.options), resolved)
    return OmegaConf.to_object(merged)


def to_yaml(recipe: DictConfig) -> str:
    """The fully resolved recipe as YAML, as saved next to every checkpoint."""
    return OmegaConf.to_yaml(recipe, resolve=True)


def recipe_to_dict(recipe: DictConfig) -> dict[str, Any]:
    """Plain-Python copy of a recipe."""
    return OmegaConf.to_container(recipe, resolve=True)  # type: ignore[return-value]
