"""VL-NMS as a model of the referring family: query-aware proposals from a frozen detector.

Ding et al., "VL-NMS" (TOMM 2023; Ref-NMS, AAAI 2021). The first stage of a two-stage referring
method: every candidate of a frozen detector (the points of a trained panoptic model's FCOS above
the class-score threshold ``delta``, :meth:`PanopticModel.candidates_from_features
<groundkit.models.panoptic.model.PanopticModel.candidates_from_features>`) gets a relatedness ``r``
to the expression (:class:`~groundkit.models.referring.vlnms.RelatednessFC` or ``Trans``); per-class
NMS ranked by ``r * c`` keeps the ``top_k`` proposals a second-stage matcher chooses among.

What this model returns per expression (:class:`~groundkit.structures.ReferringResult`):
``proposals`` the top ``top_k`` boxes, best first; ``box`` the first of them (VL-NMS alone, with no
matcher, answers with its top-ranked proposal: a weak REC baseline, not the paper's numbers);
``score`` its ``r * c``; ``mask`` (``masks: true``) its pixels in the panoptic model's argmax over
P with the proposals as the detections (:meth:`PanopticModel.detection_masks
<groundkit.models.panoptic.model.PanopticModel.detection_masks>`: the masks the panoptic model
paints its own detections with), so RES scores come out too. ``rank_by: confidence`` ranks by the
detector's confidence alone: the query-agnostic baseline's proposals, from the same candidates.

Parts and checkpoints: the panoptic model is loaded from ``proposal_source`` (a bundled name or a
checkpoint path, :func:`~groundkit.models.panoptic.model.load_panoptic`) and the text encoder from
its folder; both are frozen and left out of this model's checkpoints, which hold the relatedness
module only. Loading a VL-NMS checkpoint reads ``proposal_source`` again: it must still name the
same panoptic model.

Batches (:func:`groundkit.data.referring.collate_referring`): one row per expression; the
expressions of one image share its candidates, computed once (rows with the same ``image_ids``
and the same pixels). Training reads ``box`` (the referent) and ``context_boxes`` (the contextual
objects, input pixels), unless ``contextual: none``. An image with no candidate gives an
expression no proposal: an empty ``proposals (0, 4)``, a zero ``box`` and ``score`` 0 and an empty
mask (a miss in REC and RES), and no loss term in training.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from groundkit.errors import ConfigError
from groundkit.models.panoptic.model import PanopticModel, load_panoptic
from groundkit.models.referring.proposals import painting_order, select_proposals
from groundkit.models.referring.vlnms import (
    RelatednessFC,
    RelatednessTrans,
    apply_box_deltas,
    box_deltas,
    pad_rows,
)
from groundkit.models.referring.vlnms_losses import (
    bce_loss,
    box_regression_loss,
    ranking_loss,
    relatedness_targets,
)
from groundkit.ops import roi_align
from groundkit.structures import ReferringResult
from groundkit.text.encoder import TextEncoder, TextFeatureCache, leave_out_of_checkpoints
from groundkit.vision.backbone import pad_to_multiple


@dataclass
class VLNMSConfig:
    """Defaults are the paper's (delta 0.05, gamma 0.4, per-class NMS 0.3, ranking margin 0.1 over
    the top-100 hard negatives); ``visual_dim`` 1024 is detectron2's FPN box head."""

    proposal_source: str = "panoptic-synthetic"   # a panoptic checkpoint: bundled name or path
    text_encoder: str | None = None    # a local Hugging Face folder; None = bundled all-MiniLM-L6-v2
    variant: Literal["fc", "trans"] = "fc"
    loss: Literal["bce", "ranking"] = "bce"
    # The positives beside the referent: the pseudo ground truth of the expression's nouns (gamma:
    # its cosine threshold), the data's own context_ann_ids (the synthetic refs), or none. YAML
    # reads an unquoted true / false as booleans: they mean "true" / "none".
    contextual: Literal["pseudo", "true", "none"] | bool = "pseudo"
    gamma: float = 0.4
    delta: float = 0.05                # candidates: the detector's best class score above this
    roi_size: int = 7
    visual_dim: int = 1024             # the region feature's width
    dim: int = 256                     # the Trans variant's transformer
    layers: int = 2
    heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    margin: float = 0.1                # ranking loss (Eq. 5)
    top_h: int = 100
    box_weight: float = 1.0            # the Trans variant's box regression (Eq. 7)
    nms_thresh: float = 0.3            # per-class NMS, as the official Ref-NMS code
    top_k: int = 10                    # proposals kept per expression (the paper: about 8-10)
    rank_by: Literal["relatedness", "confidence"] = "relatedness"  # confidence: the baseline
    masks: bool = True                 # the top proposal's mask from the panoptic model
    # Each candidate's RoI feature also gets 3 channels of the image's own pixels RoIAlign-ed over
    # its box (the region's colours). A detector trained on object categories alone may drop
    # colour, which expressions name (PBREC's `cell_colours`: benchmarks/probe_grid_colour.py).
    region_colours: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.contextual, bool):
            self.contextual = "true" if self.contextual else "none"
        choices = {"variant": ("fc", "trans"), "loss": ("bce", "ranking"),
                   "contextual": ("pseudo", "true", "none"),
                   "rank_by": ("relatedness", "confidence")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"vlnms.{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if self.top_k < 1:
            raise ConfigError(f"vlnms.top_k: must be >= 1, got {self.top_k}")
        if not 0 <= self.delta < 1:
            raise ConfigError(f"vlnms.delta: expected a score threshold in [0, 1), got {self.delta}")
        if self.variant == "trans" and self.dim % self.heads:
            raise ConfigError(f"vlnms: dim ({self.dim}) must be divisible by heads ({self.heads})")


class VLNMSModel(nn.Module):
    """Frozen panoptic detector + frozen text encoder (cached features) + relatedness module."""

    def __init__(self, cfg: VLNMSConfig, panoptic: PanopticModel, text_encoder: TextEncoder,
                 relatedness: RelatednessFC | RelatednessTrans) -> None:
        super().__init__()
        if not text_encoder.frozen:
            raise ConfigError("vlnms: the text encoder must be frozen (its features are cached)")
        self.cfg = cfg
        self.panoptic = panoptic.requires_grad_(False).eval()
        self.text_encoder = text_encoder
        self.text_cache = TextFeatureCache(text_encoder)
        self.relatedness = relatedness
        leave_out_of_checkpoints(self, "panoptic")
        leave_out_of_checkpoints(self, "text_encoder")

    def train(self, mode: bool = True) -> "VLNMSModel":
        super().train(mode)
        self.panoptic.eval()  # frozen: its normalisation statistics and outputs never change
        return self

    # --- shared pieces -------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> dict[str, Any]:
        """images ``(I, 3, S, S)`` -> ``{"features": the panoptic backbone's p2..p5, "padded":
        (H, W)}``, the input zero-padded to a multiple of 32 first (the detector's strides; the
        letterbox pads with zeros too)."""
        return encode_for_proposals(self.panoptic, images)

    def encode_text(self, expressions: list[str]) -> tuple[Tensor, Tensor]:
        """Token features ``(B, L, D)`` and mask ``(B, L)`` (True on real tokens)."""
        text = self.text_cache.get_or_compute(expressions)
        device = self.relatedness.region.fc.weight.device
        return text.features.to(device), text.mask.to(device)

    def candidates(self, encoded: dict[str, Any], sizes: list[tuple[int, int]]
                   ) -> list[dict[str, Tensor]]:
        """The detector candidates of each encoded image (boxes in input pixels, clipped to
        ``sizes``), :meth:`PanopticModel.candidates_from_features`; with ``region_colours`` their
        ``roi_features`` have 3 more channels, :func:`region_colours`."""
        candidates = self.panoptic.candidates_from_features(encoded["features"], sizes, None,
                                                            self.cfg.delta, self.cfg.roi_size)
        if self.cfg.region_colours:
            for i, cand in enumerate(candidates):
                colours = region_colours(encoded["pixels"][i:i + 1], cand["roi_boxes"], self.cfg.roi_size)
                cand["roi_features"] = torch.cat([cand["roi_features"], colours], dim=1)
        return candidates

    def relate(self, candidates: list[dict[str, Tensor]], sizes: list[tuple[int, int]],
               expressions: list[str], image_index: Tensor | None) -> dict[str, Tensor]:
        """The relatedness module on candidates padded per image: ``logits (B, N)`` (and the Trans
        variant's ``deltas (B, N, 4)``), with ``boxes (I, N, 4)`` and ``mask (I, N)``."""
        words, word_mask = self.encode_text(expressions)
        roi, mask = pad_rows([c["roi_features"] for c in candidates])
        boxes, _ = pad_rows([c["boxes"] for c in candidates])
        if self.cfg.variant == "fc":
            out = self.relatedness(roi, mask, words, word_mask, image_index)
        else:
            size = torch.tensor(sizes, dtype=boxes.dtype, device=boxes.device).reshape(-1, 2)
            out = self.relatedness(roi, mask, boxes, size, words, word_mask, image_index)
        return {**out, "boxes": boxes, "mask": mask}

    # --- training ------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor] | list[ReferringResult]:
        """Training: a dict of losses with ``"loss"``. Eval: :meth:`predict`."""
        if not self.training:
            return self.predict(batch)
        cfg = self.cfg
        rows, image_index = unique_images(batch["images"], batch.get("image_ids"))
        sizes = [tuple(batch["image_sizes"][r]) for r in rows]
        with torch.no_grad():
            candidates = self.candidates(self.encode_images(batch["images"][rows]), sizes)
        out = self.relate(candidates, sizes, batch["expressions"], image_index)
        contexts = batch.get("context_boxes") if cfg.contextual != "none" else None
        targets = [relatedness_targets(candidates[i]["boxes"], batch["box"][b].to(out["boxes"]),
                                       None if contexts is None else contexts[b])
                   for b, i in enumerate(image_index.tolist())]
        mask = out["mask"][image_index]
        if cfg.loss == "bce":
            labels, _ = pad_rows([t["labels"] for t in targets])
            loss = bce_loss(out["logits"], labels, mask)
        else:
            rho, _ = pad_rows([t["rho"] for t in targets])
            loss = ranking_loss(out["logits"], rho, mask, cfg.margin, cfg.top_h)
        losses = {"loss_relatedness": loss}
        if cfg.variant == "trans":
            labels, _ = pad_rows([t["labels"] for t in targets])
            matched, _ = pad_rows([t["matched_boxes"] for t in targets])
            positive = (labels > 0) & mask
            target_deltas = box_deltas(out["boxes"][image_index], matched)  # read on positives only
            losses["loss_box"] = box_regression_loss(out["deltas"], target_deltas, positive)
            loss = loss + cfg.box_weight * losses["loss_box"]
        losses["loss"] = loss
        return losses

    # --- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> list[ReferringResult]:
        """One :class:`ReferringResult` per expression of the batch, in original image pixels."""
        rows, image_index = unique_images(batch["images"], batch.get("image_ids"))
        return self.refer(self.encode_images(batch["images"][rows]), batch["expressions"],
                          batch["image_sizes"], batch["orig_sizes"], batch["scales"], image_index)

    @torch.no_grad()
    def refer(self, encoded: dict[str, Any], expressions: list[str],
              image_sizes: list[tuple[int, int]], orig_sizes: list[tuple[int, int]],
              scales: list[float], image_index: Tensor | None = None) -> list[ReferringResult]:
        """The proposals and referent of each expression on its image of ``encoded``
        (:meth:`encode_images`, computed once per image and reusable for many expressions).

        image_index: ``(B,)`` the encoded image of each expression (None: expression ``b`` is on
        image ``b``); image_sizes, orig_sizes: per expression. ``scales`` is unused (boxes go back
        to the original pixels by the ratio of ``orig_sizes`` to ``image_sizes``, as the panoptic
        model's boxes and masks do); it keeps PBREC's signature for the Referrer API.
        """
        image_index = self._image_index(encoded, expressions, image_index)
        chosen = self.propose(encoded, expressions, image_sizes, image_index)
        masks = self._masks(encoded, chosen, image_index, image_sizes, orig_sizes)
        results = []
        for b, (p, size, orig) in enumerate(zip(chosen, image_sizes, orig_sizes)):
            (h, w), (h0, w0) = size, orig
            proposals = (p["boxes"] * p["boxes"].new_tensor([w0 / w, h0 / h] * 2)).cpu().numpy()
            found = len(proposals) > 0
            results.append(ReferringResult(
                proposals[0] if found else np.zeros(4), float(p["criterion"][0]) if found else 0.0,
                masks[b], proposals.astype(np.float64), expressions[b]))
        return results

    def _image_index(self, encoded: dict[str, Any], expressions: list[str],
                     image_index: Tensor | None) -> Tensor:
        device = encoded["features"]["p2"].device
        return (torch.arange(len(expressions)) if image_index is None else image_index).to(device)

    @torch.no_grad()
    def propose(self, encoded: dict[str, Any], expressions: list[str],
                image_sizes: list[tuple[int, int]], image_index: Tensor | None = None
                ) -> list[dict[str, Tensor]]:
        """The ``top_k`` proposals of each expression, best first: per expression the
        :func:`~groundkit.models.referring.proposals.select_proposals` dict (``boxes (P, 4)`` xyxy
        in input pixels, ``classes``, ``confidence``, ``criterion``, ``index``; P = 0 on an image
        without candidates). What a second-stage matcher is given; ``rank_by: confidence`` (the
        query-agnostic baseline) never runs the relatedness module.

        encoded: :meth:`encode_images`; image_sizes: per expression; image_index: ``(B,)`` the
        encoded image of each expression (None: expression ``b`` is on image ``b``).
        """
        cfg = self.cfg
        n_images = len(encoded["features"]["p2"])
        image_index = self._image_index(encoded, expressions, image_index)
        rows = image_index.tolist()
        first = {i: b for b, i in reversed(list(enumerate(rows)))}
        sizes = [tuple(image_sizes[first[i]]) for i in range(n_images)]
        candidates = self.candidates(encoded, sizes)
        baseline = cfg.rank_by == "confidence"
        out = None if baseline else self.relate(candidates, sizes, expressions, image_index)
        chosen = []
        for b, i in enumerate(rows):
            cand = candidates[i]
            n = len(cand["boxes"])
            boxes = cand["boxes"]
            if cfg.variant == "trans" and not baseline:  # the refined boxes, inside the image
                h, w = sizes[i]
                boxes = apply_box_deltas(boxes, out["deltas"][b, :n])
                boxes = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w, h, w, h]))
            criterion = (cand["confidence"] if baseline
                         else out["logits"][b, :n].sigmoid() * cand["confidence"])
            chosen.append(select_proposals({"boxes": boxes, "classes": cand["classes"],
                                            "confidence": cand["confidence"]},
                                           criterion, cfg.top_k, cfg.nms_thresh))
        return chosen

    def _masks(self, encoded: dict[str, Any], chosen: list[dict[str, Tensor]], image_index: Tensor,
               image_sizes: list[tuple[int, int]], orig_sizes: list[tuple[int, int]]
               ) -> list[np.ndarray | None]:
        """The top proposal's mask of each expression, painted with the other proposals competing
        (:func:`painting_order`; ``(H0, W0) bool``, empty without a proposal), or None per
        expression without ``masks``."""
        if not self.cfg.masks:
            return [None] * len(chosen)
        orders = [painting_order(p["boxes"], 0) for p in chosen]  # the top one and its rivals
        dets = [{"boxes": p["boxes"][o], "scores": p["confidence"][o], "classes": p["classes"][o]}
                for p, o in zip(chosen, orders)]
        painted = self.panoptic.detection_masks(encoded["features"], dets, encoded["padded"],
                                                [tuple(s) for s in image_sizes],
                                                [tuple(s) for s in orig_sizes], image_index)
        return [m[0].cpu().numpy() if len(m) else np.zeros(tuple(orig), dtype=bool)
                for m, orig in zip(painted, orig_sizes)]


def encode_for_proposals(panoptic: PanopticModel, images: Tensor) -> dict[str, Any]:
    """What the two-stage models read of an image batch ``(I, 3, S, S)``: ``{"features": the
    panoptic backbone's p2..p5, "padded": (H, W), "pixels": the padded images}``, the input
    zero-padded to a multiple of 32 first (the detector's strides; the letterbox pads with zeros
    too)."""
    padded = pad_to_multiple(images, 32)
    return {"features": panoptic.backbone(padded), "padded": tuple(padded.shape[-2:]),
            "pixels": padded}


def region_colours(pixels: Tensor, boxes: Tensor, roi_size: int) -> Tensor:
    """The image's own pixels over each box: ``pixels (1, 3, H, W)``, ``boxes (N, 4)`` xyxy in its
    pixels -> ``(N, 3, roi_size, roi_size)`` (RoIAlign at scale 1)."""
    rois = torch.cat([boxes.new_zeros((len(boxes), 1)), boxes], dim=1)
    return roi_align(pixels, rois, roi_size, 1.0, 2)


def unique_images(images: Tensor, keys: list[Any] | None = None) -> tuple[list[int], Tensor]:
    """The distinct images of a batch: ``rows`` (the first row of each) and ``image_index (B,)``
    long, the position in ``rows`` of each row's image. Two rows are one image when their
    ``keys`` (e.g. ``image_ids``; None: not compared) and their pixels are equal (an augmented
    copy of an image is another image)."""
    rows: list[int] = []
    index = []
    for b in range(len(images)):
        same = next((k for k, r in enumerate(rows)
                     if (keys is None or keys[r] == keys[b]) and torch.equal(images[r], images[b])),
                    None)
        if same is None:
            rows.append(b)
            same = len(rows) - 1
        index.append(same)
    return rows, torch.tensor(index, dtype=torch.long, device=images.device)


def build_vlnms(cfg: VLNMSConfig, *, panoptic: PanopticModel | None = None,
                text_encoder: TextEncoder | None = None) -> VLNMSModel:
    """Compose VL-NMS; ``panoptic`` and ``text_encoder`` may be parts another model owns (loaded
    from ``cfg.proposal_source`` and ``cfg.text_encoder`` when not given)."""
    panoptic = panoptic if panoptic is not None else load_panoptic(cfg.proposal_source)
    text_encoder = text_encoder or TextEncoder(cfg.text_encoder, freeze=True)
    channels = panoptic.cfg.backbone.fpn_channels + (3 if cfg.region_colours else 0)
    if cfg.variant == "fc":
        relatedness = RelatednessFC(channels, cfg.roi_size, text_encoder.dim, cfg.visual_dim)
    else:
        relatedness = RelatednessTrans(channels, cfg.roi_size, text_encoder.dim, cfg.dim, cfg.layers,
                                       cfg.heads, cfg.ffn_dim, cfg.dropout, cfg.visual_dim)
    return VLNMSModel(cfg, panoptic, text_encoder, relatedness)


def load_vlnms(name_or_path: str | Path, *, panoptic: PanopticModel | None = None,
               text_encoder: TextEncoder | None = None, **options: Any) -> VLNMSModel:
    """A trained VL-NMS model from a groundkit checkpoint (a bundled name such as
    ``vlnms-fc-synthetic``, a checkpoint folder or its weights file), frozen and in eval mode: the
    proposal source of a second-stage matcher. ``panoptic`` and ``text_encoder``: parts to share
    (they must be the ones the checkpoint names: the caller checks); ``options``: inference options
    of its config (e.g. ``top_k``). ConfigError for a checkpoint of another model type."""
    from groundkit.models import load_trained

    return load_trained(name_or_path, "vlnms", "a relatedness module that ranks proposals",
                        lambda cfg: replace(cfg, **options), panoptic=panoptic,
                        text_encoder=text_encoder)
