"""The dynamic potential head (paper Sec. 3.4.1, Fig. 4, Eqs. 1-2): one channel per detection and
one per stuff class, built from semantic probabilities V, detection boxes, scores and (optionally)
instance masks. Parameter-free; differentiable in V, the scores and the masks (not in box corners).

Variants, inside the box (zero outside):
- ``"A"`` (UPSNet): ``V(c_k)`` (``+ M(k)`` with masks), no score;
- ``"B"``: ``s_k V(c_k) * M(k)``;
- ``"C"``: ``s_k (V(c_k) + M(k))``. Without masks B and C are both ``s_k V(c_k)``.
Every stuff class gets a whole-image box with score 1: its channel is ``V(stuff class)``.
"""
from __future__ import annotations

import torch

VARIANTS = ("A", "B", "C")


def box_cell_ranges(boxes: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """The cells of a stride-``stride`` grid ``size = (h, w)`` each box overlaps, as ranges.

    boxes: ``(D, 4)`` xyxy image pixels. Returns ``(D, 4)`` int64 ``[y0, y1, x0, x1)``. Overlap
    rather than centre-inside, so that a box smaller than a cell still owns a cell: cell ``i`` spans
    ``[i * stride, (i + 1) * stride)`` and overlaps ``(b0, b1)`` when ``(i + 1) * stride > b0`` and
    ``i * stride < b1``.
    """
    h, w = size
    b = boxes.detach() / stride
    x0, y0 = b[:, 0].floor().clamp(0, w), b[:, 1].floor().clamp(0, h)
    x1, y1 = b[:, 2].ceil().clamp(0, w), b[:, 3].ceil().clamp(0, h)
    return torch.stack([y0, y1, x0, x1], dim=1).long()


def box_cells(boxes: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Which cells of a stride-``stride`` grid each box overlaps (:func:`box_cell_ranges`).

    boxes: ``(D, 4)`` xyxy image pixels; size: grid ``(h, w)``. Returns ``(D, h, w)`` float 0/1.
    """
    ranges = box_cell_ranges(boxes, size, stride)
    ys = torch.arange(size[0], device=boxes.device)
    xs = torch.arange(size[1], device=boxes.device)
    in_y = (ys >= ranges[:, 0:1]) & (ys < ranges[:, 1:2])  # (D, h)
    in_x = (xs >= ranges[:, 2:3]) & (xs < ranges[:, 3:4])  # (D, w)
    return (in_y[:, :, None] & in_x[:, None, :]).to(boxes.dtype)


def dynamic_potential(
    sem_prob: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    num_things: int,
    stride: int = 4,
    masks: torch.Tensor | None = None,
    variant: str = "C",
) -> torch.Tensor:
    """Psi of one image.

    sem_prob: ``(L, h, w)`` softmax probabilities, labels ``[0, num_things)`` things, the rest stuff;
    boxes: ``(D, 4)`` xyxy image pixels; scores: ``(D,)``; classes: ``(D,)`` thing labels;
    masks: ``(D, h, w)`` mask probabilities pasted on the grid, or None.
    Returns ``(D + L - num_things, h, w)``: detection channels first, then one per stuff label.
    """
    if variant not in VARIANTS:
        raise ValueError(f"potential variant must be one of {VARIANTS}, got {variant!r}")
    inside = box_cells(boxes, sem_prob.shape[-2:], stride)
    v = sem_prob[classes]  # (D, h, w)
    if masks is None:
        cue = v
    elif variant == "B":
        cue = v * masks
    else:
        cue = v + masks
    if variant != "A":
        cue = scores[:, None, None] * cue
    return torch.cat([cue * inside, sem_prob[num_things:]], dim=0)
