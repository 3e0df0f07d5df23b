"""The dense instance affinity head (paper Sec. 3.4.2, Fig. 5, Eq. 4).

``P = Psi + phi0(Q) (phi1(Q)^T Psi)``: Q is an ``N x C`` feature matrix (N = h*w pixels of the
stride-4 grid), Psi the ``N x K`` dynamic potential (K = detections + stuff classes). The pairwise
affinity ``phi0(Q) phi1(Q)^T`` is ``N x N`` (18 GB in float32 for a 200 x 336 grid), so the product is
evaluated right to left: ``phi1(Q)^T Psi`` is only ``C x K``. :class:`ChunkedAffinity` goes further
and walks the pixels in chunks, forward and backward (recomputing phi per chunk), so the only
full-size tensors it allocates are its output P and, in backward, the gradients of Q and Psi.

phi = 1x1 conv + an element-wise activation (``relu`` by default; the paper names none). The paper
names no scale for the sum over N pixels either; ``normalize=False`` is Eq. 4 verbatim, else
``phi1(Q)^T Psi`` is divided
- by N (``scale="pixels"``), so the term has the same magnitude at every image size; or
- by each channel's mass ``sum_y Psi_k(y)`` (``scale="mass"``): phi1(Q)^T Psi then holds the
  Psi-weighted *mean* of phi1(Q) over each channel's region, and a channel's term no longer grows
  with its area. Divided by N, a stuff channel covering half the image gets a term ~10x a thing's
  (measured on a trained model: |term| 2.4 vs 0.21, and 22% of the thing pixels a detection wins
  in Psi go to stuff in P), which is how the affinity cost things PQ.

Two options the paper does not have, off by default (Eq. 4 verbatim), measured in docs/results.md:
- ``region="box"``: a detection's channel gets the affinity term only inside its box, where its
  potential lives; on the whole image the term lets a detection claim look-alike pixels of other
  instances of its class anywhere.
- ``gate``: the term is scaled by a learned scalar that starts at 0, so training starts from
  ``P = Psi`` and the affinity grows only as far as it lowers the loss.
- ``coords``: two channels of normalised (x, y) position are appended to Q's decoder features, so
  that phi can tell two instances of the same class apart.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from groundkit.models.panoptic.semantic_head import FeatureDecoder
from groundkit.vision.position import coordinate_channels

ACTIVATIONS = ("relu", "sigmoid", "softplus")
REGIONS = ("image", "box")
SCALES = ("pixels", "mass")
MASS_EPS = 1e-6  # keeps an empty channel's mean at 0 instead of 0 / 0


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "relu":
        return x.relu()
    if kind == "sigmoid":
        return x.sigmoid()
    return nn.functional.softplus(x)


def activation_grad(pre: torch.Tensor, kind: str) -> torch.Tensor:
    """d activate(pre) / d pre, element-wise."""
    if kind == "relu":
        return (pre > 0).to(pre.dtype)
    if kind == "sigmoid":
        s = pre.sigmoid()
        return s * (1 - s)
    return pre.sigmoid()  # softplus' = sigmoid


def region_mask(cells: torch.Tensor | None, width: int, start: int, stop: int) -> torch.Tensor | None:
    """Which of pixels ``start..stop`` (row-major, grid ``width``) lie in each channel's cell range.

    cells: ``(K, 4)`` int64 ``[y0, y1, x0, x1)`` per channel, or None (no restriction).
    Returns ``(K, stop - start)`` bool or None.
    """
    if cells is None:
        return None
    index = torch.arange(start, stop, device=cells.device)
    y, x = (index // width)[None], (index % width)[None]
    return (y >= cells[:, :1]) & (y < cells[:, 1:2]) & (x >= cells[:, 2:3]) & (x < cells[:, 3:])


class ChunkedAffinity(torch.autograd.Function):
    """``P = Psi + gain * R * (phi0(Q)^T phi1(Q) Psi^T / scale)^T`` pixel chunk by pixel chunk.

    q: ``(C, N)`` affinity features; w0, w1: ``(C, C)``, b0, b1: ``(C,)`` the 1x1 convs of phi0,
    phi1; psi: ``(K, N)``; gain: a 0-d tensor; cells: ``(K, 4)`` or None, the region R of each channel
    (:func:`region_mask`); width: the grid width; scale: None (Eq. 4), ``"pixels"`` (N) or
    ``"mass"`` (each channel's ``sum Psi_k``). Returns P ``(K, N)``. Backward recomputes phi per
    chunk instead of saving the ``C x N`` activations.
    """

    @staticmethod
    def forward(ctx, q, w0, b0, w1, b1, psi, gain, cells, width, kind, scale, chunk):
        context = psi.new_zeros(q.shape[0], psi.shape[0])  # (C, K): phi1(Q)^T Psi
        for part, q_c, _ in _chunks(q, None, width, chunk):
            context.addmm_(activate(_pre(w1, b1, q_c), kind), psi[:, part].transpose(0, 1))
        divisor = _divisor(psi, scale)
        context /= divisor
        out = torch.empty_like(psi)
        for part, q_c, region in _chunks(q, cells, width, chunk):
            term = context.transpose(0, 1) @ activate(_pre(w0, b0, q_c), kind)  # (K, chunk)
            if region is not None:
                term *= region
            out[:, part] = psi[:, part] + term.mul_(gain)
        ctx.save_for_backward(q, w0, b0, w1, b1, psi, gain, context, divisor)
        ctx.cells, ctx.width, ctx.kind, ctx.scale, ctx.chunk = cells, width, kind, scale, chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, w0, b0, w1, b1, psi, gain, context, divisor = ctx.saved_tensors
        cells, width, kind, chunk = ctx.cells, ctx.width, ctx.kind, ctx.chunk
        grads = {name: torch.zeros_like(t) for name, t in
                 (("q", q), ("w0", w0), ("b0", b0), ("w1", w1), ("b1", b1))}
        grad_context = torch.zeros_like(context)
        grad_gain = torch.zeros_like(gain)
        # Pass 1, through phi0: P depends on a0 = phi0(Q) and on the context.
        for part, q_c, region in _chunks(q, cells, width, chunk):
            pre0 = _pre(w0, b0, q_c)
            a0 = activate(pre0, kind)
            grad_term = grad_out[:, part].clone()                          # (K, chunk)
            if region is not None:
                grad_term *= region
            grad_gain += (grad_term * (context.transpose(0, 1) @ a0)).sum()
            grad_term *= gain
            grad_context.addmm_(a0, grad_term.transpose(0, 1))
            grad_pre0 = (context @ grad_term) * activation_grad(pre0, kind)  # (C, chunk)
            _linear_grads(grads, "0", grad_pre0, q_c, w0, part)
        # context = sums / divisor: the divisor of a "mass" channel depends on Psi too
        grad_divisor = -(grad_context * context).sum(0) / divisor[0]        # (K,)
        grad_context /= divisor
        # Pass 2, through phi1 and Psi: sums = phi1(Q) Psi^T, and P = Psi + ...
        grad_psi = torch.empty_like(psi)
        for part, q_c, _ in _chunks(q, None, width, chunk):
            pre1 = _pre(w1, b1, q_c)
            torch.addmm(grad_out[:, part], grad_context.transpose(0, 1), activate(pre1, kind),
                        out=grad_psi[:, part])
            if ctx.scale == "mass":
                grad_psi[:, part] += grad_divisor[:, None]
            grad_pre1 = (grad_context @ psi[:, part]) * activation_grad(pre1, kind)
            _linear_grads(grads, "1", grad_pre1, q_c, w1, part)
        return (grads["q"], grads["w0"], grads["b0"], grads["w1"], grads["b1"], grad_psi, grad_gain,
                None, None, None, None, None)


def _chunks(q: torch.Tensor, cells: torch.Tensor | None, width: int, chunk: int):
    """``(slice, q[:, slice], region_mask)`` over the N pixels of ``q (C, N)``, chunk by chunk."""
    n = q.shape[1]
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        yield slice(start, stop), q[:, start:stop], region_mask(cells, width, start, stop)


def _pre(weight: torch.Tensor, bias: torch.Tensor, q_chunk: torch.Tensor) -> torch.Tensor:
    """phi's 1x1 conv before its activation: ``W q + b``, ``(C, chunk)``."""
    return torch.addmm(bias[:, None], weight, q_chunk)


def _divisor(psi: torch.Tensor, scale: str | None) -> torch.Tensor:
    """``(1, K)`` what the context of each channel is divided by (:class:`ChunkedAffinity`)."""
    if scale == "mass":
        return psi.sum(1)[None] + MASS_EPS
    return psi.new_full((1, psi.shape[0]), float(psi.shape[1]) if scale == "pixels" else 1.0)


def _linear_grads(grads: dict[str, torch.Tensor], which: str, grad_pre: torch.Tensor,
                  q_chunk: torch.Tensor, weight: torch.Tensor, part: slice) -> None:
    """Accumulate the gradients of ``pre = W q + b`` given ``grad_pre (C, chunk)``."""
    grads["w" + which].addmm_(grad_pre, q_chunk.transpose(0, 1))
    grads["b" + which] += grad_pre.sum(1)
    grads["q"][:, part].addmm_(weight.transpose(0, 1), grad_pre)


class AffinityHead(nn.Module):
    """Affinity features Q and the affinity applier.

    ``features``: FPN dict -> Q ``(B, C, H/4, W/4)``; ``forward(q, psi, cells)``: Q of one image
    ``(C, h, w)``, its potential ``(K, h, w)`` and (with ``region="box"``) each channel's cell range
    ``(K, 4)`` -> P ``(K, h, w)``. K varies per image, so images go one at a time.
    """

    def __init__(self, decoder: FeatureDecoder, channels: int = 128, activation: str = "relu",
                 normalize: bool = True, region: Literal["image", "box"] = "image",
                 gate: bool = False, coords: bool = False, scale: Literal["pixels", "mass"] = "pixels",
                 chunk: int = 4096) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"affinity activation must be one of {ACTIVATIONS}, got {activation!r}")
        if scale not in SCALES:
            raise ValueError(f"affinity scale must be one of {SCALES}, got {scale!r}")
        if region not in REGIONS:
            raise ValueError(f"affinity region must be one of {REGIONS}, got {region!r}")
        self.decoder = decoder
        self.coords = coords
        self.project = nn.Conv2d(decoder.out_channels + 2 * coords, channels, 1)
        self.phi0 = nn.Conv2d(channels, channels, 1)
        self.phi1 = nn.Conv2d(channels, channels, 1)
        self.gain = nn.Parameter(torch.zeros(())) if gate else None
        self.activation, self.region, self.chunk = activation, region, chunk
        self.scale = scale if normalize else None

    def features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.decoder(features)
        if self.coords:
            x = torch.cat([x, coordinate_channels(x)], dim=1)
        return self.project(x)

    def forward(self, q: torch.Tensor, psi: torch.Tensor, cells: torch.Tensor | None = None
                ) -> torch.Tensor:
        k, h, w = psi.shape
        gain = self.gain if self.gain is not None else psi.new_ones(())
        p = ChunkedAffinity.apply(q.flatten(1), self.phi0.weight.flatten(1), self.phi0.bias,
                                  self.phi1.weight.flatten(1), self.phi1.bias, psi.reshape(k, h * w),
                                  gain, cells if self.region == "box" else None, w, self.activation,
                                  self.scale, self.chunk)
        return p.reshape(k, h, w)
