"""The resolution PNG IoUs are computed at: the original image (the project's default) or PPMN's.

PPMN and DRMN report AR with IoUs at 1/4 of the model's resized input, not at the original
resolution. The official PPMN evaluation (``train_net.py``, ``evaluate``) does, per phrase:

- ground truth: the union of the phrase's segments at the original resolution, resized bilinearly
  (``F.interpolate``, ``align_corners=False``) to the resized input ``(h, w)`` (short side 800,
  long side <= 1333), zero-padded at the bottom/right to a multiple of 32 (``ImageList``), resized
  bilinearly by 0.25 and binarised with ``> 0``: any pixel the resampling touches counts;
- prediction: the model's sigmoid maps on the same stride-4 grid of the padded input, averaged over
  the phrase's word pieces and thresholded ``> 0.5``;
- IoU of the two on that grid (``intersection / union``; an empty union gives NaN, which reaches
  no threshold but counts in the number of phrases, see :mod:`groundkit.metrics.png_ar`).

Prediction files hold masks at the original resolution, so here a predicted mask goes through
the ground truth's resampling (same grid, same alignment) and is binarised with ``> 0.5``, PPMN's
threshold: a mask that came from stride-4 maps lands back on (nearly) the cells it came from.
One difference is left: PPMN's maps also cover the padding, where a positive prediction is a false
positive; prediction files have no padding, so ours predict nothing there.

numpy only (no torch): the resampling is torch's bilinear kernel (no antialiasing) restated in
float32, step for step, so that ``> 0`` finds the same cells.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

Protocol = Literal["original", "ppmn"]
PROTOCOLS: tuple[str, ...] = ("original", "ppmn")
PPMN_SIZE = (800, 1333)  # the papers' resize: short side, long side at most
SIZE_DIVISOR = 32        # the padding of the batched input (the backbone's largest stride)


def protocol_note(protocol: str, size: tuple[int, int] | None = None) -> str:
    """The words printed with every number: which resolution the IoUs were computed at."""
    if protocol == "original":
        return "IoU at the original image resolution"
    if protocol == "ppmn":
        short, long = size or PPMN_SIZE
        return (f"IoU at 1/4 of the resized input (PPMN protocol: short side {short}, long side "
                f"<= {long}, padded to {SIZE_DIVISOR})")
    raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")


def resized_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """The ``(h, w)`` an image of ``(height, width)`` is resized to (the data transform's rule)."""
    scale = min(short_side / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _linear_taps(in_size: int, out_size: int, scale: np.float32 | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of torch's linear resampling along one axis, in float32 as torch."""
    ratio = np.float32(in_size) / np.float32(out_size) if scale is None else np.float32(scale)
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum(ratio * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1))
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, np.float32(1) - w1, w1


def bilinear_resize(maps: np.ndarray, size: tuple[int, int], scale: float | None = None
                    ) -> np.ndarray:
    """torch's ``F.interpolate(mode="bilinear", align_corners=False)`` of ``(N, H, W)`` maps to
    ``size`` ``(h, w)``, float32. ``scale``: the input/output ratio of the source coordinates
    (torch uses ``1 / scale_factor`` when given one; None: ``H / h`` and ``W / w``)."""
    maps = np.asarray(maps, dtype=np.float32)
    (h0, h1, hw0, hw1), (c0, c1, cw0, cw1) = (
        _linear_taps(maps.shape[-2], size[0], scale), _linear_taps(maps.shape[-1], size[1], scale))
    rows = cw0 * maps[..., c0] + cw1 * maps[..., c1]            # along W first, as torch's kernel
    return hw0[:, None] * rows[..., h0, :] + hw1[:, None] * rows[..., h1, :]


def ppmn_grid(masks: np.ndarray, input_size: tuple[int, int], threshold: float) -> np.ndarray:
    """``(N, H, W)`` masks at the original resolution -> ``(N, Hp/4, Wp/4) bool`` on the stride-4
    grid of the padded resized input: resized bilinearly to ``input_size``, zero-padded to a
    multiple of 32, resized by 1/4, ``> threshold`` (ground truth: 0, as PPMN; predictions: 0.5)."""
    h, w = input_size
    hp, wp = -(-h // SIZE_DIVISOR) * SIZE_DIVISOR, -(-w // SIZE_DIVISOR) * SIZE_DIVISOR
    resized = bilinear_resize(masks, (h, w))
    padded = np.zeros((*resized.shape[:-2], hp, wp), dtype=np.float32)
    padded[..., :h, :w] = resized
    return bilinear_resize(padded, (hp // 4, wp // 4), scale=4.0) > threshold


def ppmn_mask_ious(preds: np.ndarray, gts: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """IoUs of mask pairs under the PPMN protocol: ``preds, gts (N, H, W) bool`` at the original
    resolution of an image resized to ``input_size`` for the model -> ``(N,) float64``, NaN where
    both are empty on the grid (the official ``intersection / union``)."""
    if preds.shape != gts.shape:
        raise ValueError(f"mask shapes differ: predictions {preds.shape}, ground truth {gts.shape}")
    n = len(preds)
    if n == 0:
        return np.zeros(0)
    pred, gt = ppmn_grid(preds, input_size, 0.5), ppmn_grid(gts, input_size, 0.0)
    inter = np.count_nonzero((pred & gt).reshape(n, -1), axis=1)
    union = np.count_nonzero((pred | gt).reshape(n, -1), axis=1)
    return np.divide(inter, union, out=np.full(n, np.nan), where=union > 0)
