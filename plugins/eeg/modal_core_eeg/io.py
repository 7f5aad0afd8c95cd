"""Reading EEG recordings with mne: FIF, EDF/BDF, BrainVision and EEGLAB files.

mne is imported lazily (it is slow to import) and its log level is set to `warning`, so
reading a file prints nothing unless something is wrong.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from modal_core.errors import DataError

READERS = {
    ".fif": "FIF (mne)",
    ".edf": "EDF",
    ".bdf": "BDF",
    ".vhdr": "BrainVision header",
    ".set": "EEGLAB",
}
"""File suffixes the plugin reads (a `.fif.gz` counts as `.fif`), each through `mne.io.read_raw`."""


def import_mne() -> ModuleType:
    """mne, imported on first use and made quiet (log level `warning`)."""
    import mne

    mne.set_log_level("WARNING")
    return mne


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    return ".fif" if suffixes[-2:] == [".fif", ".gz"] else path.suffix.lower()


def read_recording(path: str | Path) -> Any:
    """The recording at `path` as a preloaded `mne.io.Raw`.

    Raises `DataError` naming the file when it is missing, of an unknown kind, or
    unreadable (truncated, wrong format inside)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"EEG file not found: {path}")
    suffix = _suffix(path)
    if suffix not in READERS:
        kinds = ", ".join(f"{s} ({k})" for s, k in READERS.items())
        raise DataError(f"{path}: unknown EEG file type {suffix or '(no suffix)'!r}; readable: {kinds}")
    mne = import_mne()
    try:
        with warnings.catch_warnings():
            # Readers warn about harmless header details (e.g. EDF physical range rounding).
            warnings.simplefilter("ignore", RuntimeWarning)
            return mne.io.read_raw(path, preload=True, verbose="error")
    except Exception as error:  # mne raises many types for corrupt files; all mean "unreadable"
        raise DataError(f"{path}: cannot read this {READERS[suffix]} file ({type(error).__name__}: {error})") from error
