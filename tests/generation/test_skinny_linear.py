"""`skinny_linear` (the native kernel, or MKL's `(W @ x.T).T` in `transposed_linear`)
computes `F.linear`; `SkinnyLinears` routes a model's linear layers through it only where
it applies, and gives the layers back after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modal_core.generation import skinny_linear as skinny_module
from modal_core.generation.skinny_linear import MAX_SKINNY_ROWS, MIN_SKINNY_WEIGHT, SkinnyLinears, skinny_linear, transposed_linear


@pytest.mark.parametrize("shape", [(2, 48), (3, 1, 48), (1, 48), (2, 4, 48)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("linear", [skinny_linear, transposed_linear])
def test_skinny_linear_equals_f_linear(shape, bias, linear):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(80, 48, generator=generator)
    offset = torch.randn(80, generator=generator) if bias else None
    inputs = torch.randn(*shape, generator=generator)
    expected = nn.functional.linear(inputs, weight, offset)
    result = linear(inputs, weight, offset)
    assert result.shape == expected.shape == (*shape[:-1], 80)
    assert result.is_contiguous()
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().max() > 1  # the values are not all near zero: the comparison can fail


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(256, 384), nn.Linear(384, 256, bias=False)
        self.small = nn.Linear(256, 8)  # too small to gain: left alone
        self.hooked = nn.Linear(8, 8)
        self.hooked.forward = lambda inputs: inputs * 2  # a forward of its own: left alone

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.hooked(self.small(self.second(torch.relu(self.first(inputs)))))


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def counting(inputs, weight, bias):
        calls.append(tuple(weight.shape))
        return skinny_linear(inputs, weight, bias)

    monkeypatch.setattr(skinny_module, "skinny_linear", counting)
    return calls


def test_active_routes_few_rows_without_gradients(counted):
    net = _Net()
    inputs = torch.randn(3, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(inputs)
        with SkinnyLinears(net).active():
            result = net(inputs)
    assert counted == [(384, 256), (256, 384)]  # the large plain layers only
    assert net.small.weight.numel() < MIN_SKINNY_WEIGHT <= net.second.weight.numel()
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    assert "forward" not in net.first.__dict__ and "forward" not in net.second.__dict__  # given back
    assert "forward" in net.hooked.__dict__


def test_active_keeps_f_linear_for_gradients_and_many_rows(counted):
    net = _Net()
    skinny = SkinnyLinears(net)
    with skinny.active():
        net(torch.randn(2, 256)).sum().backward()  # gradients on: F.linear, and they flow
        with torch.no_grad():
            net(torch.randn(MAX_SKINNY_ROWS + 1, 256))  # a prefill's many rows: F.linear
            net(torch.randn(2, 256))
    double = _Net().double()
    with SkinnyLinears(double).active(), torch.no_grad():
        double(torch.randn(2, 256, dtype=torch.float64))  # float64: F.linear
    assert net.first.weight.grad is not None and net.first.weight.grad.abs().sum() > 0
    assert counted == [(384, 256), (256, 384)]  # only the last call: few rows, no gradients, float32


def test_active_contexts_overlap_until_the_last_closes(counted):
    net = _Net()
    skinny = SkinnyLinears(net)
    inputs = torch.randn(2, 256)
    first, second = skinny.active(), skinny.active()  # two decodes with one engine (two threads, say)
    with torch.no_grad():
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)  # the first decode ends while the second goes on
        net(inputs)
        assert "forward" in net.first.__dict__
        second.__exit__(None, None, None)
        net(inputs)
    assert counted == [(384, 256), (256, 384)]  # routed until the last close, F.linear after
    assert "forward" not in net.first.__dict__ and "forward" not in net.second.__dict__
