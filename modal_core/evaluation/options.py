"""Reading a suite's options and locating its benchmark files, with clear errors (for
the evaluators of the core and of plugins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modal_core.errors import DataError, EvaluationError


def int_option(options: dict[str, Any], key: str, default: int | None, minimum: int = 0) -> int | None:
    """`options[key]` as an int of at least `minimum` (None or absent: `default`)."""
    value = options.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError) as error:
        raise EvaluationError(f"option {key}: expected an integer, got {value!r}") from error
    if number < minimum:
        raise EvaluationError(f"option {key}: expected at least {minimum}, got {number}")
    return number


def float_option(options: dict[str, Any], key: str, default: float | None) -> float | None:
    """`options[key]` as a float (None or absent: `default`)."""
    value = options.get(key)
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise EvaluationError(f"option {key}: expected a number, got {value!r}") from error


def bool_option(options: dict[str, Any], key: str, default: bool) -> bool:
    """`options[key]` as a bool; accepts true/false, yes/no, 1/0 (None or absent: `default`)."""
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise EvaluationError(f"option {key}: expected true or false, got {value!r}")


def choice_option(options: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    """`options[key]`, one of `choices` (None or absent: the first choice)."""
    value = options.get(key)
    if value is None:
        return choices[0]
    if str(value) not in choices:
        raise EvaluationError(f"option {key}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def data_file(options: dict[str, Any], suite: str, default_name: str, what: str) -> Path:
    """The suite's data file: `options["data"]` itself, or `default_name` inside it when it
    is a folder. `what` describes the expected content for the error message."""
    data = options.get("data")
    if not data:
        raise EvaluationError(f"suite {suite} needs --data: {what} (or a folder holding {default_name})")
    path = Path(str(data)).expanduser()
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise DataError(f"suite {suite}: data file not found: {path} (expected {what})")
    return path


def limited(items: list, options: dict[str, Any]) -> list:
    """The first `limit` items (all without a limit)."""
    limit = int_option(options, "limit", None, minimum=1)
    return items if limit is None else items[:limit]
