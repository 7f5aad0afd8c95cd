"""A compiled CPU kernel for linear layers over the few rows of a decode step.

`kernels/skinny_linear.c` (AVX2 + FMA, OpenMP) reads each weight row once and
multiplies it by up to eight input rows kept in L1; on our 2-core AMD EPYC it streams
float32 weights at 18-28 GB/s for 1-8 rows, where MKL's `sgemm` reaches 11-20 GB/s (see
`docs/generation-speed.md`). It is built on first use with the machine's C compiler
(`$CC`, else `cc`, `gcc` or `clang`) into a cache directory (`$MODAL_CORE_KERNEL_CACHE`,
else `~/.cache/modal-core/kernels`), one file per source and flags, written atomically,
and loaded with `ctypes`. Where it cannot be (no x86-64 AVX2 CPU, no compiler, a failed
build, or `MODAL_CORE_NATIVE_KERNELS=0`) `native_linear_kernel()` returns None with the
reason logged once, and callers keep their own path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "kernels" / "skinny_linear.c"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
COMPILERS = ("cc", "gcc", "clang")
DISABLE_VARIABLE = "MODAL_CORE_NATIVE_KERNELS"
CACHE_VARIABLE = "MODAL_CORE_KERNEL_CACHE"

LinearKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class KernelBuildError(RuntimeError):
    """The C compiler could not build a kernel."""


def kernel_cache_dir() -> Path:
    """Where built kernels are kept: `$MODAL_CORE_KERNEL_CACHE`, else `~/.cache/modal-core/kernels`."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modal-core" / "kernels"


def find_compiler() -> str | None:
    """`$CC` if set, else the first of `cc`, `gcc`, `clang` on the PATH."""
    if os.environ.get("CC"):
        return os.environ["CC"]
    return next((found for name in COMPILERS if (found := shutil.which(name))), None)


def build_kernel(source: Path, compiler: str, cache_dir: Path) -> Path:
    """Compile `source` into a shared library under `cache_dir`, named by a hash of the
    source, compiler and flags, unless it is there already; returns its path."""
    digest = hashlib.sha256(source.read_bytes() + compiler.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    library = cache_dir / f"{source.stem}-{digest}.so"
    if library.exists():
        return library
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        unfinished = Path(scratch) / library.name
        result = subprocess.run([compiler, *FLAGS, "-o", str(unfinished), str(source)], capture_output=True, text=True)
        if result.returncode != 0:
            raise KernelBuildError(f"{compiler} could not build {source.name} (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
        os.replace(unfinished, library)  # atomic: a concurrent build or reader sees all or nothing
    return library


def _unavailable_reason() -> str | None:
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return f"{DISABLE_VARIABLE}=0"
    if platform.machine().lower() not in ("x86_64", "amd64") or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"the CPU ({platform.machine()}, torch capability {torch.backends.cpu.get_cpu_capability()}) lacks AVX2"
    if find_compiler() is None:
        return f"no C compiler found (set $CC or install one of {', '.join(COMPILERS)})"
    return None


def _load() -> Callable[..., None] | None:
    reason = _unavailable_reason()
    if reason is None:
        try:
            library = ctypes.CDLL(str(build_kernel(SOURCE, find_compiler(), kernel_cache_dir())))
        except (KernelBuildError, OSError) as error:
            reason = str(error)
    if reason is not None:
        log.warning("modal-core's native CPU linear kernel is not used (%s); decoding falls back to MKL products", reason)
        return None
    function = library.skinny_linear_f32
    function.restype = None
    pointer, length = ctypes.c_void_p, ctypes.c_long
    function.argtypes = [pointer, length, length, pointer, length, length, pointer, pointer, ctypes.c_int]
    return function


def _run_kernel(function: Callable[..., None], inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # Lean on purpose: it runs once per linear layer per token (~5 us here against ~15 with reshapes).
    if not inputs.is_contiguous():
        inputs = inputs.contiguous()
    out_features, in_features = weight.shape
    out = inputs.new_empty((*inputs.shape[:-1], out_features))
    rows = out.numel() // out_features if out_features else 0
    if rows:
        bias_pointer = None if bias is None else bias.data_ptr()
        threads = torch.get_num_threads()
        function(inputs.data_ptr(), rows, in_features, weight.data_ptr(), out_features, in_features, bias_pointer, out.data_ptr(), threads)
    return out


@cache
def native_linear_kernel() -> LinearKernel | None:
    """`kernel(inputs, weight, bias)` = `F.linear` for float32 CPU tensors, `weight`
    (out, in) and `bias` contiguous; None where the kernel cannot be built here (the
    reason logged). Built or found once per process."""
    function = _load()
    if function is None:
        return None
    return partial(_run_kernel, function)
