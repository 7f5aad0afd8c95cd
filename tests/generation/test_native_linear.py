"""The native CPU linear kernel: built with the machine's compiler, cached, equal to
`F.linear` for every row count and odd sizes, reachable from compiled code, and
replaced by MKL products (with the reason logged) where it cannot be built."""

from __future__ import annotations

import logging
import platform

import pytest
import torch
from torch import nn

from modal_core.generation import native_linear
from modal_core.generation.native_linear import KernelBuildError, build_kernel, find_compiler, native_linear_kernel
from modal_core.generation.skinny_linear import skinny_linear

BUILDABLE = (
    platform.machine().lower() in ("x86_64", "amd64")
    and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    and find_compiler() is not None
)


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """`native_linear_kernel` forgets what it found, builds into `tmp_path`, and forgets again after."""
    monkeypatch.setenv(native_linear.CACHE_VARIABLE, str(tmp_path))
    native_linear_kernel.cache_clear()
    yield tmp_path
    native_linear_kernel.cache_clear()


@pytest.mark.skipif(not BUILDABLE, reason="needs an x86-64 AVX2 CPU and a C compiler")
def test_kernel_builds_once_into_the_cache(fresh_kernel):
    assert native_linear_kernel() is not None
    (library,) = fresh_kernel.glob("*.so")
    built_at = library.stat().st_mtime_ns
    assert list(fresh_kernel.iterdir()) == [library]  # no scratch files left behind
    assert build_kernel(native_linear.SOURCE, find_compiler(), fresh_kernel) == library
    assert library.stat().st_mtime_ns == built_at  # found, not rebuilt


@pytest.mark.skipif(not BUILDABLE, reason="needs an x86-64 AVX2 CPU and a C compiler")
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


@pytest.mark.skipif(not BUILDABLE, reason="needs an x86-64 AVX2 CPU and a C compiler")
def test_kernel_takes_strided_inputs_and_empty_reductions():
    kernel = native_linear_kernel()
    generator = torch.Generator().manual_seed(3)
    weight, offset = torch.randn(24, 40, generator=generator), torch.randn(24, generator=generator)
    wide = torch.randn(5, 80, generator=generator)
    torch.testing.assert_close(kernel(wide[:, ::2], weight, offset), nn.functional.linear(wide[:, ::2], weight, offset))
    nothing = torch.zeros(3, 0)
    torch.testing.assert_close(kernel(nothing, torch.zeros(6, 0), offset[:6]), offset[:6].expand(3, 6))


@pytest.mark.skipif(not BUILDABLE, reason="needs an x86-64 AVX2 CPU and a C compiler")
def test_compiled_code_calls_the_kernel_operator():
    generator = torch.Generator().manual_seed(4)
    weight, offset = torch.randn(96, 64, generator=generator), torch.randn(96, generator=generator)
    inputs = torch.randn(4, 64, generator=generator)
    compiled = torch.compile(lambda rows: torch.relu(skinny_linear(rows, weight, offset)), fullgraph=True)
    torch.testing.assert_close(compiled(inputs), torch.relu(nn.functional.linear(inputs, weight, offset)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.ops.modal_core.skinny_linear(inputs, weight, None), inputs @ weight.T, rtol=1e-5, atol=1e-5)


def test_a_failed_build_names_the_source_and_falls_back(fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.raises(KernelBuildError, match="false could not build skinny_linear.c"):
        build_kernel(native_linear.SOURCE, "false", fresh_kernel)
    if BUILDABLE:  # elsewhere the CPU check already refuses the kernel
        with caplog.at_level(logging.WARNING, logger=native_linear.__name__):
            assert native_linear_kernel() is None
        assert "could not build skinny_linear.c" in caplog.text and "falls back to MKL" in caplog.text
    assert list(fresh_kernel.iterdir()) == []  # nothing half-written kept
    generator = torch.Generator().manual_seed(5)
    weight, inputs = torch.randn(32, 16, generator=generator), torch.randn(2, 16, generator=generator)
    torch.testing.assert_close(skinny_linear(inputs, weight, None), inputs @ weight.T)  # the MKL path


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
