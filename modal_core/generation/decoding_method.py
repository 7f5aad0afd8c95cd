"""The `decoding` choice of an output modality (`ar`, `sjd[:L]`, `zipar[:w]`), parsed
without importing torch, for the command line, the server and the eval suites."""

from __future__ import annotations

from dataclasses import dataclass

from modal_core.errors import ModelInputError

DECODING_METHODS = ("ar", "sjd", "zipar")
DECODING_HELP = (
    "how codes are decoded: ar (one per forward pass, default), sjd[:L] (speculative Jacobi decoding, L draft codes per pass, "
    "default 16; the same distribution as ar), zipar[:w] (row r+1 starts when row r has w codes, default half a row; "
    "fewer passes, not lossless) (docs: generation speed)"
)
DECODING_PATTERN = r"^(ar|sjd(:[1-9][0-9]*)?|zipar(:[1-9][0-9]*)?)$"


@dataclass(frozen=True)
class DecodingMethod:
    """A parsed `decoding` choice: the method and its window (None: the method's default)."""

    method: str = "ar"
    window: int | None = None

    @classmethod
    def parse(cls, text: str) -> DecodingMethod:
        """`ar`, `sjd`, `sjd:L`, `zipar` or `zipar:w`; a clear error for anything else."""
        method, colon, window = str(text).partition(":")
        if method not in DECODING_METHODS:
            raise ModelInputError(
                f"decoding {text!r}: expected one of {', '.join(DECODING_METHODS)}, optionally with :WINDOW (e.g. sjd:16)"
            )
        if not colon:
            return cls(method)
        if method == "ar" or not window.isdigit() or int(window) < 1:
            raise ModelInputError(f"decoding {text!r}: 'ar' takes no window, and a window after ':' is a whole number >= 1")
        return cls(method, int(window))

    def __str__(self) -> str:
        return self.method if self.window is None else f"{self.method}:{self.window}"
