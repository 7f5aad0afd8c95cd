"""The native CPU linear kernel: built by `torch.utils.cpp_extension` into the kernel
cache, found there by later processes, equal to `F.linear` for every row count and odd
sizes, reachable from compiled code, and replaced by MKL products (with the reason
logged) where it cannot be built or is switched off.

A process loads the kernel's library once (its `TORCH_LIBRARY` registers the operators
for the whole process), so what happens in a process that has not loaded it yet runs in
a fresh Python."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

from modal_core.generation import native_linear
from modal_core.generation.native_linear import (
    EXTENSION,
    KernelBuildError,
    build_directory,
    build_kernel,
    kernel_cache_dir,
    native_linear_kernel,
)
from modal_core.generation.skinny_linear import skinny_linear

BUILDABLE = (
    platform.machine().lower() in ("x86_64", "amd64")
    and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    and native_linear.find_compiler() is not None
    and native_linear.find_ninja() is not None
)
needs_build = pytest.mark.skipif(not BUILDABLE, reason="needs an x86-64 AVX2 CPU, a C++ compiler and ninja")

FRESH_PROCESS = """
from modal_core.generation.native_linear import native_linear_kernel
kernel = native_linear_kernel()
print("kernel" if kernel is not None else "none")
"""


def _fresh_process(**env: str) -> subprocess.CompletedProcess:
    """`native_linear_kernel()` in a new Python with `env` added to this one's environment."""
    return subprocess.run([sys.executable, "-c", FRESH_PROCESS], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """`native_linear_kernel` forgets what it found, uses `tmp_path` as the cache, and forgets again after."""
    monkeypatch.setenv(native_linear.CACHE_VARIABLE, str(tmp_path))
    native_linear_kernel.cache_clear()
    yield tmp_path
    native_linear_kernel.cache_clear()


@needs_build
def test_kernel_builds_once_into_the_cache():
    assert native_linear_kernel() is not None
    library = build_directory(kernel_cache_dir()) / f"{EXTENSION}.so"
    assert library.is_file()
    built_at = library.stat().st_mtime_ns
    found = _fresh_process()
    assert found.returncode == 0 and found.stdout.strip() == "kernel", found.stderr
    assert library.stat().st_mtime_ns == built_at  # found by the second process, not rebuilt


@needs_build
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 8, 9, 16, 17])
@pytest.mark.parametrize(("out_features", "in_features"), [(80, 48), (37, 515), (1, 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_equals_f_linear(rows, out_features, in_features, bias):
    kernel = native_linear_kernel()
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(out_features, in_features, generator=generator)
    offset = torch.randn(out_features, generator=generator) if bias else None
    inputs = torch.randn(rows, 1, in_features, generator=generator)
    expected = nn.functional.linear(inputs, weight, offset)
    result = kernel(inputs, weight, offset)
    assert result.shape == expected.shape == (rows, 1, out_features)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-4)
    assert expected.abs().max() > 1  # the values are not all near zero: the comparison can fail


@needs_build
def test_kernel_takes_strided_inputs_and_empty_reductions():
    kernel = native_linear_kernel()
    generator = torch.Generator().manual_seed(3)
    weight, offset = torch.randn(24, 40, generator=generator), torch.randn(24, generator=generator)
    wide = torch.randn(5, 80, generator=generator)
    torch.testing.assert_close(kernel(wide[:, ::2], weight, offset), nn.functional.linear(wide[:, ::2], weight, offset))
    nothing = torch.zeros(3, 0)
    torch.testing.assert_close(kernel(nothing, torch.zeros(6, 0), offset[:6]), offset[:6].expand(3, 6))


@needs_build
def test_kernel_refuses_what_it_cannot_compute():
    kernel = native_linear_kernel()
    with pytest.raises(RuntimeError, match="float32 tensors only"):
        kernel(torch.randn(2, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64), None)
    with pytest.raises(RuntimeError, match="weight must be a contiguous"):
        kernel(torch.randn(2, 8), torch.randn(8, 4).t(), None)
    with pytest.raises(RuntimeError, match=r"inputs \(\.\.\., 8\) expected"):
        kernel(torch.randn(2, 5), torch.randn(4, 8), None)


@needs_build
def test_compiled_code_calls_the_kernel_operator():
    generator = torch.Generator().manual_seed(4)
    weight, offset = torch.randn(96, 64, generator=generator), torch.randn(96, generator=generator)
    inputs = torch.randn(4, 64, generator=generator)
    compiled = torch.compile(lambda rows: torch.relu(skinny_linear(rows, weight, offset)), fullgraph=True)
    torch.testing.assert_close(compiled(inputs), torch.relu(nn.functional.linear(inputs, weight, offset)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.ops.modal_core.skinny_linear(inputs, weight, None), inputs @ weight.T, rtol=1e-5, atol=1e-5)


@needs_build
def test_a_failed_build_names_the_source_and_falls_back(fresh_kernel, monkeypatch):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.raises(KernelBuildError, match="could not build skinny_linear.cpp"):
        build_kernel(native_linear.SOURCE, fresh_kernel)
    assert not list(fresh_kernel.rglob("*.so"))  # no library half-written
    fallback = _fresh_process(CXX="false", **{native_linear.CACHE_VARIABLE: str(fresh_kernel / "other")})
    assert fallback.returncode == 0 and fallback.stdout.strip() == "none", fallback.stderr
    assert "could not build skinny_linear.cpp" in fallback.stderr and "falls back to MKL" in fallback.stderr
    generator = torch.Generator().manual_seed(5)
    weight, inputs = torch.randn(32, 16, generator=generator), torch.randn(2, 16, generator=generator)
    torch.testing.assert_close(skinny_linear(inputs, weight, None), inputs @ weight.T)


def test_a_missing_compiler_is_named(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setattr(native_linear, "_registered", lambda: False)  # as in a process that has not loaded it
    monkeypatch.setattr(native_linear.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(native_linear.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setenv("CXX", str(fresh_kernel / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger=native_linear.__name__):
        assert native_linear_kernel() is None
    assert "no C++ compiler" in caplog.text and "no-such-compiler" in caplog.text and "falls back to MKL" in caplog.text
    assert list(fresh_kernel.iterdir()) == []


def test_the_kernel_can_be_switched_off(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv(native_linear.DISABLE_VARIABLE, "0")
    with caplog.at_level(logging.WARNING, logger=native_linear.__name__):
        assert native_linear_kernel() is None
    assert f"{native_linear.DISABLE_VARIABLE}=0" in caplog.text
    assert list(fresh_kernel.iterdir()) == []


def test_float64_inputs_keep_the_mkl_path():
    generator = torch.Generator().manual_seed(6)
    weight = torch.randn(32, 16, generator=generator, dtype=torch.float64)
    inputs = torch.randn(2, 16, generator=generator, dtype=torch.float64)
    result = torch.ops.modal_core.skinny_linear(inputs, weight, None)
    assert result.dtype == torch.float64
    torch.testing.assert_close(result, inputs @ weight.T)


def test_training_imports_no_kernel():
    kernel_modules = "'modal_core.generation.native_linear', 'modal_core.generation.skinny_linear', 'torch.utils.cpp_extension'"
    code = f"import sys, modal_core.training.run; print([m for m in ({kernel_modules}) if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr
