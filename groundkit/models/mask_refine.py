"""Edge-aware refinement of predicted mask probabilities on the picture they belong to.

The models predict masks on a stride-4 grid and resize them to the image, which rounds corners
and blurs edges by up to two pixels either way. :func:`refine_on_image` filters the resized
probabilities with the image itself as the guide (:func:`~groundkit.ops.guided_filter.guided_filter`,
He et al.'s guided filter), so their edges move to the colour edges of the picture before they are
thresholded. Used by PBREC and the grounding models (``refine_radius``, ``refine_eps``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from groundkit.data.transforms import tensor_to_rgb
from groundkit.errors import ConfigError
from groundkit.ops.guided_filter import guided_filter

# masks filtered together, some 40 float maps each: 30 phrases of an 800 x 1333 image at once
# would take about 5 GB
MASKS_AT_ONCE = 4


def check_refinement(family: str, radius: int, eps: float) -> None:
    """A ConfigError unless ``radius >= 0`` (0 = off) and ``eps > 0``."""
    if radius < 0 or eps <= 0:
        raise ConfigError(f"{family}: refine_radius must be >= 0 and refine_eps > 0, got "
                          f"{radius} and {eps}")


def refine_on_image(probs: torch.Tensor, image: torch.Tensor, size: tuple[float, float],
                    radius: int, eps: float) -> torch.Tensor:
    """Mask probabilities ``(P, H0, W0)`` in original pixels, each filtered with the image as the
    guide: ``image (3, Hp, Wp)``, the normalised (letterboxed or padded) model input whose
    top-left ``size`` is the picture; ``radius`` in input pixels.

    The filter runs at the original size or the input's, whichever is smaller: the input is all
    the guide knows, and its memory (some 40 maps per mask, ``MASKS_AT_ONCE`` masks at a time)
    stays bounded by the input's for a huge photo and many masks. Returns ``(P, H0, W0)``.
    """
    h, w = math.ceil(size[0]), math.ceil(size[1])
    orig = tuple(probs.shape[-2:])
    if len(probs) == 0:
        return probs
    work = orig if orig[0] * orig[1] <= h * w else (h, w)
    guide = tensor_to_rgb(_resize(image[:, :h, :w], work))[None]
    radius = max(1, round(radius * work[0] / h))
    refined = [guided_filter(guide.expand(len(chunk), -1, -1, -1), chunk, radius, eps)
               for chunk in _resize(probs, work).split(MASKS_AT_ONCE)]
    return _resize(torch.cat(refined), orig)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, *size)``, bilinear; itself when the size is already right."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
