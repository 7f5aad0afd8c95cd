"""Every error a user can cause is a `ModalCoreError` with an actionable message.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ModalCoreError(Exception):
    """Base class of all user-facing errors of modal-core."""


class RecipeError(ModalCoreError):
    """A recipe file or override is missing, malformed, or does not match the schema."""


class PluginError(ModalCoreError):
    """A plugin failed to load or returned something that breaks the plugin contract."""


class DataError(ModalCoreError):
    """A data file or sample is missing, corrupt, or of the wrong kind."""


class CheckpointError(ModalCoreError):
    """A checkpoint is missing, truncated, foreign, or does not fit the model."""


class ModelInputError(ModalCoreError):
    """Inputs given to the model do not fit (shapes, placeholder counts, ranges)."""


class ServeError(ModalCoreError):
    """`modal-core serve` cannot start or take a request: a missing extra, a bad limit, a busy port, a full queue."""


class EvaluationError(ModalCoreError):
    """An evaluation cannot run: unknown suite, missing benchmark data, a results folder
    written by another run."""


class StorageError(ModalCoreError):
    """A file could not be written whole (the disk filled); nothing partial was left."""
