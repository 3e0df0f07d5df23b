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

# mask pixels filtered in one call, masks of a small image together (faster: ten 128 px masks
# 271 ms against 448 ms one by one, one thread, a loaded machine, before the guide was shared),
# a large one's one by one. The guide's statistics take some 80 float64 maps of the image's
# pixels once, each mask about 18 more (one 512 x 512 mask: 166 MB of peak memory; eight:
# 429 MB): at most about 0.8 GB a call
PIXELS_AT_ONCE = 1 << 20

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

    The filter runs at the original size or the input's, whichever is smaller (the input is all
    the guide knows), on at most ``PIXELS_AT_ONCE`` pixels a call: its memory stays bounded for a
    huge photo and many phrases. Returns ``(P, H0, W0)``.
    """
    h, w = math.ceil(size[0]), math.ceil(size[1])
    orig = tuple(probs.shape[-2:])
    if len(probs) == 0:
        return probs
    work = orig if orig[0] * orig[1] <= h * w else (h, w)
    guide = tensor_to_rgb(_resize(image[:, :h, :w], work))[None]
    radius = max(1, round(radius * work[0] / h))
    per_call = max(1, PIXELS_AT_ONCE // (work[0] * work[1]))
    refined = [guided_filter(guide, chunk, radius, eps)            # the guide's statistics once
               for chunk in _resize(probs, work).split(per_call)]
    return _resize(torch.cat(refined), orig)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, *size)``, bilinear; itself when the size is already right."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
