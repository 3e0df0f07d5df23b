"""Resize, normalise and pad images (and their masks) for the models."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ResizeConfig:
    """Short side to ``short_side`` with the long side at most ``max_size`` (the papers: 800/1333)."""

    short_side: int = 800
    max_size: int = 1333
    size_divisor: int = 32   # batches are padded to a multiple of the backbone's largest stride


def target_size(height: int, width: int, cfg: ResizeConfig) -> tuple[int, int]:
    """The ``(h, w)`` an image of ``(height, width)`` is resized to."""
    scale = cfg.short_side / min(height, width)
    scale = min(scale, cfg.max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox_size(height: int, width: int, size: int) -> tuple[float, tuple[int, int]]:
    """The scale and ``(h, w)`` of an image of ``(height, width)`` letterboxed into a
    ``size x size`` square: its long side becomes ``size``."""
    scale = size / max(height, width)
    return scale, (max(1, round(height * scale)), max(1, round(width * scale)))


def letterbox(image: np.ndarray, size: int) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """``(H, W, 3) uint8`` -> ``(3, size, size)`` normalised, the image resized so that its long
    side is ``size`` and pasted at the top-left (zeros at the bottom/right, as batches are padded);
    also its scale (input pixels = original pixels x scale) and its ``(h, w)`` inside the square."""
    scale, inner = letterbox_size(*image.shape[:2], size)
    return pad_maps(image_to_tensor(image, inner), (size, size)), scale, inner


def image_to_tensor(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(3, h, w) float`` resized (bilinear, antialiased) and normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x[0].clamp(0, 1) - mean) / std


def tensor_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`image_to_tensor`'s normalisation: ``(..., 3, h, w)`` -> RGB in
    ``[0, 1]``, same shape."""
    mean = x.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = x.new_tensor(IMAGENET_STD)[:, None, None]
    return (x * std + mean).clamp(0, 1)


def masks_to_targets(masks: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(P, H, W) bool`` -> ``(P, h, w) float``: the covered fraction of each output cell.

    Shrinking averages the pixels of each cell ("area"); growing interpolates bilinearly.
    """
    x = torch.from_numpy(np.ascontiguousarray(masks)).float()
    if x.shape[0] == 0:
        return x.new_zeros((0, *size))
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.interpolate(x[None], size=size, mode="area")[0]
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def padding_mask(image_sizes: list[tuple[int, int]], shape: tuple[int, int], stride: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Which cells of a stride-``stride`` grid ``shape = (h, w)`` over a :func:`pad_batch` batch
    are padding: ``(B, h, w)`` bool, True where the cell starts past its image's ``(h_i, w_i)``
    (so a cell the image edge cuts is image, as the convolutions saw it)."""
    valid = torch.tensor([[-(-hi // stride), -(-wi // stride)] for hi, wi in image_sizes],
                         device=device)
    rows = torch.arange(shape[0], device=device)[None, :, None] >= valid[:, 0, None, None]
    cols = torch.arange(shape[1], device=device)[None, None, :] >= valid[:, 1, None, None]
    return rows | cols


def pad_batch(images: list[torch.Tensor], divisor: int = 32) -> torch.Tensor:
    """B x ``(3, h_i, w_i)`` -> ``(B, 3, H, W)``, zero-padded at the bottom/right to a multiple
    of ``divisor``."""
    h = max(x.shape[-2] for x in images)
    w = max(x.shape[-1] for x in images)
    h, w = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, x in enumerate(images):
        out[i, :, :x.shape[-2], :x.shape[-1]] = x
    return out


def padded_size(size: Sequence[int], divisor: int = 32) -> tuple[int, int]:
    """The ``(H, W)`` an image of ``size (h, w)`` is padded to when it is batched alone."""
    return -(-int(size[0]) // divisor) * divisor, -(-int(size[1]) // divisor) * divisor


def split_by_padded_size(batch: dict[str, Any], divisor: int = 32
                         ) -> list[tuple[list[int], dict[str, Any]]]:
    """A padded batch cut into sub-batches of the images that pad alone to the same size.

    Each image is cropped from ``batch["images"] (B, 3, H, W)`` to its own padded size
    (:func:`padded_size` of ``batch["image_sizes"]``): the padding beyond is zeros either way, so
    every sub-batch holds exactly what the images would be batched alone. Per-image lists and
    tensors with a leading batch dimension are split alike; other values are shared.
    Returns ``[(indices into the batch, sub-batch), ...]`` in order of first appearance.
    """
    images = batch["images"]
    n = len(images)
    sizes = batch.get("image_sizes") or [tuple(images.shape[-2:])] * n
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(padded_size(size, divisor), []).append(i)
    out = []
    for (h, w), index in groups.items():
        sub: dict[str, Any] = {}
        for key, value in batch.items():
            if key == "images":
                value = value[index][..., :h, :w]
            elif isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == n:
                value = value[index]
            elif isinstance(value, (list, tuple)) and len(value) == n:
                value = [value[i] for i in index]
            sub[key] = value
        out.append((index, sub))
    return out


def map_padded_groups(batch: dict[str, Any], fn: Callable[[dict[str, Any]], Sequence[Any]],
                      divisor: int = 32) -> list[Any]:
    """``fn`` (one output per image of a sub-batch) over :func:`split_by_padded_size`'s groups,
    the outputs put back in batch order: each image's output then depends on it alone, never on
    how much padding the other images of the batch brought."""
    out: list[Any] = [None] * len(batch["images"])
    for index, sub in split_by_padded_size(batch, divisor):
        for i, result in zip(index, fn(sub)):
            out[i] = result
    return out


def pad_maps(maps: torch.Tensor, size: tuple[int, int], value: float = 0) -> torch.Tensor:
    """``(..., h, w)`` -> ``(..., H, W)`` padded with ``value`` at the bottom/right."""
    return F.pad(maps, (0, size[1] - maps.shape[-1], 0, size[0] - maps.shape[-2]), value=value)
