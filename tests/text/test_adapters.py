"""Low-rank adapters: zero at the start, the literal LoRA product once trained, gradients to the
adapter only, hooks on every linear layer of the given layers."""
import torch
from torch import nn

from groundkit.text.adapters import LowRankAdapter, add_adapters


def test_a_fresh_adapter_adds_nothing_and_trains():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5).requires_grad_(False)
    adapter = LowRankAdapter(linear, rank=2, alpha=8.0)
    x = torch.randn(3, 4, 6)
    assert torch.equal(adapter(x), torch.zeros(3, 4, 5))
    adapter(x).pow(2).sum().backward()     # zero output: no gradient yet but to ``up``
    assert adapter.down.weight.grad.abs().sum() == 0 and adapter.up.weight.grad is not None
    assert adapter.down.weight.shape == (2, 6) and adapter.up.weight.shape == (5, 2)


def test_adapter_output_is_the_scaled_low_rank_product():
    torch.manual_seed(1)
    adapter = LowRankAdapter(nn.Linear(6, 5), rank=3, alpha=12.0)
    with torch.no_grad():
        adapter.up.weight.normal_()
    x = torch.randn(2, 6)
    down, up = adapter.down.weight, adapter.up.weight
    literal = torch.stack([(12.0 / 3) * up @ (down @ row) for row in x])
    torch.testing.assert_close(adapter(x), literal)


def test_add_adapters_hooks_every_linear_of_the_layers():
    torch.manual_seed(2)
    block = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    layers = nn.ModuleList([block, nn.Sequential(nn.Linear(4, 4))]).requires_grad_(False)
    x = torch.randn(5, 4)
    before = layers[1](layers[0](x))
    adapters = add_adapters(layers, rank=2, alpha=2.0)
    assert list(adapters) == ["0-0", "0-2", "1-0"]
    assert torch.equal(layers[1](layers[0](x)), before)    # zero at the start
    with torch.no_grad():
        adapters["1-0"].up.weight.fill_(0.5)
    hidden = layers[0](x)
    expected = before + adapters["1-0"](hidden)
    torch.testing.assert_close(layers[1](hidden), expected)
    layers[1](layers[0](x)).sum().backward()
    assert all(p.grad is None for p in layers.parameters())
    assert adapters["1-0"].up.weight.grad is not None
