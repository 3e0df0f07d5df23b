"""The dense instance affinity head (paper Sec. 3.4.2, Fig. 5, Eq. 4).

``P = Psi + phi0(Q) (phi1(Q)^T Psi)``: Q is an ``N x C`` feature matrix (N = h*w pixels of the
stride-4 grid), Psi the ``N x K`` dynamic potential (K = detections + stuff classes). The pairwise
affinity ``phi0(Q) phi1(Q)^T`` is ``N x N`` (18 GB in float32 for a 200 x 336 grid), so the product is
evaluated right to left: ``phi1(Q)^T Psi`` is only ``C x K``, and the largest new tensors are the
``N x C`` maps phi0(Q), phi1(Q) and the ``N x K`` output.

The paper leaves the scale of the sum over N pixels open; by default it is divided by N so that the
residual term has the same magnitude at every image size (``normalize=False`` gives Eq. 4 verbatim).
"""
from __future__ import annotations

import torch
from torch import nn

from groundkit.models.panoptic.semantic_head import FeatureDecoder

# In place where possible: phi(Q) is the largest tensor of the step, so the activation must not copy it.
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}


def apply_affinity(a0: torch.Tensor, a1: torch.Tensor, psi: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``Psi + a0^T (a1 Psi^T)`` in channels-first layout, without forming the N x N affinity.

    a0, a1: ``(C, N)`` = phi0(Q), phi1(Q) transposed; psi: ``(K, N)``. Returns P ``(K, N)``.
    """
    context = a1 @ psi.transpose(0, 1)  # (C, K): the only product over the N pixels
    if normalize:
        context = context / psi.shape[1]
    return torch.addmm(psi, context.transpose(0, 1), a0)  # (K, N), one allocation: psi + context^T a0


class AffinityHead(nn.Module):
    """Affinity features Q and the affinity applier.

    ``features``: FPN dict -> Q ``(B, C, H/4, W/4)``; ``forward(q, psi)``: Q of one image ``(C, h, w)``
    and its potential ``(K, h, w)`` -> P ``(K, h, w)``. K varies per image, so images go one at a time.
    """

    def __init__(self, decoder: FeatureDecoder, channels: int = 128, activation: str = "relu",
                 normalize: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"affinity activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.decoder = decoder
        self.project = nn.Conv2d(decoder.out_channels, channels, 1)
        self.phi0 = nn.Sequential(nn.Conv2d(channels, channels, 1), ACTIVATIONS[activation]())
        self.phi1 = nn.Sequential(nn.Conv2d(channels, channels, 1), ACTIVATIONS[activation]())
        self.normalize = normalize

    def features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project(self.decoder(features))

    def forward(self, q: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        k, h, w = psi.shape
        a0 = self.phi0(q[None])[0].flatten(1)  # (C, N)
        a1 = self.phi1(q[None])[0].flatten(1)
        return apply_affinity(a0, a1, psi.reshape(k, h * w), self.normalize).reshape(k, h, w)
