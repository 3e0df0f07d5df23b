"""The two-stage referring pipeline: proposals (ground truth, query-agnostic or VL-NMS) and a matcher.

A model of the referring family (``model_type: matcher``). Training: the matcher
(:class:`~groundkit.models.referring.matcher.MAttNetScorer`) chooses the referent among the
ground-truth boxes of its image, as two-stage methods train. Inference: each expression gets
``top_k`` proposals from ``proposals``, and the matcher picks one:

- ``gt``: the image's ground-truth boxes (every object; the matcher's ceiling; needs the data's
  boxes, so the Python API on a bare image cannot use it);
- ``baseline``: the query-agnostic proposals: the frozen panoptic model's candidates above
  ``delta``, per-class NMS ``nms_thresh``, the ``top_k`` most confident;
- any other value: a VL-NMS checkpoint (bundled name or path, ``model_type: vlnms``), its
  relatedness x confidence ranking, the ``top_k`` best (:meth:`VLNMSModel.propose
  <groundkit.models.referring.vlnms_model.VLNMSModel.propose>`).

The result (:class:`~groundkit.structures.ReferringResult`) carries ``proposals`` (the boxes the
matcher was given, in their proposal order), ``box`` the chosen one, ``score`` the matcher's softmax
probability of it, and ``mask`` (``masks: true``) its pixels in the panoptic model's argmax over P
with the proposals as the detections, the chosen one first (as VL-NMS paints its own). An expression
without a proposal gets a zero box, score 0 and an empty mask (a miss).

Parts: the panoptic model (``proposal_source``) gives the region features (multi-level RoIAlign over
its frozen FPN) and the candidates; the text encoder is frozen with cached features. Both are left
out of the checkpoint, which holds the region head and the scorer only. A VL-NMS proposal
checkpoint shares them when it names the same ones, else loads its own.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from groundkit.errors import ConfigError, InputError
from groundkit.models.panoptic.mask_head import multilevel_roi_align
from groundkit.models.panoptic.model import PanopticModel, load_panoptic
from groundkit.models.referring.matcher import MAttNetScorer
from groundkit.models.referring.proposals import painting_order
from groundkit.models.referring.vlnms import RegionHead, pad_rows
from groundkit.models.referring.vlnms_model import (
    VLNMSConfig,
    VLNMSModel,
    build_vlnms,
    encode_for_proposals,
    load_vlnms,
    region_colours,
    unique_images,
)
from groundkit.structures import ReferringResult
from groundkit.text.encoder import TextEncoder, TextFeatureCache, leave_out_of_checkpoints

SPECIAL_PROPOSALS = ("gt", "baseline")


@dataclass
class MatcherConfig:
    """Defaults follow MAttNet where it applies (5 neighbours per module); the baseline's
    candidates are VL-NMS's (delta 0.05, per-class NMS 0.3)."""

    proposal_source: str = "panoptic-synthetic"   # a panoptic checkpoint: bundled name or path
    text_encoder: str | None = None    # a local Hugging Face folder; None = bundled all-MiniLM-L6-v2
    proposals: str = "gt"              # inference: gt | baseline | a VL-NMS checkpoint
    top_k: int = 3                     # proposals per expression (baseline, VL-NMS)
    delta: float = 0.05                # the baseline's candidates
    nms_thresh: float = 0.3
    roi_size: int = 7
    region_colours: bool = True        # the box's own pixels beside its RoI feature (VL-NMS's option)
    visual_dim: int = 256              # the region feature
    dim: int = 256                     # the joint space of each module
    neighbours: int = 5                # MAttNet: 5 same-class objects (location), 5 nearby (relation)
    temperature: float = 0.1           # softmax over the proposals of cosine scores
    masks: bool = True                 # the chosen proposal's mask from the panoptic model

    def __post_init__(self) -> None:
        if not isinstance(self.proposals, str) or not self.proposals.strip():
            raise ConfigError(f"matcher.proposals: expected gt, baseline or a VL-NMS checkpoint, "
                              f"got {self.proposals!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"matcher.top_k: must be a positive integer, got {self.top_k!r}")
        if self.neighbours < 0 or self.temperature <= 0:
            raise ConfigError(f"matcher: neighbours >= 0 and temperature > 0 expected, got "
                              f"{self.neighbours} and {self.temperature}")


class MatcherModel(nn.Module):
    """Frozen panoptic model + frozen text encoder (cached) + region head + MAttNet-style scorer."""

    def __init__(self, cfg: MatcherConfig, panoptic: PanopticModel, text_encoder: TextEncoder) -> None:
        super().__init__()
        if not text_encoder.frozen:
            raise ConfigError("matcher: the text encoder must be frozen (its features are cached)")
        self.cfg = cfg
        self.panoptic = panoptic.requires_grad_(False).eval()
        self.text_encoder = text_encoder
        self.text_cache = TextFeatureCache(text_encoder)
        channels = panoptic.cfg.backbone.fpn_channels + (3 if cfg.region_colours else 0)
        self.region = RegionHead(channels, cfg.roi_size, cfg.visual_dim)
        self.scorer = MAttNetScorer(cfg.visual_dim, text_encoder.dim, cfg.dim, cfg.neighbours,
                                    cfg.temperature)
        leave_out_of_checkpoints(self, "panoptic")
        leave_out_of_checkpoints(self, "text_encoder")
        self._proposers: dict[tuple, VLNMSModel] = {}
        self._warned_categories = False

    def train(self, mode: bool = True) -> "MatcherModel":
        super().train(mode)
        self.panoptic.eval()
        return self

    # --- pieces --------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> dict[str, Any]:
        """images ``(I, 3, S, S)`` -> the panoptic backbone's features (VL-NMS's
        :meth:`~groundkit.models.referring.vlnms_model.VLNMSModel.encode_images`)."""
        return encode_for_proposals(self.panoptic, images)

    def score(self, encoded: dict[str, Any], proposals: list[dict[str, Tensor]],
              image_index: Tensor, image_sizes: list[tuple[int, int]], expressions: list[str]
              ) -> dict[str, Tensor]:
        """The scorer over each expression's proposals (``boxes (P_b, 4)`` input pixels,
        ``labels (P_b,)``): ``logits (B, P)`` (-inf on padding) and the scorer's other outputs."""
        rois = torch.cat([F.pad(p["boxes"], (1, 0), value=float(i))
                          for p, i in zip(proposals, image_index.tolist())])
        roi = multilevel_roi_align(encoded["features"], rois, self.cfg.roi_size)
        if self.cfg.region_colours:
            roi = torch.cat([roi, torch.cat([region_colours(encoded["pixels"][i:i + 1], p["boxes"],
                                                            self.cfg.roi_size)
                                             for p, i in zip(proposals, image_index.tolist())])], dim=1)
        regions, mask = pad_rows(list(self.region(roi).split([len(p["boxes"]) for p in proposals])))
        boxes, _ = pad_rows([p["boxes"] for p in proposals])
        labels, _ = pad_rows([p["labels"] for p in proposals])
        text = self.text_cache.get_or_compute(expressions)
        sizes = torch.tensor(image_sizes, dtype=boxes.dtype, device=boxes.device).reshape(-1, 2)
        return self.scorer(regions, boxes, labels, mask, sizes, text.features.to(boxes.device),
                           text.mask.to(boxes.device))

    # --- training ------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor] | list[ReferringResult]:
        """Training: ``{"loss", "loss_match"}``, the cross-entropy of the referent among the
        image's ground-truth boxes. Eval: :meth:`predict`."""
        if not self.training:
            return self.predict(batch)
        rows, image_index = unique_images(batch["images"], batch.get("image_ids"))
        encoded = self.encode_images(batch["images"][rows])
        proposals = self.gt_proposals(batch)
        out = self.score(encoded, proposals, image_index, batch["image_sizes"], batch["expressions"])
        target = torch.tensor(batch["referent"], device=out["logits"].device)
        loss = F.cross_entropy(out["logits"], target)
        return {"loss": loss, "loss_match": loss.detach()}

    # --- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> list[ReferringResult]:
        """One :class:`ReferringResult` per expression, in original image pixels; ``gt``
        proposals come from the batch's ``boxes``."""
        rows, image_index = unique_images(batch["images"], batch.get("image_ids"))
        gt = self.gt_proposals(batch) if self.cfg.proposals == "gt" else None
        return self.refer(self.encode_images(batch["images"][rows]), batch["expressions"],
                          batch["image_sizes"], batch["orig_sizes"], batch["scales"], image_index, gt)

    @torch.no_grad()
    def refer(self, encoded: dict[str, Any], expressions: list[str],
              image_sizes: list[tuple[int, int]], orig_sizes: list[tuple[int, int]],
              scales: list[float], image_index: Tensor | None = None,
              gt: list[dict[str, Tensor]] | None = None) -> list[ReferringResult]:
        """The referent of each expression among its proposals (the Referrer API's entry point,
        PBREC's signature). gt: per expression the ground-truth proposals (``proposals: gt``);
        ``scales`` is unused (boxes go back by ``orig_sizes / image_sizes``)."""
        device = encoded["features"]["p2"].device
        image_index = (torch.arange(len(expressions)) if image_index is None else image_index).to(device)
        proposals = gt if gt is not None else self.propose(encoded, expressions, image_sizes, image_index)
        has = [len(p["boxes"]) > 0 for p in proposals]
        chosen = [0] * len(proposals)
        probs = [torch.zeros(0)] * len(proposals)
        if any(has):
            keep = [b for b, h in enumerate(has) if h]
            out = self.score(encoded, [proposals[b] for b in keep], image_index[keep],
                             [image_sizes[b] for b in keep], [expressions[b] for b in keep])
            for row, b in enumerate(keep):
                p = out["logits"][row, :len(proposals[b]["boxes"])].softmax(-1)
                chosen[b], probs[b] = int(p.argmax()), p
        masks = self._masks(encoded, proposals, chosen, image_index, image_sizes, orig_sizes)
        results = []
        for b, (p, size, orig) in enumerate(zip(proposals, image_sizes, orig_sizes)):
            (h, w), (h0, w0) = size, orig
            boxes = (p["boxes"] * p["boxes"].new_tensor([w0 / w, h0 / h] * 2)).cpu().numpy()
            box = boxes[chosen[b]] if has[b] else np.zeros(4)
            score = float(probs[b][chosen[b]]) if has[b] else 0.0
            results.append(ReferringResult(box.astype(np.float64), score, masks[b],
                                           boxes.astype(np.float64), expressions[b]))
        return results

    def gt_proposals(self, batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        """The ground-truth boxes of each expression's image as its proposals: ``boxes`` (input
        pixels), ``labels`` (the data's classes) and ``classes`` (the panoptic model's thing label
        of each box's category, for its mask). A category the panoptic model does not know (real
        data with the synthetic detector) is painted as its first thing class, with one warning:
        the boxes, and so REC, are right; those masks are not meaningful."""
        thing = {c: k for k, c in enumerate(self.panoptic.cfg.thing_ids)}
        out = []
        for boxes, labels, ids in zip(batch["boxes"], batch["classes"], batch["category_ids"]):
            classes = [thing.get(int(c), -1) for c in ids]
            if -1 in classes and not self._warned_categories:
                self._warned_categories = True
                unknown = sorted({int(c) for c in ids} - set(thing))
                warnings.warn(f"matcher: ground-truth categories {unknown} "
                              f"are not things of the panoptic model {self.cfg.proposal_source!r}; "
                              "their masks are painted as its first thing class (RES is not "
                              "meaningful for them; REC is)", stacklevel=2)
            out.append({"boxes": boxes, "labels": labels,
                        "classes": torch.tensor([max(c, 0) for c in classes], dtype=torch.long,
                                                device=boxes.device)})
        return out

    def propose(self, encoded: dict[str, Any], expressions: list[str],
                image_sizes: list[tuple[int, int]], image_index: Tensor) -> list[dict[str, Tensor]]:
        """``top_k`` proposals per expression from ``cfg.proposals`` (baseline or a VL-NMS
        checkpoint), with ``labels`` (the detector's classes) for the scorer."""
        if self.cfg.proposals == "gt":
            raise InputError("matcher: proposals=gt needs the data's ground-truth boxes (groundkit "
                             "evaluate on a RefCOCO-format folder); on a bare image use "
                             "proposals=baseline or a VL-NMS checkpoint")
        chosen = self.proposer().propose(encoded, expressions, image_sizes, image_index)
        return [{**p, "labels": p["classes"]} for p in chosen]

    def proposer(self) -> VLNMSModel:
        """The VL-NMS model (or the baseline's confidence ranking) of ``cfg.proposals``, built
        once per (proposals, top_k, delta, nms) and kept out of the checkpoint."""
        cfg = self.cfg
        key = (cfg.proposals, cfg.top_k, cfg.delta, cfg.nms_thresh)
        if key not in self._proposers:
            self._proposers[key] = self._build_proposer()
        return self._proposers[key]

    def _build_proposer(self) -> VLNMSModel:
        cfg = self.cfg
        options = dict(top_k=cfg.top_k, masks=False)
        if cfg.proposals == "baseline":
            base = VLNMSConfig(proposal_source=cfg.proposal_source, text_encoder=cfg.text_encoder,
                               rank_by="confidence", delta=cfg.delta, nms_thresh=cfg.nms_thresh,
                               visual_dim=8, **options)
            model = build_vlnms(base, panoptic=self.panoptic, text_encoder=self.text_encoder)
        else:
            from groundkit.hub import checkpoint_header

            theirs = checkpoint_header(cfg.proposals).get("config", {}).get("model", {})
            if theirs.get("proposal_source", "panoptic-synthetic") != cfg.proposal_source:
                raise ConfigError(f"matcher: proposals {cfg.proposals!r} rank the candidates of "
                                  f"{theirs.get('proposal_source')!r}, this matcher's features and "
                                  f"masks come from {cfg.proposal_source!r}: use a VL-NMS model of "
                                  "the same panoptic model")
            same_text = theirs.get("text_encoder") == cfg.text_encoder
            model = load_vlnms(cfg.proposals, panoptic=self.panoptic,
                               text_encoder=self.text_encoder if same_text else None, **options)
        device = next(self.region.parameters()).device
        return model.to(device).eval()

    def _masks(self, encoded: dict[str, Any], proposals: list[dict[str, Tensor]], chosen: list[int],
               image_index: Tensor, image_sizes: list[tuple[int, int]],
               orig_sizes: list[tuple[int, int]]) -> list[np.ndarray | None]:
        """The chosen proposal's mask per expression, painted with the other proposals competing
        (:func:`painting_order`; ``(H0, W0) bool``, empty without a proposal), or None per
        expression without ``masks``."""
        if not self.cfg.masks:
            return [None] * len(proposals)
        dets = []
        for p, c in zip(proposals, chosen):
            order = painting_order(p["boxes"], c)
            dets.append({"boxes": p["boxes"][order], "classes": p["classes"][order],
                         "scores": p.get("confidence", torch.ones(len(p["boxes"]),
                                                                  device=p["boxes"].device))[order]})
        painted = self.panoptic.detection_masks(encoded["features"], dets, encoded["padded"],
                                                [tuple(s) for s in image_sizes],
                                                [tuple(s) for s in orig_sizes], image_index)
        return [m[0].cpu().numpy() if len(m) else np.zeros(tuple(orig), dtype=bool)
                for m, orig in zip(painted, orig_sizes)]


def build_matcher(cfg: MatcherConfig, *, panoptic: PanopticModel | None = None,
                  text_encoder: TextEncoder | None = None) -> MatcherModel:
    """Compose the matcher; ``panoptic`` and ``text_encoder`` may be parts another model owns."""
    panoptic = panoptic if panoptic is not None else load_panoptic(cfg.proposal_source)
    text_encoder = text_encoder or TextEncoder(cfg.text_encoder, freeze=True)
    return MatcherModel(cfg, panoptic, text_encoder)
