"""Run every benchmark (`make bench`); each prints ratios against a reference measured in the same run."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCHMARKS = ["decoding.py", "generation.py", "training.py", "data.py"]

if __name__ == "__main__":
    for name in BENCHMARKS:
        print(f"== {name}")
        sys.argv = [name]
        runpy.run_path(str(Path(__file__).parent / name), run_name="__main__")
