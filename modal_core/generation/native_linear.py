"""A compiled CPU kernel for linear layers over the few rows of a decode step.

`kernels/skinny_linear.cpp` (AVX2 + FMA, OpenMP) reads each weight row once and
multiplies it by up to eight input rows kept in L1; on our 2-core AMD EPYC it streams
float32 weights at 18-28 GB/s for 1-8 rows, where MKL's `sgemm` reaches 11-20 GB/s (see
`docs/generation-speed.md`). It registers the operator
`torch.ops.modal_core_native.skinny_linear` (`TORCH_LIBRARY`) and is built on first use
by `torch.utils.cpp_extension.load` (ninja and the C++ compiler, `$CXX` else `c++`) into
a folder of the cache directory (`$MODAL_CORE_KERNEL_CACHE`, else
`~/.cache/modal-core/kernels`), where later processes find it. Where it cannot be (no
x86-64 AVX2 CPU, no compiler, no ninja, a failed build, or `MODAL_CORE_NATIVE_KERNELS=0`)
`native_linear_kernel()` returns None with the reason logged once, and callers keep
their own path. Only decoding imports this module; training never builds or loads it.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "kernels" / "skinny_linear.cpp"
EXTENSION = "modal_core_skinny_linear"
"""The library's name; `torch.utils.cpp_extension` builds `EXTENSION.so`."""
CFLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp")
LDFLAGS = ("-fopenmp",)
DISABLE_VARIABLE = "MODAL_CORE_NATIVE_KERNELS"
CACHE_VARIABLE = "MODAL_CORE_KERNEL_CACHE"

LinearKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class KernelBuildError(RuntimeError):
    """torch's extension builder could not build or load a kernel."""


def kernel_cache_dir() -> Path:
    """Where built kernels are kept: `$MODAL_CORE_KERNEL_CACHE`, else `~/.cache/modal-core/kernels`."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modal-core" / "kernels"


def build_directory(cache_dir: Path) -> Path:
    """The kernel's build folder under `cache_dir`, one per torch version (its headers and ABI)."""
    return cache_dir / f"{EXTENSION}-torch{torch.__version__}"


def find_compiler() -> str | None:
    """The C++ compiler torch's extension builder runs (`$CXX`, else `c++`), if it is on the PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


def find_ninja() -> str | None:
    """The `ninja` torch's extension builder runs from the PATH. The `ninja` wheel
    (`pip install modal-core[native]`) puts its binary beside the environment's Python,
    which is not on the PATH unless the environment is activated: its folder is appended."""
    if found := shutil.which("ninja"):
        return found
    try:
        import ninja
    except ImportError:
        return None
    os.environ["PATH"] = os.pathsep.join(filter(None, (os.environ.get("PATH"), ninja.BIN_DIR)))
    return shutil.which("ninja")


def build_kernel(source: Path, cache_dir: Path) -> Path:
    """Build `source` with `torch.utils.cpp_extension.load` into `build_directory(cache_dir)`
    (ninja rebuilds only what changed: a second process finds it built) and load it into
    this process, which registers its operators; returns the library's path."""
    from torch.utils import cpp_extension  # imports setuptools: only where a kernel is built

    folder = build_directory(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        library = cpp_extension.load(
            EXTENSION, [str(source)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS), build_directory=str(folder),
            is_python_module=False,
        )  # fmt: skip
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        raise KernelBuildError(f"torch.utils.cpp_extension could not build {source.name}: {str(error).strip()[-2000:]}") from error
    return Path(library)


def _registered() -> bool:
    """Whether this process has loaded the kernel already (a library registers its operators once)."""
    return hasattr(torch.ops.modal_core_native, "skinny_linear")


def _unavailable_reason() -> str | None:
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return f"{DISABLE_VARIABLE}=0"
    if platform.machine().lower() not in ("x86_64", "amd64") or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"the CPU ({platform.machine()}, torch capability {torch.backends.cpu.get_cpu_capability()}) lacks AVX2"
    if _registered():
        return None
    if find_compiler() is None:
        return f"no C++ compiler {os.environ.get('CXX', 'c++')!r} on the PATH (install g++ or set $CXX)"
    if find_ninja() is None:
        return "ninja is not on the PATH (pip install 'modal-core[native]', or apt-get install ninja-build)"
    return None


@cache
def native_linear_kernel() -> LinearKernel | None:
    """`kernel(inputs, weight, bias)` = `F.linear` for float32 CPU tensors, `weight`
    (out, in) and `bias` contiguous: the operator `torch.ops.modal_core_native.skinny_linear`;
    None where the kernel cannot be built here (the reason logged). Built or found once
    per process."""
    reason = _unavailable_reason()
    if reason is None and not _registered():
        try:
            build_kernel(SOURCE, kernel_cache_dir())
        except KernelBuildError as error:
            reason = str(error)
    if reason is not None:
        log.warning("modal-core's native CPU linear kernel is not used (%s); decoding falls back to MKL products", reason)
        return None
    return torch.ops.modal_core_native.skinny_linear.default
