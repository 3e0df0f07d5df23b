"""The unified panoptic segmentation model: composition, config, training losses and inference.

Batch contract (built by :func:`groundkit.data.panoptic_dataset.collate_panoptic`):
    images:      (B, 3, H, W) float, normalised, H and W multiples of 32
    image_sizes: B ``(h, w)``: the image inside the padding
    orig_sizes:  B ``(H0, W0)``: the size predictions are returned at (optional)
    semantic:    (B, H, W) int64 labels (things first, then stuff), 255 = void/padding (training)
    boxes:       B tensors (G_i, 4) xyxy pixels of the thing segments (training)
    classes:     B tensors (G_i,) int64 thing labels in [0, num_things) (training)
    masks:       B tensors (G_i, H, W) bool thing segments (training)

Labels are contiguous: thing ``i`` is ``cfg.thing_ids[i]``, stuff ``j`` is label ``num_things + j``
and ``cfg.stuff_ids[j]``. P has one channel per detection, then one per stuff label.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groundkit.data.transforms import map_padded_groups
from groundkit.errors import ConfigError, InputError
from groundkit.models.panoptic.affinity import ACTIVATIONS, REGIONS, SCALES, AffinityHead
from groundkit.models.panoptic.candidates import candidates_group
from groundkit.models.panoptic.detector import FCOS
from groundkit.models.panoptic.heuristic import heuristic_merge
from groundkit.models.panoptic.mask_head import MaskHead, multilevel_roi_align, paste_masks
from groundkit.models.panoptic.matching import match_detections, panoptic_loss, panoptic_target
from groundkit.models.panoptic.potential import VARIANTS, box_cell_ranges, box_cells, dynamic_potential
from groundkit.models.panoptic.semantic_head import (
    FeatureDecoder,
    SemanticHead,
    downsample_labels,
    semantic_loss,
)
from groundkit.structures import PanopticResult
from groundkit.vision.backbone import BackboneConfig, ResNetFPN, build_backbone

STRIDE = 4  # of V, Q, Psi and P
COCO_THING_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                  *range(72, 83), *range(84, 91))
COCO_STUFF_IDS = (92, 93, 95, 100, 107, 109, 112, 118, 119, 122, 125, 128, 130, 133, 138, 141, 144,
                  145, 147, 148, 149, 151, 154, 155, 156, 159, 161, 166, 168, 171, 175, 176, 177,
                  178, 180, 181, *range(184, 201))


@dataclass
class PanopticConfig:
    """Defaults are the paper's COCO model (ResNet-50, C = 128, variant C, loss weights 1/0.2/0.1,
    detection cut-off 0.75 at inference) with FCOS as the detector."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(depth=50))
    thing_ids: tuple[int, ...] = COCO_THING_IDS
    stuff_ids: tuple[int, ...] = COCO_STUFF_IDS
    decoder_channels: int = 128        # per FPN level in the semantic / affinity decoders
    decoder_convs: int = 2
    affinity: bool = True              # False: P = Psi (the paper's model A / C2)
    affinity_channels: int = 128       # C
    affinity_activation: str = "relu"  # or sigmoid, softplus
    affinity_normalize: bool = True    # divide phi1(Q)^T Psi by affinity_scale (False: Eq. 4)
    affinity_scale: Literal["pixels", "mass"] = "pixels"  # N, or each channel's sum of Psi
    # Not in the paper (affinity.py says why; off = Eq. 4 verbatim): the affinity term only inside
    # each detection's box, a learned gate starting at 0, (x, y) channels in Q.
    affinity_region: Literal["image", "box"] = "image"
    # With region "box": grow each detection's region by this fraction of its box's width and
    # height on every side, so that the affinity can give a thing pixels its box missed (the
    # paper's Figs. 1 and 6); 0 keeps the box.
    affinity_margin: float = 0.0
    affinity_gate: bool = False
    affinity_coords: bool = False
    potential_variant: Literal["A", "B", "C"] = "C"
    # The "with masks" rows of Table 1: a Mask R-CNN mask head whose pasted masks enter Psi (Eq. 2).
    mask_head: bool = False
    mask_channels: int = 256
    mask_convs: int = 4
    mask_size: int = 28                # M x M masks from an M/2 x M/2 RoIAlign patch (Mask R-CNN)
    detector_levels: int = 5           # P3..P7
    detector_convs: int = 4
    size_limits: tuple[float, ...] = (64, 128, 256, 512)
    center_radius: float = 1.5
    box_loss: Literal["giou", "iou"] = "giou"
    pre_nms_top_n: int = 1000         # candidates per level before NMS
    nms_thresh: float = 0.6
    max_detections: int = 100
    train_score_thresh: float = 0.05   # detections fed to the panoptic head in training
    test_score_thresh: float = 0.75    # paper App. B: 0.75 on COCO, 0.5 on Cityscapes
    train_detections: Literal["predicted", "ground_truth"] = "predicted"  # Table H ablation
    match_iou: float = 0.5             # t of Eq. 5
    detection_weight: float = 1.0
    semantic_weight: float = 0.2
    panoptic_weight: float = 0.1
    mask_weight: float = 1.0
    merge: Literal["argmax", "heuristic"] = "argmax"
    stuff_area_min: int = 4096         # stuff segments smaller than this become void (App. C)

    def __post_init__(self) -> None:
        if not self.thing_ids or not self.stuff_ids:
            raise ConfigError("panoptic: thing_ids and stuff_ids must both be non-empty")
        ids = (*self.thing_ids, *self.stuff_ids)
        if len(set(ids)) != len(ids):
            raise ConfigError("panoptic: thing_ids and stuff_ids must be distinct category ids")
        for name, choices in (("potential_variant", VARIANTS), ("affinity_activation", ACTIVATIONS),
                              ("affinity_region", REGIONS), ("affinity_scale", SCALES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"panoptic.{name}: expected one of {choices}, "
                                  f"got {getattr(self, name)!r}")
        if self.affinity_margin < 0 or (self.affinity_margin and self.affinity_region != "box"):
            raise ConfigError(f"panoptic.affinity_margin: expected >= 0, and only with "
                              f"affinity_region 'box'; got {self.affinity_margin} with region "
                              f"{self.affinity_region!r}")
        if self.mask_head and (self.mask_channels < 1 or self.mask_convs < 0 or self.mask_size < 2
                               or self.mask_size % 2):
            raise ConfigError(f"panoptic: expected mask_channels >= 1, mask_convs >= 0 and an even "
                              f"mask_size >= 2, got {self.mask_channels}, {self.mask_convs}, "
                              f"{self.mask_size}")
        if len(self.size_limits) != self.detector_levels - 1:
            raise ConfigError(f"panoptic.size_limits: expected {self.detector_levels - 1} limits for "
                              f"{self.detector_levels} detector levels, got {list(self.size_limits)}")

    @property
    def num_things(self) -> int:
        return len(self.thing_ids)

    @property
    def num_classes(self) -> int:
        return len(self.thing_ids) + len(self.stuff_ids)


class PanopticModel(nn.Module):
    """Backbone + semantic head + FCOS (+ mask head) + dynamic potential + dense affinity (Fig. 2).

    ``forward(batch)``: losses in train mode (``"loss"`` = weighted total), predictions in eval mode.
    """

    def __init__(self, cfg: PanopticConfig, backbone: ResNetFPN | nn.Module,
                 semantic_head: SemanticHead, detector: FCOS, affinity: AffinityHead | None,
                 mask_head: MaskHead | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.semantic_head = semantic_head
        self.detector = detector
        self.affinity = affinity
        self.mask_head = mask_head

    # --- shared pieces -------------------------------------------------------------------------

    def _heads(self, images: torch.Tensor) -> tuple[dict, torch.Tensor, Any, torch.Tensor | None]:
        _check_images(images)
        features = self.backbone(images)
        q = self.affinity.features(features) if self.affinity is not None else None
        return features, self.semantic_head(features), self.detector(features), q

    def _logits(self, sem_logits: torch.Tensor, det: dict[str, torch.Tensor],
                q: torch.Tensor | None, mask_probs: torch.Tensor | None = None) -> torch.Tensor:
        """P of one image: ``(D + num_stuff, h, w)`` from V ``(L, h, w)`` logits, its detections and
        (with a mask head) their mask probabilities ``(D, M, M)``, pasted into Psi (Eq. 2)."""
        grid = tuple(sem_logits.shape[-2:])
        masks = None if mask_probs is None else paste_masks(mask_probs, det["boxes"], grid, STRIDE)
        psi = dynamic_potential(sem_logits.softmax(0), det["boxes"], det["scores"], det["classes"],
                                self.cfg.num_things, STRIDE, masks, self.cfg.potential_variant)
        if q is None:
            return psi
        whole = det["boxes"].new_tensor([0, grid[0], 0, grid[1]]).long()
        regions = grown_boxes(det["boxes"], self.cfg.affinity_margin)
        cells = torch.cat([box_cell_ranges(regions, grid, STRIDE),  # stuff: the whole image
                           whole.expand(len(psi) - len(det["boxes"]), 4)])
        return self.affinity(q, psi, cells)

    def _mask_probs(self, features: dict[str, torch.Tensor], dets: list[dict[str, torch.Tensor]]
                    ) -> list[torch.Tensor | None]:
        """Mask probabilities ``(D_i, M, M)`` of each image's detections; None without a mask head."""
        if self.mask_head is None:
            return [None] * len(dets)
        logits = self.mask_head(features, [d["boxes"] for d in dets],
                                torch.cat([d["classes"] for d in dets]))
        return list(logits.sigmoid().split([len(d["boxes"]) for d in dets]))

    # --- training ------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor] | list[PanopticResult]:
        if not self.training:
            return self.predict(batch["images"], batch.get("image_sizes"), batch.get("orig_sizes"))
        images = batch["images"]
        features, sem_logits, out, q = self._heads(images)
        losses = self.detector.losses(out, batch["boxes"], batch["classes"])
        losses["loss_semantic"] = semantic_loss(sem_logits, batch["semantic"])
        if self.cfg.train_detections == "ground_truth":  # App. A.4 baseline: GT boxes, score 1
            dets = [{"boxes": b, "scores": torch.ones(len(b), device=b.device), "classes": c}
                    for b, c in zip(batch["boxes"], batch["classes"])]
        else:
            dets = self.detector.detect(out, _sizes(batch.get("image_sizes"), images),
                                        self.cfg.train_score_thresh)
        losses.update(self._panoptic_losses(features, sem_logits, dets, q, batch))
        cfg = self.cfg
        detection = losses["loss_cls"] + losses["loss_box"] + losses["loss_ctr"]
        losses["loss"] = (cfg.detection_weight * detection
                          + cfg.semantic_weight * losses["loss_semantic"]
                          + cfg.panoptic_weight * losses["loss_panoptic"])
        if "loss_mask" in losses:
            losses["loss"] = losses["loss"] + cfg.mask_weight * losses["loss_mask"]
        return losses

    def _panoptic_losses(self, features: dict[str, torch.Tensor], sem_logits: torch.Tensor,
                         dets: list[dict[str, torch.Tensor]], q: torch.Tensor | None,
                         batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sec. 3.5: match, drop duplicates, build P from the kept detections (and their masks),
        cross-entropy per image; with a mask head, also the mask loss of its positives."""
        kept, det_to_gt = [], []
        for i, det in enumerate(dets):
            keep, to_gt = match_detections(det["boxes"], det["classes"], batch["boxes"][i],
                                           batch["classes"][i], self.cfg.match_iou)
            kept.append({k: v[keep] for k, v in det.items()})
            det_to_gt.append(to_gt[keep])
        losses, probs = {}, [None] * len(dets)
        if self.mask_head is not None:
            probs, losses["loss_mask"] = self.mask_head.training_outputs(
                features, [k["boxes"] for k in kept], [k["classes"] for k in kept], det_to_gt,
                batch["boxes"], batch["classes"], batch["masks"])
        panoptic = []
        for i in range(len(dets)):
            logits = self._logits(sem_logits[i], kept[i], None if q is None else q[i], probs[i])
            grid = logits.shape[-2:]
            target = panoptic_target(downsample_labels(batch["semantic"][i], grid),
                                     downsample_labels(batch["masks"][i], grid), det_to_gt[i],
                                     self.cfg.num_things)
            panoptic.append(panoptic_loss(logits, target))
        losses["loss_panoptic"] = torch.stack(panoptic).mean()
        return losses

    # --- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None,
                orig_sizes: list[tuple[int, int]] | None = None, return_probs: bool = False
                ) -> list[PanopticResult]:
        """Panoptic maps of a padded batch ``images (B, 3, H, W)``.

        image_sizes: the valid ``(h, w)`` of each image inside the padding (default: all of it);
        orig_sizes: the ``(H0, W0)`` to return each map at (default: image_sizes). Segment ids are
        1..n in channel order; ``score`` is the detection score for things and 1.0 for stuff.
        return_probs: results also carry each segment's probability map (``probs (S, H0, W0)``,
        the softmax over P's channels; the argmax merge only: a heuristic merge has no P).
        """
        if return_probs and self.cfg.merge == "heuristic":
            raise ConfigError("panoptic: soft maps come from the argmax over the panoptic channels "
                              "P; this model merges with model.merge='heuristic', which has none "
                              "(set model.merge=argmax to get them)")
        return self._by_padded_size(partial(self._predict_group, return_probs=return_probs),
                                    images, image_sizes, orig_sizes)

    def _predict_group(self, images: torch.Tensor, sizes: list[tuple[int, int]],
                       orig_sizes: list[tuple[int, int]], return_probs: bool = False
                       ) -> list[PanopticResult]:
        features, sem_logits, out, q = self._heads(images)
        dets = self.detector.detect(out, sizes, self.cfg.test_score_thresh)
        padded, results = images.shape[-2:], []
        for i, (det, probs) in enumerate(zip(dets, self._mask_probs(features, dets))):
            soft = None
            if self.cfg.merge == "heuristic":
                id_map, segments = self._heuristic(sem_logits[i], det, probs, padded, sizes[i],
                                                   orig_sizes[i])
            else:
                logits = self._logits(sem_logits[i], det, None if q is None else q[i], probs)
                channels = upsampled_argmax(logits, padded, sizes[i], orig_sizes[i])
                id_map, segments = channels_to_segments(channels, det, self.cfg.num_things,
                                                        self.cfg.stuff_area_min)
                if return_probs:
                    soft = upsampled_softmax(logits, padded, sizes[i], orig_sizes[i],
                                             [s["channel"] for s in segments])
            results.append(self._result(id_map, segments, soft))
        return results

    def _heuristic(self, sem_logits: torch.Tensor, det: dict[str, torch.Tensor],
                   mask_probs: torch.Tensor | None, padded: tuple[int, int], size: tuple[int, int],
                   orig: tuple[int, int]) -> tuple[torch.Tensor, list[dict]]:
        """Panoptic FPN merge. Instance masks: the mask head's (``> 0.5`` pasted at the output size)
        or, for a box-only model, each box on the semantic argmax."""
        semantic = upsampled_argmax(sem_logits, padded, size, orig)
        scale = torch.tensor([orig[1] / size[1], orig[0] / size[0]] * 2, device=det["boxes"].device)
        boxes = det["boxes"] * scale
        if mask_probs is None:
            in_box = box_cells(boxes, orig, stride=1).bool()
            masks = in_box & (semantic[None] == det["classes"][:, None, None])
        else:
            masks = paste_masks(mask_probs, boxes, orig, stride=1) > 0.5
        return heuristic_merge(masks, det["scores"], det["classes"], semantic, self.cfg.num_things,
                               score_thresh=self.cfg.test_score_thresh,
                               stuff_area_min=self.cfg.stuff_area_min)

    def _result(self, id_map: torch.Tensor, segments: list[dict],
                probs: torch.Tensor | None = None) -> PanopticResult:
        category_ids = (*self.cfg.thing_ids, *self.cfg.stuff_ids)  # indexed by label
        info = [{"id": s["id"], "isthing": s["isthing"], "score": s["score"],
                 "category_id": category_ids[s["label"]]} for s in segments]
        return PanopticResult(id_map.cpu().numpy().astype(np.int64), info,
                              None if probs is None else probs.cpu().numpy())

    @torch.no_grad()
    def detections(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None,
                   orig_sizes: list[tuple[int, int]] | None = None, roi_size: int = 7
                   ) -> list[dict[str, torch.Tensor]]:
        """Detections as proposals for other models, one dict per image:
        ``boxes (D, 4)`` xyxy, ``scores (D,)``, ``classes (D,)`` thing labels, ``category_ids (D,)``,
        ``masks (D, H0, W0) bool`` (the detection's pixels in the argmax over P) and
        ``roi_features (D, C, roi_size, roi_size)`` RoIAlign-ed from the FPN level of each box.
        Boxes and masks are at ``orig_sizes`` (default: ``image_sizes``), as :meth:`predict`'s maps.
        """
        return self._by_padded_size(partial(self._detections_group, roi_size=roi_size), images,
                                    image_sizes, orig_sizes)

    def _detections_group(self, images: torch.Tensor, sizes: list[tuple[int, int]],
                          orig_sizes: list[tuple[int, int]], roi_size: int = 7
                          ) -> list[dict[str, torch.Tensor]]:
        _check_images(images)
        features = self.backbone(images)
        dets = self.detector.detect(self.detector(features), sizes, self.cfg.test_score_thresh)
        masks = self.detection_masks(features, dets, tuple(images.shape[-2:]), sizes, orig_sizes)
        ids = torch.tensor(self.cfg.thing_ids, device=images.device)
        for i, det in enumerate(dets):
            det["masks"] = masks[i]
            det["category_ids"] = ids[det["classes"]]
            one_image = {k: v[i:i + 1] for k, v in features.items()}
            det["roi_features"] = multilevel_roi_align(one_image, [det["boxes"]], roi_size)
            (h, w), (h0, w0) = sizes[i], orig_sizes[i]
            det["boxes"] = det["boxes"] * det["boxes"].new_tensor([w0 / w, h0 / h] * 2)
        return dets

    @torch.no_grad()
    def detection_masks(self, features: dict[str, torch.Tensor], dets: list[dict[str, torch.Tensor]],
                        padded: tuple[int, int], sizes: list[tuple[int, int]],
                        orig_sizes: list[tuple[int, int]], image_index: torch.Tensor | None = None
                        ) -> list[torch.Tensor]:
        """The masks :meth:`detections` gives, for detections chosen by someone else (e.g. the
        proposals of two-stage referring): ``(D_i, H0, W0) bool`` per image, the pixels of each
        detection in the argmax over P built with ``dets[i]`` as the image's detections.

        features: the backbone's ``"p2".."p5"`` of images padded to ``padded (H, W)`` (one padded
        size, as :meth:`_by_padded_size` groups them); dets: per image ``boxes (D, 4)`` xyxy in
        input pixels, ``scores (D,)`` and ``classes (D,)`` thing labels; sizes: each image inside
        the padding; orig_sizes: the size of the masks. Detections compete for pixels with each
        other and with the stuff channels, so a mask may be empty. image_index: ``(D_sets,)`` the
        image of each entry of ``dets`` (several detection sets on one image, e.g. one per
        referring expression: the semantic and affinity heads then run once per image); None:
        entry i is on image i. sizes and orig_sizes are per entry of ``dets``.
        """
        sem_logits = self.semantic_head(features)
        q = self.affinity.features(features) if self.affinity is not None else None
        rows = range(len(dets)) if image_index is None else image_index.tolist()
        per_set = features if image_index is None else {k: v[image_index] for k, v in features.items()}
        masks = []
        for i, (det, probs) in enumerate(zip(dets, self._mask_probs(per_set, dets))):
            j = rows[i]
            logits = self._logits(sem_logits[j], det, None if q is None else q[j], probs)
            channels = upsampled_argmax(logits, padded, sizes[i], orig_sizes[i])
            owners = torch.arange(len(det["boxes"]), device=channels.device)
            masks.append(channels[None] == owners[:, None, None])
        return masks

    @torch.no_grad()
    def candidates(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None,
                   orig_sizes: list[tuple[int, int]] | None = None, score_thresh: float = 0.05,
                   roi_size: int = 7) -> list[dict[str, torch.Tensor]]:
        """Every detector point whose best class scores above ``score_thresh``, before NMS: the
        proposals of two-stage referring (VL-NMS's delta = 0.05). One dict per image:
        ``boxes (N, 4)`` xyxy at ``orig_sizes`` (default: ``image_sizes``), ``scores (N, K)`` the
        detector's score of each thing class (``sqrt(p_class * p_centre)``, what ``detect`` ranks
        by), ``confidence (N,)`` their maximum, ``classes (N,)``, ``category_ids (N,)``,
        ``centerness (N,)``, ``levels (N,)`` the FPN level ``k`` (P``k``) of the point,
        ``roi_features (N, C, roi_size, roi_size)`` and ``roi_boxes (N, 4)`` (the boxes in input
        pixels that RoIAlign saw). Candidates are in point order (level, then row-major cell).
        An image with no point above the threshold gets N = 0 (tensors with no rows), not an error.
        See :mod:`groundkit.models.panoptic.candidates`.
        """
        return self._by_padded_size(partial(self._candidates_group, score_thresh=score_thresh,
                                            roi_size=roi_size), images, image_sizes, orig_sizes)

    def _candidates_group(self, images: torch.Tensor, sizes: list[tuple[int, int]],
                          orig_sizes: list[tuple[int, int]], score_thresh: float, roi_size: int
                          ) -> list[dict[str, torch.Tensor]]:
        _check_images(images)
        return self.candidates_from_features(self.backbone(images), sizes, orig_sizes,
                                             score_thresh, roi_size)

    @torch.no_grad()
    def candidates_from_features(self, features: dict[str, torch.Tensor],
                                 sizes: list[tuple[int, int]],
                                 orig_sizes: list[tuple[int, int]] | None = None,
                                 score_thresh: float = 0.05, roi_size: int = 7
                                 ) -> list[dict[str, torch.Tensor]]:
        """:meth:`candidates` of images whose backbone ``features`` (``"p2".."p5"``, one padded
        size) are already computed, e.g. shared with :meth:`detection_masks`."""
        ids = torch.tensor(self.cfg.thing_ids, device=features["p2"].device)
        return candidates_group(features, self.detector(features), self.detector, ids, sizes,
                                orig_sizes or sizes, score_thresh, roi_size)

    def _by_padded_size(self, fn: Callable[..., list], images: torch.Tensor,
                        image_sizes: list[tuple[int, int]] | None,
                        orig_sizes: list[tuple[int, int]] | None) -> list:
        """``fn(images, sizes, orig_sizes)`` over the groups of images that pad alone to the same
        size (:func:`~groundkit.data.transforms.map_padded_groups`): an image's output never
        depends on the rest of its batch."""
        sizes = _sizes(image_sizes, images)
        batch = {"images": images, "image_sizes": sizes,
                 "orig_sizes": [tuple(s) for s in (orig_sizes or sizes)]}
        return map_padded_groups(batch, lambda b: fn(b["images"], b["image_sizes"],
                                                     b["orig_sizes"]))


# --- helpers ---------------------------------------------------------------------------------------

def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2] % 32 or images.shape[-1] % 32:
        raise InputError(f"panoptic: images: expected (B, 3, H, W) with H, W multiples of 32, "
                         f"got {tuple(images.shape)}")


def _sizes(image_sizes: list[tuple[int, int]] | None, images: torch.Tensor) -> list[tuple[int, int]]:
    if image_sizes is None:
        return [tuple(images.shape[-2:])] * len(images)
    return [(int(h), int(w)) for h, w in image_sizes]


def upsampled(logits: torch.Tensor, padded: tuple[int, int], size: tuple[int, int],
              out_size: tuple[int, int]) -> torch.Tensor:
    """Stride-4 ``logits (K, h, w)`` at the image's size ``(K, H0, W0)``: bilinear upsampling to
    the ``padded`` input, the valid ``size`` cropped, then resized to ``out_size``. Channel by
    channel, so a subset of channels gives the same numbers as all of them."""
    x = F.interpolate(logits[None], size=tuple(padded), mode="bilinear",
                      align_corners=False)[..., :size[0], :size[1]]
    if tuple(size) != tuple(out_size):
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)
    return x[0]


def upsampled_argmax(logits: torch.Tensor, padded: tuple[int, int], size: tuple[int, int],
                     out_size: tuple[int, int], chunk: int = 16) -> torch.Tensor:
    """Argmax over channels of :func:`upsampled` ``logits (K, h, w)``. Returns ``(H0, W0)``
    int64. Channels go ``chunk`` at a time so memory stays ``chunk x H0 x W0``."""
    best = torch.full(tuple(out_size), -math.inf, device=logits.device)
    index = torch.zeros(tuple(out_size), dtype=torch.long, device=logits.device)
    for start in range(0, len(logits), chunk):
        value, arg = upsampled(logits[start:start + chunk], padded, size, out_size).max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        index = torch.where(better, arg + start, index)
    return index


def upsampled_softmax(logits: torch.Tensor, padded: tuple[int, int], size: tuple[int, int],
                      out_size: tuple[int, int], channels: list[int], chunk: int = 16
                      ) -> torch.Tensor:
    """The softmax over all channels of :func:`upsampled` ``logits (K, h, w)``, rows
    ``channels`` only: ``(len(channels), H0, W0)`` float32, whose argmax is
    :func:`upsampled_argmax`'s where that picks one of ``channels``. The normaliser is
    accumulated ``chunk`` channels at a time, as the argmax is."""
    if not channels:  # interpolate refuses zero channels
        return logits.new_zeros((0, *out_size), dtype=torch.float32)
    norm = torch.full(tuple(out_size), -math.inf, device=logits.device)
    for start in range(0, len(logits), chunk):
        part = upsampled(logits[start:start + chunk], padded, size, out_size).float()
        norm = torch.logaddexp(norm, part.logsumexp(dim=0))
    picked = upsampled(logits[channels], padded, size, out_size).float()
    return (picked - norm).exp()


def grown_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """``boxes (D, 4)`` xyxy grown by ``margin`` x their width and height on every side (the
    caller clips them to the grid)."""
    if not margin:
        return boxes
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + margin * size * boxes.new_tensor([-1, -1, 1, 1])


def channels_to_segments(channels: torch.Tensor, det: dict[str, torch.Tensor], num_things: int,
                         stuff_area_min: int) -> tuple[torch.Tensor, list[dict]]:
    """Turn an argmax map over P's channels into an id map and segments.

    channels: ``(H, W)`` int64 (``< D``: detection, else stuff label ``num_things + channel - D``).
    Every channel present becomes one segment (``{"id", "label", "isthing", "score",
    "channel"}``), ids 1..n in channel order; stuff segments under
    ``stuff_area_min`` pixels become void (0), as the paper does for evaluation (App. C).
    """
    d = len(det["boxes"])
    present, areas = torch.unique(channels, return_counts=True)
    id_of = torch.zeros(int(channels.max()) + 1, dtype=torch.long, device=channels.device)
    segments: list[dict] = []
    for channel, area in zip(present.tolist(), areas.tolist()):
        isthing = channel < d
        if not isthing and area < stuff_area_min:
            continue
        label = int(det["classes"][channel]) if isthing else num_things + channel - d
        score = float(det["scores"][channel]) if isthing else 1.0
        segments.append({"id": len(segments) + 1, "label": label, "isthing": isthing,
                         "score": score, "channel": channel})
        id_of[channel] = len(segments)
    return id_of[channels], segments


def build_panoptic(cfg: PanopticConfig, *, backbone: nn.Module | None = None) -> PanopticModel:
    """Compose the model of ``cfg``; ``backbone`` may be one another model owns (built from
    ``cfg.backbone`` when not given)."""
    channels = cfg.backbone.fpn_channels
    decoder = lambda: FeatureDecoder(channels, cfg.decoder_channels, cfg.decoder_convs)  # noqa: E731
    affinity = AffinityHead(decoder(), cfg.affinity_channels, cfg.affinity_activation,
                            cfg.affinity_normalize, cfg.affinity_region, cfg.affinity_gate,
                            cfg.affinity_coords, cfg.affinity_scale) if cfg.affinity else None
    detector = FCOS(channels, cfg.num_things, cfg.detector_levels, cfg.detector_convs,
                    cfg.size_limits, cfg.center_radius, cfg.box_loss, pre_nms_top_n=cfg.pre_nms_top_n,
                    nms_thresh=cfg.nms_thresh, max_detections=cfg.max_detections)
    semantic = SemanticHead(decoder(), cfg.num_classes)
    masks = MaskHead(channels, cfg.num_things, cfg.mask_channels, cfg.mask_convs,
                     cfg.mask_size) if cfg.mask_head else None
    backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
    return PanopticModel(cfg, backbone, semantic, detector, affinity, masks)


def load_panoptic(name_or_path: str | Path) -> PanopticModel:
    """A trained panoptic model from a groundkit checkpoint (a bundled name such as
    ``panoptic-synthetic``, a checkpoint folder or its weights file), frozen and in eval mode:
    where two-stage referring models take their candidates from. Read as ``BackboneConfig.weights``
    reads a backbone (:func:`groundkit.hub.resolve_weights_file`), with the architecture from the
    checkpoint's own header. ConfigError for a checkpoint of another model type."""
    from groundkit.models import load_trained  # the registry imports this module lazily

    return load_trained(name_or_path, "panoptic", "its detector gives the candidates")
