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

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from groundkit._io import write_json
from groundkit.data.formats import panoptic_segments_json, phrase_record, write_segment_png
from groundkit.data.images import read_image, to_rgb_array
from groundkit.data.transforms import ResizeConfig, image_to_tensor, letterbox, pad_batch, target_size
from groundkit.engine.distributed import default_device, resolve_device
from groundkit.engine.tasks import get_task
from groundkit.errors import InputError
from groundkit.hub import checkpoint_header, model_card
from groundkit.models.grounding import GroundingModel
from groundkit.models.panoptic import PanopticModel
from groundkit.models.referring.pbrec import PBRECModel
from groundkit.ops.masks import encode_rle
from groundkit.structures import Category, GroundingResult, PanopticResult, ReferringResult
from groundkit.text.phrases import check_spans, noun_chunk_spans, parse_marked_caption
from groundkit.visualize import (
    overlay_grounding,
    overlay_panoptic,
    overlay_referring,
    phrase_colors,
    save_image,
    segment_colours,
)

ImageLike = Any  # np.ndarray (H, W[, C]), PIL.Image, or a path

__all__ = ["Grounder", "Segmenter", "Referrer", "Predictor", "Region", "predictor_class", "as_rgb",
           "caption_phrases", "default_device", "photo_like", "SyntheticModelWarning"]

# Distinct colours (4 bits per channel) above which an image is not a synthetic scene: the 200
# val scenes have at most 115 (median 79), the unseen seed's 300 at most 119; the web app's two
# COCO photos 470 and 586 at 128 px, still 266 and 350 at 64 px.
SYNTHETIC_MAX_COLOURS = 200


class SyntheticModelWarning(UserWarning):
    """A model trained on the synthetic benchmark only was given an image unlike its scenes."""


def as_rgb(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array -> ``(H, W, 3) uint8``."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    return to_rgb_array(np.array(image))


def photo_like(rgb: np.ndarray, scene_size: int = 128) -> str | None:
    """Why ``rgb (H, W, 3) uint8`` looks unlike the synthetic benchmark's scenes of
    ``scene_size`` px, or None when it does not: a side over twice ``scene_size``, or more than
    :data:`SYNTHETIC_MAX_COLOURS` distinct colours at 4 bits per channel (counted on at most
    65,536 pixels: about 1 ms)."""
    height, width = rgb.shape[:2]
    if max(height, width) > 2 * scene_size:
        return f"is {width} x {height} px (the scenes are {scene_size} px)"
    step = max(1, int(np.ceil(np.sqrt(height * width / 65536))))
    q = (np.asarray(rgb[::step, ::step, :3], np.uint8) >> 4).reshape(-1, 3).astype(np.int32)
    colours = int(np.count_nonzero(np.bincount(q[:, 0] << 8 | q[:, 1] << 4 | q[:, 2],
                                               minlength=4096)))
    if colours > SYNTHETIC_MAX_COLOURS:
        return f"has {colours} distinct colours (the scenes have at most about 120)"
    return None


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
                         f"e.g. 'There is [a red circle] on [the grass].', or pass their character "
                         f"spans (spans=[(9, 21)]; --spans 9:21 on the command line)")
    return caption, [tuple(s) for s in found]


@dataclass
class Region:
    """One part of a result, as an interactive view shows it: a phrase's mask, a segment, a referent.

    mask: ``(H, W) bool`` at the image's size, or None (a box-only referent); colour: the one
    :meth:`Predictor.draw` gives it; span: its ``[start, end)`` characters in the result's
    :meth:`Predictor.text_of`, if any; box: ``(x1, y1, x2, y2)`` pixels when it has one.
    """

    label: str
    mask: np.ndarray | None
    colour: tuple[int, int, int]
    score: float | None = None
    span: tuple[int, int] | None = None
    box: tuple[float, float, float, float] | None = None


class Predictor:
    """What every family's predictor shares: loading by name, and one image to files.

    Subclasses name their task family (``task``), say for people what it does (``title``), what
    text it takes (``text_name``, None for none; ``text_hint``) and what the parts of its results
    are (``region_name``), and implement :meth:`from_model`, :meth:`predict_one`, :meth:`draw`,
    :meth:`to_json`, :meth:`describe` and :meth:`regions`.
    """

    task: str = ""
    title: str = ""
    text_name: str | None = None
    text_hint: str = ""
    region_name: str = "region"
    takes_spans: bool = False  # predict_one takes ``spans`` (phrases as character spans)
    # The checkpoint's model card (:func:`groundkit.hub.model_card`: trained_on, input_size,
    # scores), set by from_pretrained; {} when unknown (a predictor made from a module).
    card: dict = {}
    _domain_warned = False

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None,
                        device: str | torch.device | None = None, **options: Any) -> "Predictor":
        """A bundled checkpoint name or a checkpoint path (default: the family's bundled model);
        a checkpoint of another family is a ConfigError. ``options``: inference options of the
        model's config, e.g. ``threshold=0.4`` (grounding) or, for a two-stage referring matcher,
        ``proposals="vlnms-fc-synthetic", top_k=3``; an unknown one is a ConfigError."""
        task = get_task(cls.task)
        # placed for inference on its device by load (channels-last on the CPU); a model handed
        # to from_model keeps its layout (it may be training: a fused optimizer needs it)
        device = resolve_device(device)
        model, cfg = task.load(name_or_path or task.default_checkpoint, device)
        if options:
            task.set_inference_options(model, options)
        predictor = cls.from_model(model, cfg, device)
        predictor.card = model_card(checkpoint_header(name_or_path or task.default_checkpoint))
        return predictor

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg: Any,
                   device: str | torch.device | None = None) -> "Predictor":
        """A predictor around ``model`` and its experiment config ``cfg``."""
        raise NotImplementedError

    def predict_one(self, image: ImageLike, text: str | None = None) -> Any:
        """The result of one image (and the text the family needs, if any)."""
        raise NotImplementedError

    def domain_note(self, image: ImageLike) -> str | None:
        """A note for people when the model knows only the synthetic benchmark (its card's
        ``trained_on``) and ``image`` looks unlike its scenes (:func:`photo_like`); else None."""
        trained = self.card.get("trained_on") or {}
        if trained.get("data") != "synthetic":
            return None
        size = int(trained.get("image_size") or 128)
        why = photo_like(as_rgb(image), size)
        if why is None:
            return None
        return (f"this model was trained on synthetic scenes only ({size} px coloured shapes on "
                f"textures) and this image {why}, like a photograph: on it the output means "
                f"little")

    def _check_domain(self, rgb: np.ndarray) -> None:
        """Warn (:class:`SyntheticModelWarning`) the first time :meth:`domain_note` has a note."""
        if self._domain_warned:
            return
        note = self.domain_note(rgb)
        if note is not None:
            self._domain_warned = True
            warnings.warn(note, SyntheticModelWarning, stacklevel=3)

    def draw(self, image: np.ndarray, result: Any, labels: bool = True) -> Any:
        """A picture (PIL image) of ``result`` over ``image (H, W, 3) uint8``; ``labels``: each
        phrase, segment or expression also named on the image (not only below it)."""
        raise NotImplementedError

    def to_json(self, result: Any) -> dict[str, Any]:
        """The JSON-ready content of ``result`` (masks as COCO RLE)."""
        raise NotImplementedError

    def describe(self, result: Any) -> list[str]:
        """One line per phrase or segment of ``result``, for the terminal."""
        raise NotImplementedError

    def regions(self, result: Any) -> list[Region]:
        """The parts of ``result`` one by one, in the colours of :meth:`draw`."""
        raise NotImplementedError

    def text_of(self, result: Any) -> str | None:
        """The text ``result`` answers (the caption without brackets, the expression), if any."""
        return None

    def save(self, image: ImageLike, result: Any, out_dir: str | Path) -> list[Path]:
        """``out_dir/overlay.png`` and ``out_dir/result.json`` of one predicted image."""
        out, rgb = Path(out_dir), as_rgb(image)
        save_image(self.draw(rgb, result), out / "overlay.png")
        source = str(image) if isinstance(image, (str, Path)) else None
        write_json(out / "result.json", {"image": source, "height": rgb.shape[0],
                                         "width": rgb.shape[1], **self.to_json(result)}, indent=2)
        return [out / "overlay.png", out / "result.json"]


def predictor_class(task: str) -> type[Predictor]:
    """The predictor of a task family (the ``api_class`` its engine module names)."""
    return globals()[get_task(task).api_class]


class Grounder(Predictor):
    """Panoptic narrative grounding: a mask for every phrase of a caption.

    Args:
        model: a PPMN or DRMN :class:`GroundingModel`.
        resize: how images are sized for the model (the one it was trained with).
        device: where the model runs (default: CUDA when available).
    """

    task = "grounding"
    title = "Narrative grounding"
    region_name = "phrase"
    takes_spans = True
    text_name = "caption"
    text_hint = ("Mark the phrases to ground with [brackets]. Without brackets, spaCy's noun chunks "
                 "are the phrases (when spaCy and an English model are installed).")

    def __init__(self, model: GroundingModel, resize: ResizeConfig | None = None,
                 device: str | torch.device | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.resize = resize or ResizeConfig()
        self._image: dict[str, Any] | None = None

    @classmethod
    def from_model(cls, model: GroundingModel, cfg: Any,
                   device: str | torch.device | None = None) -> "Grounder":
        return cls(model, cfg.data.resize, device)

    # --- one image, many captions ---------------------------------------------------------------

    @torch.no_grad()
    def set_image(self, image: ImageLike) -> None:
        """Encode ``image`` once; the following :meth:`ground` calls reuse its features."""
        rgb = as_rgb(image)
        self._check_domain(rgb)
        tensor, size = self._prepare(rgb)
        padded = pad_batch([tensor]).to(self.device)
        self._image = {"rgb": rgb, "input_size": size, "input": padded,
                       "features": self.model.encode_images(padded, [size])}

    @torch.no_grad()
    def ground(self, caption: str, spans: Sequence[tuple[int, int]] | None = None,
               return_logits: bool = False) -> GroundingResult:
        """Masks of the phrases of ``caption`` on the image given to :meth:`set_image`.

        Returns ``{"caption", "phrases", "spans", "masks" (N, H, W) bool, "scores" (N,)}`` with
        spans into the returned caption (brackets removed) and masks at the image's size.
        ``return_logits`` (segment-anything's name): also ``"probs" (N, H, W) float32``, the soft
        maps before thresholding, as probabilities (``masks == probs > model.cfg.threshold``).
        """
        if self._image is None:
            raise InputError("call set_image(image) before ground(caption)")
        caption, found = caption_phrases(caption, spans)
        probs = self.model.phrase_maps(self._image["features"], [caption], [found])
        return self.model.postprocess(probs, [caption], [found], [self._image["input_size"]],
                                      [self._image["rgb"].shape[:2]], return_logits,
                                      self._image["input"])[0]

    # --- batches ----------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike], captions: Sequence[str],
                 return_logits: bool = False) -> list[GroundingResult]:
        """Ground ``captions[i]`` (phrases marked with brackets) on ``images[i]``; one dict each
        (with ``"probs"`` when ``return_logits``, as :meth:`ground`).

        Empty lists give ``[]`` (the model does not run), as for every predictor's batch call."""
        if len(images) != len(captions):
            raise InputError(f"{len(images)} images but {len(captions)} captions")
        if not images:
            return []
        rgbs = [as_rgb(im) for im in images]
        for rgb in rgbs:
            self._check_domain(rgb)
        prepared = [self._prepare(rgb) for rgb in rgbs]
        parsed = [caption_phrases(c) for c in captions]
        batch = {"images": pad_batch([t for t, _ in prepared]).to(self.device),
                 "captions": [c for c, _ in parsed], "spans": [s for _, s in parsed],
                 "image_sizes": [size for _, size in prepared],
                 "orig_sizes": [rgb.shape[:2] for rgb in rgbs]}
        return self.model.predict(batch, return_logits)

    def _prepare(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        size = target_size(*rgb.shape[:2], self.resize)
        return image_to_tensor(rgb, size), size

    # --- one image to files (``groundkit predict``) ------------------------------------------------

    def predict_one(self, image: ImageLike, text: str | None = None,
                    spans: Sequence[tuple[int, int]] | None = None) -> GroundingResult:
        """:meth:`ground` ``text`` on ``image``; ``spans`` as :meth:`ground` takes them."""
        if not text:
            raise InputError("a caption is required for grounding, e.g. "
                             "--caption 'There is [a red circle] next to [the grass].'")
        self.set_image(image)
        return self.ground(text, spans)

    def draw(self, image: np.ndarray, result: GroundingResult, labels: bool = True) -> Any:
        return overlay_grounding(image, result.caption, result.spans, result.masks, result.scores,
                                 labels=labels)

    def to_json(self, result: GroundingResult) -> dict[str, Any]:
        """The caption and its phrases with the keys of grounding prediction files
        (``segment_index`` = the phrase's index, ``utterance``, ``score``, ``mask`` RLE) and the
        phrase's character ``span``."""
        return {"caption": result.caption,
                "phrases": [{**phrase_record(k, p, sc, m), "span": list(s)}
                            for k, (p, s, sc, m) in enumerate(zip(result.phrases, result.spans,
                                                                  result.scores, result.masks))]}

    def describe(self, result: GroundingResult) -> list[str]:
        return [f"{phrase!r:40} score {score:.3f}  area {int(mask.sum())} px"
                for phrase, score, mask in zip(result.phrases, result.scores, result.masks)]

    def regions(self, result: GroundingResult) -> list[Region]:
        colours = phrase_colors(len(result.phrases))
        return [Region(p, np.asarray(m, bool), c, float(sc), tuple(sp)) for p, m, c, sc, sp
                in zip(result.phrases, result.masks, colours, result.scores, result.spans)]

    def text_of(self, result: GroundingResult) -> str:
        return result.caption


class Segmenter(Predictor):
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

    task = "panoptic"
    title = "Panoptic segmentation"
    region_name = "segment"

    def __init__(self, model: PanopticModel, resize: ResizeConfig | None = None,
                 categories: dict[int, Category] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.resize = resize or ResizeConfig()
        self.categories = categories or {}

    @classmethod
    def from_model(cls, model: PanopticModel, cfg: Any,
                   device: str | torch.device | None = None) -> "Segmenter":
        return cls(model, cfg.data.resize, model_categories(cfg), device)

    def segment(self, image: ImageLike, return_logits: bool = False) -> PanopticResult:
        """The panoptic map of one image: ``id_map (H, W) int64`` at the image's size (0 = void)
        and ``segments_info [{"id", "category_id", "isthing", "score"}]``; a result reads like a
        dict, as :class:`Grounder`'s (``result["id_map"]``, ``dict(result)``).

        ``return_logits`` (segment-anything's name): also ``probs (S, H, W) float32``, row k the
        probability of ``segments_info[k]`` at each pixel before the argmax that made ``id_map``
        (the softmax over the model's panoptic channels; models with ``merge='heuristic'`` have
        none and raise a ConfigError)."""
        return self([image], return_logits)[0]

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike], return_logits: bool = False
                 ) -> list[PanopticResult]:
        """:meth:`segment` of every image, run as one padded batch; ``[]`` for no images."""
        if not images:
            return []
        rgbs = [as_rgb(im) for im in images]
        batch, sizes = self._batch(rgbs)
        return self.model.predict(batch, sizes, [rgb.shape[:2] for rgb in rgbs], return_logits)

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

    @torch.no_grad()
    def candidates(self, image: ImageLike, score_thresh: float = 0.05, roi_size: int = 7
                   ) -> dict[str, torch.Tensor]:
        """The detector's candidates on one image before NMS: every point whose best class scores
        above ``score_thresh`` (the first stage of two-stage referring; VL-NMS uses 0.05).

        Returns tensors on :attr:`device`, N rows each (N = 0 when nothing scores above the
        threshold): ``boxes (N, 4)`` xyxy in image pixels, ``scores (N, K)`` the detector's score
        of each thing class, ``confidence (N,)`` their maximum, ``classes (N,)``,
        ``category_ids (N,)``, ``centerness (N,)``, ``levels (N,)`` (FPN level of the point),
        ``roi_features (N, C, roi_size, roi_size)`` and ``roi_boxes (N, 4)`` (in model-input
        pixels). :func:`~groundkit.models.referring.proposals.baseline_proposals` keeps the best k
        after per-class NMS. See :meth:`PanopticModel.candidates
        <groundkit.models.panoptic.model.PanopticModel.candidates>`.
        """
        rgb = as_rgb(image)
        batch, sizes = self._batch([rgb])
        return self.model.candidates(batch, sizes, [rgb.shape[:2]], score_thresh, roi_size)[0]

    def _batch(self, rgbs: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resized, normalised and padded ``(B, 3, H, W)`` and the size of each image inside."""
        for rgb in rgbs:
            self._check_domain(rgb)
        sizes = [target_size(*rgb.shape[:2], self.resize) for rgb in rgbs]
        tensors = [image_to_tensor(rgb, size) for rgb, size in zip(rgbs, sizes)]
        return pad_batch(tensors, self.resize.size_divisor).to(self.device), sizes

    # --- one image to files (``groundkit predict``) ------------------------------------------------

    def predict_one(self, image: ImageLike, text: str | None = None) -> PanopticResult:
        if text:
            raise InputError("panoptic segmentation takes no caption")
        return self.segment(image)

    def draw(self, image: np.ndarray, result: PanopticResult, labels: bool = True) -> Any:
        return overlay_panoptic(image, result.id_map, result.segments_info, self.categories,
                                labels=labels)

    def to_json(self, result: PanopticResult) -> dict[str, Any]:
        """``segments_info`` with the keys of COCO panoptic prediction files (``id``,
        ``category_id``, ``area``, ``bbox`` xywh, ``iscrowd``, ``score``), and ``isthing`` and
        the ``category`` name for people."""
        return {"segments_info": [
            {**record, "isthing": info["isthing"],
             "category": self.categories[info["category_id"]].name}
            for record, info in zip(panoptic_segments_json(result), result.segments_info)]}

    def describe(self, result: PanopticResult) -> list[str]:
        return [f"segment {s['id']:3d}  {s['category']:12} score {s['score']:.3f}  "
                f"area {s['area']} px" for s in self.to_json(result)["segments_info"]]

    def regions(self, result: PanopticResult) -> list[Region]:
        colours = segment_colours(result.segments_info, self.categories)
        return [Region(self.categories[s["category_id"]].name, result.id_map == s["id"], c,
                       None if s.get("score") is None else float(s["score"]))
                for s, c in zip(result.segments_info, colours)]

    def save(self, image: ImageLike, result: PanopticResult, out_dir: str | Path) -> list[Path]:
        """As :meth:`Predictor.save`, and ``out_dir/panoptic.png`` (COCO panoptic ids)."""
        written = super().save(image, result, out_dir)
        write_segment_png(Path(out_dir) / "panoptic.png", result.id_map)
        return written + [Path(out_dir) / "panoptic.png"]


class Referrer(Predictor):
    """Referring expressions: the box and mask of the one object an expression describes.

    >>> r = Referrer.from_pretrained("pbrec-synthetic")
    >>> r.set_image("scene.png")                       # encoded once
    >>> out = r.refer("the red circle left of the star")
    >>> out.box, out.mask.shape, out.proposals.shape   # (4,) xyxy pixels, (H, W), (k, 4)

    Args:
        model: a :class:`~groundkit.models.referring.pbrec.PBRECModel` or a
            :class:`~groundkit.models.referring.vlnms_model.VLNMSModel` (its top proposal).
        input_size: the square side images are letterboxed to (the one it was trained with).
        device: where the model runs (default: CUDA when available).
    """

    task = "referring"
    title = "Referring expressions"
    region_name = "referent"
    text_name = "expression"
    text_hint = "One expression that names one object, e.g. 'the red circle left of the star'."

    def __init__(self, model: PBRECModel, input_size: int,
                 device: str | torch.device | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.input_size = input_size
        self._image: dict[str, Any] | None = None

    @classmethod
    def from_model(cls, model: PBRECModel, cfg: Any,
                   device: str | torch.device | None = None) -> "Referrer":
        return cls(model, cfg.data.input_size, device)

    @torch.no_grad()
    def set_image(self, image: ImageLike) -> None:
        """Letterbox and encode ``image`` once; :meth:`refer` calls reuse its features."""
        rgb = as_rgb(image)
        self._check_domain(rgb)
        tensor, scale, size = letterbox(rgb, self.input_size)
        self._image = {"rgb": rgb, "scale": scale, "size": size,
                       "features": self.model.encode_images(tensor[None].to(self.device))}

    @torch.no_grad()
    def refer(self, expression: str) -> ReferringResult:
        """The referent of ``expression`` on the image given to :meth:`set_image`: ``box (4,)``
        xyxy and ``mask (H, W) bool`` at the image's size, ``score``, the top-k ``proposals``."""
        if self._image is None:
            raise InputError("call set_image(image) before refer(expression)")
        im = self._image
        return self.model.refer(im["features"], [_expression(expression)], [im["size"]],
                                [im["rgb"].shape[:2]], [im["scale"]])[0]

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike], expressions: Sequence[str]
                 ) -> list[ReferringResult]:
        """The referent of ``expressions[i]`` on ``images[i]``, one result each; ``[]`` for empty
        lists."""
        if len(images) != len(expressions):
            raise InputError(f"{len(images)} images but {len(expressions)} expressions")
        if not images:
            return []
        rgbs = [as_rgb(im) for im in images]
        for rgb in rgbs:
            self._check_domain(rgb)
        boxed = [letterbox(rgb, self.input_size) for rgb in rgbs]
        batch = {"images": torch.stack([t for t, _, _ in boxed]).to(self.device),
                 "expressions": [_expression(e) for e in expressions],
                 "image_sizes": [size for _, _, size in boxed],
                 "orig_sizes": [rgb.shape[:2] for rgb in rgbs],
                 "scales": [scale for _, scale, _ in boxed]}
        return self.model.predict(batch)

    # --- one image to files (``groundkit predict``) ------------------------------------------------

    def predict_one(self, image: ImageLike, text: str | None = None) -> ReferringResult:
        if not text:
            raise InputError("an expression is required, e.g. --expression 'the red circle'")
        self.set_image(image)
        return self.refer(text)

    def draw(self, image: np.ndarray, result: ReferringResult, labels: bool = True) -> Any:
        return overlay_referring(image, result.expression, result.box, result.mask,
                                 result.proposals, result.score, labels=labels)

    def to_json(self, result: ReferringResult) -> dict[str, Any]:
        out = {"expression": result.expression,
               "box": [float(v) for v in result.box], "score": float(result.score),
               "proposals": [] if result.proposals is None else result.proposals.tolist()}
        if result.mask is not None:
            out["mask"] = encode_rle(result.mask)
        return out

    def describe(self, result: ReferringResult) -> list[str]:
        x1, y1, x2, y2 = (float(v) for v in result.box)
        area = "" if result.mask is None else f", mask {int(result.mask.sum())} px"
        return [f"box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) score {result.score:.3f}{area}"]

    def regions(self, result: ReferringResult) -> list[Region]:
        mask = None if result.mask is None else np.asarray(result.mask, bool)
        box = tuple(float(v) for v in result.box)
        return [Region(result.expression, mask, phrase_colors(1)[0], float(result.score),
                       (0, len(result.expression)), box)]

    def text_of(self, result: ReferringResult) -> str:
        return result.expression


def _expression(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"expression: expected a non-empty string, got {text!r}")
    return text.strip()


def model_categories(cfg: Any) -> dict[int, Category]:
    """``{category_id: Category}`` of every class a panoptic model predicts: the checkpoint's
    own names and colours, or numbered names in distinct colours when it has none."""
    known = {c.id: c for c in cfg.categories}
    ids = [*cfg.model.thing_ids, *cfg.model.stuff_ids]
    colours = phrase_colors(len(ids))
    out = {}
    for k, cid in enumerate(ids):
        isthing = k < cfg.model.num_things
        out[cid] = known.get(cid) or Category(cid, f"{'thing' if isthing else 'stuff'} {cid}",
                                              isthing, colours[k])
    return out
