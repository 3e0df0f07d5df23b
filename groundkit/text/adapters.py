"""Low-rank adapters (LoRA, Hu et al. 2021) on a text encoder's linear layers.

Fine-tuning a whole BERT-family encoder adapts it best but makes every model file carry all of
it (all-MiniLM-L6-v2: 22.7 M parameters, more than a 15 MB bundle); an adapter adds
``(alpha / rank) * up(down(x))`` to a frozen linear layer's output, ``rank * (in + out)``
parameters instead of ``in * out``, and starts at zero (``up`` is zero), so a model with fresh
adapters computes exactly what it did without them.

The adapters are attached with forward hooks and kept in their own ``nn.ModuleDict`` beside the
encoder, so the encoder's own parameter names (and the keys of checkpoints written without
adapters) do not change.
"""
from __future__ import annotations

from functools import partial

from torch import Tensor, nn


class LowRankAdapter(nn.Module):
    """x (..., in) -> (alpha / rank) * up(down(x)) (..., out); zero until ``up`` trains."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.down = nn.Linear(linear.in_features, rank, bias=False)  # nn.Linear's init, as LoRA's A
        self.up = nn.Linear(rank, linear.out_features, bias=False)
        nn.init.zeros_(self.up.weight)
        # Under Adam a step moves ``up`` by about the learning rate whatever its gradient's scale,
        # so alpha / rank sets how fast the adapter's product moves at a given text_lr.
        self.scale = alpha / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x)) * self.scale


def add_adapters(layers: nn.ModuleList | list[nn.Module], rank: int, alpha: float) -> nn.ModuleDict:
    """An adapter on every ``nn.Linear`` inside ``layers`` (a hook adds its output to the layer's);
    returns them keyed ``"<layer index>-<path>"`` ("0-attention-self-query": a ModuleDict key
    cannot hold dots), in the order of ``layers``."""
    adapters = nn.ModuleDict()
    for index, layer in enumerate(layers):
        for path, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                adapter = LowRankAdapter(module, rank, alpha).to(module.weight.device)
                adapters[f"{index}-{path.replace('.', '-')}"] = adapter
                module.register_forward_hook(partial(_add_output, adapter))
    return adapters


def _add_output(adapter: LowRankAdapter, module: nn.Module, inputs: tuple[Tensor, ...],
                output: Tensor) -> Tensor:
    return output + adapter(inputs[0]).to(output.dtype)
