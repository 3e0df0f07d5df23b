"""The dense instance affinity head (paper Sec. 3.4.2, Fig. 5, Eq. 4).

``P = Psi + phi0(Q) (phi1(Q)^T Psi)``: Q is an ``N x C`` feature matrix (N = h*w pixels of the
stride-4 grid), Psi the ``N x K`` dynamic potential (K = detections + stuff classes). The pairwise
affinity ``phi0(Q) phi1(Q)^T`` is ``N x N`` (18 GB in float32 for a 200 x 336 grid), so the product is
evaluated right to left: ``phi1(Q)^T Psi`` is only ``C x K``, and the largest new tensors are the
``N x C`` maps phi0(Q), phi1(Q) and the ``N x K`` output.

phi = 1x1 conv + activation. The paper names neither the activation nor the scale of the sum over N
pixels. Element-wise activations (``relu``, the default, ``sigmoid``, ``softplus``) sum over pixels,
divided by N when ``normalize`` so the term has the same magnitude at every image size
(``normalize=False`` is Eq. 4 verbatim). ``softmax`` is the efficient attention of the paper's [23]:
phi0 a softmax over channels at each pixel, phi1 a softmax over pixels in each channel, so the
context is a weighted *average* of Psi and large channels (stuff) get no advantage from their area.
"""
from __future__ import annotations

import torch
from torch import nn

from groundkit.models.panoptic.semantic_head import FeatureDecoder

ACTIVATIONS = ("relu", "sigmoid", "softplus", "softmax")


def activate(x: torch.Tensor, kind: str, role: int) -> torch.Tensor:
    """phi's activation of ``x (C, N)``; ``role`` 0 (phi0) or 1 (phi1) picks softmax's axis.

    ReLU works in place: phi(Q) is the largest tensor of the step, so the activation must not copy it.
    """
    if kind == "relu":
        return x.relu_()
    if kind == "sigmoid":
        return x.sigmoid()
    if kind == "softplus":
        return nn.functional.softplus(x)
    return x.softmax(dim=role)  # phi0: over channels (dim 0); phi1: over pixels (dim 1)


def apply_affinity(a0: torch.Tensor, a1: torch.Tensor, psi: torch.Tensor,
                   normalize: bool = True) -> torch.Tensor:
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
            raise ValueError(f"affinity activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.decoder = decoder
        self.project = nn.Conv2d(decoder.out_channels, channels, 1)
        self.phi0 = nn.Conv2d(channels, channels, 1)
        self.phi1 = nn.Conv2d(channels, channels, 1)
        self.activation = activation
        self.normalize = normalize and activation != "softmax"  # a softmax over pixels already averages

    def features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project(self.decoder(features))

    def phi(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """phi0(Q), phi1(Q) of one image ``q (C, h, w)``, each ``(C, N)``.

        The 1x1 convs run as one matrix product each, whose output is a fresh tensor rather than a
        view: an in-place activation on a view would make autograd copy the whole base in backward.
        """
        flat = q.flatten(1)
        a0 = torch.addmm(self.phi0.bias[:, None], self.phi0.weight.flatten(1), flat)
        a1 = torch.addmm(self.phi1.bias[:, None], self.phi1.weight.flatten(1), flat)
        return activate(a0, self.activation, 0), activate(a1, self.activation, 1)

    def forward(self, q: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        k, h, w = psi.shape
        a0, a1 = self.phi(q)
        return apply_affinity(a0, a1, psi.reshape(k, h * w), self.normalize).reshape(k, h, w)
