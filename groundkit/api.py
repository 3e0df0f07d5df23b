"""The Python API: load a checkpoint, give images and captions, get one dict per image.

>>> from groundkit import Grounder
>>> g = Grounder.from_pretrained("ppmn-synthetic")
>>> g.set_image(rgb_array)                       # encodes the image once
>>> out = g.ground("There is [a red circle] next to [the grass].")
>>> out["phrases"], out["masks"].shape           # ['a red circle', 'the grass'], (2, H, W)

As segment-anything's predictor, a :class:`Grounder` is stateful (``set_image`` then many
``ground`` calls) and kept apart from the ``nn.Module`` it drives.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from groundkit.data.images import read_image, to_rgb_array
from groundkit.data.transforms import ResizeConfig, image_to_tensor, pad_batch, target_size
from groundkit.errors import InputError
from groundkit.models.grounding import GroundingModel, postprocess_grounding
from groundkit.models.panoptic import PanopticModel
from groundkit.structures import Category, GroundingResult, PanopticResult
from groundkit.text.phrases import check_spans, noun_chunk_spans, parse_marked_caption

ImageLike = Any  # np.ndarray (H, W[, C]), PIL.Image, or a path


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_rgb(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array -> ``(H, W, 3) uint8``."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    return to_rgb_array(np.array(image))


def caption_phrases(caption: str, spans: Sequence[tuple[int, int]] | None = None
                    ) -> tuple[str, list[tuple[int, int]]]:
    """The caption to encode and the character spans of its phrases.

    Explicit ``spans`` win; else phrases marked with brackets (``"[a red circle] on [the grass]"``,
    brackets removed from the returned caption); else spaCy noun chunks, when installed.
    """
    if not isinstance(caption, str) or not caption.strip():
        raise InputError(f"caption: expected a non-empty string, got {caption!r}")
    if spans is not None:
        found = check_spans(caption, list(spans))
    elif "[" in caption or "]" in caption:
        caption, found = parse_marked_caption(caption)
    else:
        found = noun_chunk_spans(caption)
    if not found:
        raise InputError(f"no phrase to ground in {caption!r}: mark phrases with brackets, "
                         f"e.g. 'There is [a red circle] on [the grass].', or pass spans")
    return caption, [tuple(s) for s in found]


class Grounder:
    """Panoptic narrative grounding: a mask for every phrase of a caption.

    Args:
        model: a PPMN or DRMN :class:`GroundingModel`.
        resize: how images are sized for the model (the one it was trained with).
        device: where the model runs (default: CUDA when available).
    """

    def __init__(self, model: GroundingModel, resize: ResizeConfig | None = None,
                 device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.resize = resize or ResizeConfig()
        self.threshold = model.cfg.threshold
        self._image: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "ppmn-synthetic",
                        device: str | torch.device | None = None) -> "Grounder":
        """A bundled checkpoint name (``ppmn-synthetic``, ``drmn-synthetic``) or a checkpoint path."""
        from groundkit.engine.grounding import load_grounding_model

        model, cfg = load_grounding_model(name_or_path)
        return cls(model, cfg.data.resize, device)

    # --- one image, many captions ---------------------------------------------------------------

    @torch.no_grad()
    def set_image(self, image: ImageLike) -> None:
        """Encode ``image`` once; the following :meth:`ground` calls reuse its features."""
        rgb = as_rgb(image)
        tensor, size = self._prepare(rgb)
        self._image = {"rgb": rgb, "input_size": size,
                       "features": self.model.encode_images(pad_batch([tensor]).to(self.device))}

    @torch.no_grad()
    def ground(self, caption: str, spans: Sequence[tuple[int, int]] | None = None
               ) -> GroundingResult:
        """Masks of the phrases of ``caption`` on the image given to :meth:`set_image`.

        Returns ``{"caption", "phrases", "spans", "masks" (N, H, W) bool, "scores" (N,)}`` with
        spans into the returned caption (brackets removed) and masks at the image's size.
        """
        if self._image is None:
            raise InputError("call set_image(image) before ground(caption)")
        caption, found = caption_phrases(caption, spans)
        probs = self.model.phrase_maps(self._image["features"], [caption], [found])[0]
        return self._result(caption, found, probs, self._image["input_size"],
                            self._image["rgb"].shape[:2])

    # --- batches ----------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike], captions: Sequence[str]) -> list[GroundingResult]:
        """Ground ``captions[i]`` (phrases marked with brackets) on ``images[i]``; one dict each."""
        if len(images) != len(captions):
            raise InputError(f"{len(images)} images but {len(captions)} captions")
        rgbs = [as_rgb(im) for im in images]
        prepared = [self._prepare(rgb) for rgb in rgbs]
        parsed = [caption_phrases(c) for c in captions]
        features = self.model.encode_images(pad_batch([t for t, _ in prepared]).to(self.device))
        probs = self.model.phrase_maps(features, [c for c, _ in parsed], [s for _, s in parsed])
        return [self._result(c, s, p, size, rgb.shape[:2])
                for (c, s), p, (_, size), rgb in zip(parsed, probs, prepared, rgbs)]

    def _prepare(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        size = target_size(*rgb.shape[:2], self.resize)
        return image_to_tensor(rgb, size), size

    def _result(self, caption: str, spans: list[tuple[int, int]], probs: torch.Tensor,
                input_size: tuple[int, int], orig_size: tuple[int, int]) -> GroundingResult:
        masks, scores = postprocess_grounding(probs.cpu(), input_size, orig_size, self.threshold)
        return {"caption": caption, "phrases": [caption[s:e] for s, e in spans], "spans": spans,
                "masks": masks.numpy(), "scores": scores.numpy()}


class Segmenter:
    """Panoptic segmentation: a panoptic map of each image, and its detections as proposals.

    >>> s = Segmenter.from_pretrained("panoptic-synthetic")
    >>> result = s.segment("scene.png")           # id_map (H, W), segments_info
    >>> [s.categories[i["category_id"]].name for i in result.segments_info]

    Args:
        model: a :class:`~groundkit.models.panoptic.PanopticModel`.
        resize: how images are sized for the model (the one it was trained with).
        categories: ``{category_id: Category}`` of the classes the model predicts (names, colours).
        device: where the model runs (default: CUDA when available).
    """

    def __init__(self, model: PanopticModel, resize: ResizeConfig | None = None,
                 categories: dict[int, Category] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.resize = resize or ResizeConfig()
        self.categories = categories or {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "panoptic-synthetic",
                        device: str | torch.device | None = None) -> "Segmenter":
        """A bundled checkpoint name (``panoptic-synthetic``) or a checkpoint path."""
        from groundkit.engine.panoptic import load_panoptic_model, model_categories

        model, cfg = load_panoptic_model(name_or_path)
        return cls(model, cfg.data.resize, model_categories(cfg), device)

    def segment(self, image: ImageLike) -> PanopticResult:
        """The panoptic map of one image: ``id_map (H, W) int64`` at the image's size (0 = void)
        and ``segments_info [{"id", "category_id", "isthing", "score"}]``."""
        return self([image])[0]

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike]) -> list[PanopticResult]:
        """:meth:`segment` of every image, run as one padded batch."""
        if not images:
            return []
        rgbs = [as_rgb(im) for im in images]
        batch, sizes = self._batch(rgbs)
        return self.model.predict(batch, sizes, [rgb.shape[:2] for rgb in rgbs])

    @torch.no_grad()
    def detections(self, image: ImageLike, roi_size: int = 7) -> dict[str, torch.Tensor]:
        """The model's thing detections on one image, as proposals for other models.

        Returns tensors on :attr:`device`: ``boxes (K, 4)`` xyxy in image pixels, ``scores (K,)``,
        ``classes (K,)`` thing labels, ``category_ids (K,)``, ``masks (K, H, W) bool`` (each
        detection's pixels in the panoptic argmax, at the image's size) and
        ``roi_features (K, C, roi_size, roi_size)`` (RoIAlign on the FPN level of each box).
        """
        rgb = as_rgb(image)
        batch, sizes = self._batch([rgb])
        return self.model.detections(batch, sizes, [rgb.shape[:2]], roi_size)[0]

    def _batch(self, rgbs: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resized, normalised and padded ``(B, 3, H, W)`` and the size of each image inside."""
        sizes = [target_size(*rgb.shape[:2], self.resize) for rgb in rgbs]
        tensors = [image_to_tensor(rgb, size) for rgb, size in zip(rgbs, sizes)]
        return pad_batch(tensors, self.resize.size_divisor).to(self.device), sizes
