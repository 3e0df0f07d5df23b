"""PBREC / PBREC-MT: point-based two-stage referring expression comprehension and segmentation.

Zhang et al., "A Point-Based Two-Stage Framework for Referring Expression Comprehension"
(AAAI 2023). Every point of a grid (stride g) of a letterboxed square image carries one box (an
FCOS head on that level) and one mask (a SOLO-style dynamic kernel): the localisation stage. The
comprehension stage encodes the grid's visual tokens with the expression's tokens and predicts, per
point, a center-ness (boxes) and a mass-ness (masks) of the referent. Inference ranks the points,
takes the top k and keeps the proposal that overlaps the others most (the IoU vote).

Choices, and why:

- One model, one loss: the localisation stage trains on every annotated object of the image
  (FCOS losses, Dice on the masks) beside the comprehension loss, so ``groundkit train`` is one run.
  The paper trains its detectors separately and freezes them; ``localization_weight=0`` with a
  loaded backbone is that setting.
- ``lambda_center`` / ``lambda_mass`` are the paper's task switches: PBREC-MT uses both (the default),
  PBREC for boxes only sets ``lambda_mass=0``.

Batch contract (``groundkit.data.referring.collate_referring``): ``images (B, 3, S, S)``,
``expressions`` (B str), ``box (B, 4)`` and ``mask (B, S, S)`` of the referent (training),
``boxes`` / ``classes`` / ``masks`` of every object (training), ``image_sizes`` (the letterboxed
image inside the square), ``orig_sizes`` and ``scales`` (prediction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from groundkit.errors import ConfigError
from groundkit.models.mask_refine import check_refinement, refine_on_image
from groundkit.models.panoptic.detector import FCOS, cell_centres
from groundkit.models.referring.comprehension import (
    VisionLanguageEncoder,
    center_targets,
    comprehension_loss,
    iou_vote,
    mass_targets,
    mlp,
    pairwise_box_iou,
    pairwise_mask_iou,
)
from groundkit.models.referring.masks import PointMaskHead
from groundkit.structures import ReferringResult
from groundkit.text.encoder import (
    TextEncoder,
    TextFeatureCache,
    leave_out_of_checkpoints,
    text_encoder_param_groups,
)
from groundkit.vision.backbone import BackboneConfig, build_backbone

LEVELS = {8: "p3", 16: "p4", 32: "p5"}
# A result carries at least this many ranked boxes (the paper's k), whatever k the vote uses: the
# faint proposals of the overlay (the paper's Fig. 4) and the recall@k of a predictions file
# exist for a top-1 model too.
PROPOSALS_KEPT = 12


@dataclass
class PBRECConfig:
    """Defaults are the paper's RefCOCO model (ResNet-101, g = 32, 6 layers, d 256, top-12 vote)."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(depth=101))
    text_encoder: str | None = None   # a local Hugging Face folder; None = bundled all-MiniLM-L6-v2
    freeze_text: bool = True
    # With freeze_text = false: only the top N layers of the text encoder train, and model files
    # carry only those (the bundled MiniLM whole would not fit a 15 MB model). 0 = all of it.
    text_train_layers: int = 0
    # With freeze_text = false and a rank > 0: the layers below the top text_train_layers (all
    # of them with 0) keep their installed weights and get low-rank adapters (LoRA) that train,
    # a few hundred thousand parameters where the layers themselves are millions.
    text_adapter_rank: int = 0
    text_adapter_alpha: float = 16.0  # LoRA's alpha: adapter outputs are scaled by alpha / rank
    num_classes: int = 0              # object categories of the localisation stage; 0 = from the data
    grid_stride: int = 32             # g: 32 (P5, the paper), 16 (P4) or 8 (P3, small images)
    dim: int = 256
    layers: int = 6
    heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    head_layers: int = 3              # the center-ness and mass-ness MLPs
    lambda_center: float = 1.0        # Eq. 6; PBREC-MT: both 1; boxes only: lambda_mass = 0
    lambda_mass: float = 1.0
    hard_targets: bool = False        # 0/1 instead of the soft center-ness / mass-ness (Table 4)
    detector_convs: int = 4
    center_radius: float = 1.5
    mask_dim: int = 64
    mask_convs: int = 2
    localization_weight: float = 1.0  # weight of the detector and mask losses in the total
    # Each grid token also gets the mean colour of its g x g cell (3 channels of the normalised
    # image). A backbone pre-trained on object categories alone may drop colour, which expressions
    # name: the synthetic benchmark's frozen panoptic backbone keeps so little that a linear probe
    # reads the colour of a shape from its P3 features 24% of the time (8 colours) against 92% from
    # the pooled pixels (docs/referring.md). The paper's ImageNet ResNet needs no such help.
    cell_colours: bool = False
    top_k: int = 12                   # proposals in the IoU vote (1 = top-1 ranking)
    rank_by_confidence: bool = False  # boxes ranked by center-ness x detector confidence
    # Boxes and masks both ranked by center-ness + mass-ness (not the paper's: it ranks boxes by
    # center-ness, masks by mass-ness): with top_k = 1 one point gives both, so the box and the
    # mask are always the same object's. Both heads score "is this point on the referent", and
    # their sum chose the referent more often on the synthetic val split (docs/referring.md).
    joint_ranking: bool = False
    mask_threshold: float = 0.5
    # Multi-scale test: the square input is also resized by each of these factors (to a multiple
    # of the grid stride, so that the points stay on cell centres) and every scale ranks its
    # points; the box is taken from the scale whose chosen point ranks highest, the mask is the
    # mean over the scales that chose the same object as the surest one (fuse_scale_masks). A
    # model trained on one input size sees small objects better on a larger canvas
    # (docs/referring.md). () = off.
    test_scales: tuple[float, ...] = ()
    # Point-mask ensemble: the chosen point's mask probabilities averaged with those of the
    # ``mask_points`` best-ranked points (by the mask ranking) whose masks overlap it at IoU >= 0.5
    # (SOLO's points on one object each predict its mask; averaging them smooths the stride-4
    # map). 0 = the chosen point's mask alone, as the paper.
    mask_points: int = 0
    # Edge-aware refinement (models.mask_refine: He et al.'s guided filter): the mask
    # probabilities, resized to the image, are filtered with the image itself as the guide, in
    # windows of ``refine_radius`` input pixels with ridge ``refine_eps``, then thresholded: the
    # stride-4 map's blurred edge snaps to the object's edge in the picture. A small eps follows
    # faint edges (flat synthetic colours); textured photos want a larger one. 0 = off (the paper).
    refine_radius: int = 0
    refine_eps: float = 1e-4
    # The mask kept near the chosen box: pixels whose centre lies more than ``mask_box_margin``
    # input pixels outside the returned box are dropped (keep_inside_box), so a mask that spills
    # onto a touching neighbour of the same colour is cut where the box head says the object
    # ends. Applied last, after the refinement. None = off (the paper).
    mask_box_margin: float | None = None

    def __post_init__(self) -> None:
        if self.grid_stride not in LEVELS:
            raise ConfigError(f"pbrec: grid_stride must be one of {sorted(LEVELS)}, "
                              f"got {self.grid_stride}")
        if self.dim % self.heads:
            raise ConfigError(f"pbrec: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.text_train_layers < 0 or (self.text_train_layers and self.freeze_text):
            raise ConfigError(f"pbrec: text_train_layers ({self.text_train_layers}) must be >= 0, "
                              "and > 0 only with freeze_text=false")
        if (self.text_adapter_rank < 0 or (self.text_adapter_rank and self.freeze_text)
                or not self.text_adapter_alpha > 0):
            raise ConfigError(f"pbrec: text_adapter_rank ({self.text_adapter_rank}) must be >= 0, "
                              f"and > 0 only with freeze_text=false; text_adapter_alpha "
                              f"({self.text_adapter_alpha}) must be > 0")
        if self.top_k < 1:
            raise ConfigError(f"pbrec: top_k must be >= 1, got {self.top_k}")
        if self.mask_points < 0:
            raise ConfigError(f"pbrec: mask_points must be >= 0, got {self.mask_points}")
        check_refinement("pbrec", self.refine_radius, self.refine_eps)
        if self.mask_box_margin is not None and not self.mask_box_margin >= 0:
            raise ConfigError(f"pbrec: mask_box_margin must be >= 0 (input pixels) or null, "
                              f"got {self.mask_box_margin}")
        if any(not 0.25 <= f <= 4 for f in self.test_scales):
            raise ConfigError(f"pbrec: test_scales must be factors in [0.25, 4], got {self.test_scales}")


class PBRECModel(nn.Module):
    """Backbone + text encoder + point detector + point mask head + comprehension encoder/heads."""

    def __init__(self, cfg: PBRECConfig, backbone: nn.Module, text_encoder: TextEncoder,
                 detector: FCOS, mask_head: PointMaskHead, encoder: VisionLanguageEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.text_cache = TextFeatureCache(text_encoder) if text_encoder.frozen else None
        self.detector = detector
        self.mask_head = mask_head
        self.encoder = encoder
        self.center_head = mlp(cfg.dim, 1, cfg.head_layers)
        self.mass_head = mlp(cfg.dim, 1, cfg.head_layers)
        self.grid = LEVELS[cfg.grid_stride]
        if text_encoder.frozen or cfg.text_train_layers or cfg.text_adapter_rank:
            leave_out_of_checkpoints(self, "text_encoder", keep_trainable=True)

    # --- shared pieces -------------------------------------------------------------------------

    def encode_images(self, images: torch.Tensor) -> dict[str, Any]:
        """images ``(B, 3, S, S)`` -> FPN levels ``"p2".."p5"`` (and ``"cell_colours"``
        ``(B, 3, S/g, S/g)``, the image average-pooled over the grid cells, with ``cell_colours``).
        In eval mode with ``test_scales``, also ``"scaled"``: ``[(factor, features)]`` of the
        input resized by each factor (the exact factor of the resized side over S); with
        ``refine_radius``, ``"images"``: the input itself, the refinement's guide."""
        features: dict[str, Any] = self._one_scale(images)
        if not self.training and self.cfg.refine_radius:
            features["images"] = images
        if not self.training and self.cfg.test_scales:
            side, g = images.shape[-1], self.cfg.grid_stride
            scaled = []
            for factor in self.cfg.test_scales:
                new_side = max(g, round(side * factor / g) * g)
                resized = F.interpolate(images, size=(new_side, new_side), mode="bilinear",
                                        align_corners=False)
                scaled.append((new_side / side, self._one_scale(resized)))
            features["scaled"] = scaled
        return features

    def _one_scale(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = dict(self.backbone(images))
        if self.cfg.cell_colours:
            features["cell_colours"] = F.adaptive_avg_pool2d(images, features[self.grid].shape[-2:])
        return features

    def encode_text(self, expressions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features ``(B, L, D)`` and mask ``(B, L)`` (True on real tokens)."""
        text = (self.text_cache.get_or_compute(expressions) if self.text_cache is not None
                else self.text_encoder(expressions))
        device = self.center_head[0].weight.device
        return text.features.to(device), text.mask.to(device)

    def point_logits(self, features: dict[str, torch.Tensor], expressions: list[str]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Center-ness and mass-ness logits ``(B, N)`` of every grid point."""
        text, mask = self.encode_text(expressions)
        grid = features[self.grid]
        if self.cfg.cell_colours:
            grid = torch.cat([grid, features["cell_colours"]], dim=1)
        states = self.encoder(grid, text, mask)
        return self.center_head(states)[..., 0], self.mass_head(states)[..., 0]

    # --- training ------------------------------------------------------------------------------

    def param_groups(self, lr: float, text_lr: float | None = None) -> list[dict]:
        """Trainable parameters; the text encoder (``model.freeze_text=false``) gets ``text_lr``."""
        return text_encoder_param_groups(self, self.text_encoder, lr, text_lr)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor] | list[ReferringResult]:
        """Training: a dict of losses with ``"loss"``. Eval: :meth:`predict`."""
        if not self.training:
            return self.predict(batch)
        features = self.encode_images(batch["images"])
        cfg = self.cfg
        center, mass = self.point_logits(features, batch["expressions"])
        points = self._points(features)
        losses = comprehension_loss(
            center, mass, center_targets(batch["box"], points, cfg.grid_stride, cfg.hard_targets),
            mass_targets(batch["mask"], points, cfg.grid_stride, cfg.hard_targets),
            cfg.lambda_center, cfg.lambda_mass)
        losses.update(self._localization_losses(features, batch))
        localization = sum(losses[k] for k in ("loss_cls", "loss_box", "loss_ctr", "loss_mask"))
        losses["loss"] = losses["loss_comprehension"] + cfg.localization_weight * localization
        return losses

    def _localization_losses(self, features: dict[str, torch.Tensor], batch: dict[str, Any]
                             ) -> dict[str, torch.Tensor]:
        """FCOS losses on every object, and Dice of each positive point's mask against the mask of
        the object FCOS assigns the point to (box and mask of a point share their object)."""
        out = self.detector(features)
        targets = self.detector.targets(out, batch["boxes"], batch["classes"])  # assigned once
        losses = self.detector.losses(out, batch["boxes"], batch["classes"], targets)
        matched = targets[2]
        kernels, mask_features = self.mask_head(features, self.grid)
        losses.update(self.mask_head.losses(kernels, mask_features, matched, batch["masks"]))
        return losses

    def _points(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        grid = features[self.grid]
        return cell_centres(grid.shape[-2:], self.cfg.grid_stride, grid.device)

    # --- inference -----------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> list[ReferringResult]:
        """One :class:`ReferringResult` per expression of the batch, in original image pixels."""
        return self.refer(self.encode_images(batch["images"]), batch["expressions"],
                          batch["image_sizes"], batch["orig_sizes"], batch["scales"])

    @torch.no_grad()
    def refer(self, features: dict[str, Any], expressions: list[str],
              image_sizes: list[tuple[int, int]], orig_sizes: list[tuple[int, int]],
              scales: list[float]) -> list[ReferringResult]:
        """The referent of each expression on its image's ``features`` (:meth:`encode_images`,
        computed once per image and reusable for many expressions). With more scales (the
        multi-scale test), the box comes from the scale whose chosen box point ranks highest
        (the first on a tie), the mask from :func:`fuse_scale_probabilities` around the scale whose
        chosen mask point does, refined on the image with ``refine_radius`` and kept within
        ``mask_box_margin`` of the box."""
        per_scale = [self._refer_at(level, expressions, [(h * f, w * f) for h, w in image_sizes],
                                    orig_sizes, [s * f for s in scales])
                     for f, level in [(1.0, features), *features.get("scaled", [])]]
        results, probs, box_ranks, mask_ranks = zip(*per_scale)
        box_scale = torch.stack(box_ranks).argmax(0).tolist()
        mask_scale = torch.stack(mask_ranks).argmax(0).tolist()
        fused = []
        for b, (at_box, at_mask) in enumerate(zip(box_scale, mask_scale)):
            prob = fuse_scale_probabilities(torch.stack([p[b] for p in probs]), at_mask,
                                            self.cfg.mask_threshold)
            if self.cfg.refine_radius:
                prob = refine_on_image(prob[None], features["images"][b], image_sizes[b],
                                       self.cfg.refine_radius, self.cfg.refine_eps)[0]
            result = results[at_box][b]
            if self.cfg.mask_box_margin is not None:
                prob = keep_inside_box(prob, torch.from_numpy(result.box),
                                       self.cfg.mask_box_margin / scales[b])
            fused.append(replace(result, mask=(prob > self.cfg.mask_threshold).cpu().numpy()))
        return fused

    def _refer_at(self, features: dict[str, torch.Tensor], expressions: list[str],
                  image_sizes: list[tuple[float, float]], orig_sizes: list[tuple[int, int]],
                  scales: list[float]
                  ) -> tuple[list[ReferringResult], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """One scale: the results without their masks, the chosen masks' probabilities
        (``(H0, W0)`` each, original pixels), and the ranking scores ``(B,)`` of the chosen box
        point and of the chosen mask point."""
        cfg = self.cfg
        center, mass = (x.sigmoid() for x in self.point_logits(features, expressions))
        out = self.detector(features)
        boxes, confidence = self.detector.point_boxes(out)                   # (B, N, 4), (B, N)
        box_rank, mask_rank = self.rankings(center, mass, confidence)
        box_point, box_top = iou_vote(box_rank, lambda i: pairwise_box_iou(_take(boxes, i)),
                                      cfg.top_k, keep=PROPOSALS_KEPT)
        kernels, mask_features = self.mask_head(features, self.grid)
        mask_point, _ = iou_vote(mask_rank, lambda i: pairwise_mask_iou(
            self.mask_head.mask_logits(_take(kernels, i), mask_features) > 0), cfg.top_k)
        chosen = self._mask_of_points(kernels, mask_features, mask_rank, mask_point)
        results, probs = [], []
        for b, (size, orig, scale) in enumerate(zip(image_sizes, orig_sizes, scales)):
            box = _to_original(boxes[b, box_point[b]], size, scale)
            proposals = _to_original(boxes[b, box_top[b]], size, scale)            # (K, 4)
            results.append(ReferringResult(box.cpu().numpy(), float(center[b, box_point[b]]),
                                           proposals=proposals.cpu().numpy(),
                                           expression=expressions[b]))
            probs.append(probabilities_to_original(chosen[b], size, orig))
        return (results, probs, box_rank.gather(1, box_point[:, None])[:, 0],
                mask_rank.gather(1, mask_point[:, None])[:, 0])

    def _mask_of_points(self, kernels: torch.Tensor, mask_features: torch.Tensor,
                        mask_rank: torch.Tensor, mask_point: torch.Tensor) -> torch.Tensor:
        """Mask probabilities ``(B, S/4, S/4)`` of the chosen ``mask_point (B,)``: its own, or
        with ``cfg.mask_points`` the mean over it and the best-ranked points (``mask_rank (B, N)``)
        whose masks agree with it (:func:`mean_of_agreeing`; a point counted once)."""
        index = mask_point[:, None]
        if self.cfg.mask_points:
            index = torch.cat([index, mask_rank.topk(min(self.cfg.mask_points, mask_rank.shape[1]),
                                                     dim=1).indices], dim=1)
        probs = self.mask_head.mask_logits(_take(kernels, index), mask_features).sigmoid()
        if index.shape[1] == 1:
            return probs[:, 0]
        counted = index != index[:, :1]             # the chosen point again among the best
        counted[:, 0] = True
        return mean_of_agreeing(probs, self.cfg.mask_threshold, weight=counted)

    def rankings(self, center: torch.Tensor, mass: torch.Tensor, confidence: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Point scores ``(B, N)`` the box vote and the mask vote rank by, from the center-ness,
        mass-ness (probabilities) and detector confidence ``(B, N)`` of every point."""
        box_rank, mask_rank = center, mass
        if self.cfg.joint_ranking:
            box_rank = mask_rank = center + mass
        if self.cfg.rank_by_confidence:
            box_rank = box_rank * confidence
        return box_rank, mask_rank


def fuse_scale_probabilities(probs: torch.Tensor, surest: int, threshold: float,
                             min_iou: float = 0.5) -> torch.Tensor:
    """The multi-scale test's mask probabilities of one expression: ``probs (S, H, W)``, the
    chosen mask's probabilities at each scale; ``surest``, the scale whose mask point ranks highest.

    Returns ``(H, W)``: the mean probability over the scales whose mask (``> threshold``)
    overlaps the surest scale's at IoU >= ``min_iou`` (the same object seen at another size; a
    scale that chose another object is left out). One scale: its own. Averaging the agreeing
    scales measured +1.2 oIoU on the synthetic val split (docs/referring.md).
    """
    if len(probs) == 1:                         # one scale (no test_scales): nothing to fuse
        return probs[0]
    order = [surest, *(i for i in range(len(probs)) if i != surest)]
    return mean_of_agreeing(probs[order], threshold, min_iou=min_iou)


def mean_of_agreeing(probs: torch.Tensor, threshold: float, min_iou: float = 0.5,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """``probs (..., M, H, W)``, mask probabilities whose first map is the reference ->
    ``(..., H, W)``: their mean over the maps whose mask (``> threshold``) overlaps the
    reference's at IoU >= ``min_iou`` (the reference always agrees with itself). ``weight
    (..., M)`` bool leaves maps out beforehand; it must keep the reference.
    """
    masks = probs > threshold
    reference = masks[..., :1, :, :]
    inter = (masks & reference).flatten(-2).sum(-1)
    union = (masks | reference).flatten(-2).sum(-1)
    agree = (inter >= min_iou * union).to(probs.dtype)          # (..., M); 1 for the reference
    if weight is not None:
        agree = agree * weight.to(probs.dtype)
    return (probs * agree[..., None, None]).sum(-3) / agree.sum(-1)[..., None, None]


def keep_inside_box(probs: torch.Tensor, box: torch.Tensor, margin: float) -> torch.Tensor:
    """``probs (H, W)`` with zeros at the pixels whose centre lies more than ``margin`` pixels
    outside ``box (4,)`` (xyxy, pixel edges: pixel ``(i, j)`` spans ``[j, j + 1) x [i, i + 1)``)."""
    x0, y0, x1, y1 = box.tolist()
    centres = [torch.arange(n, device=probs.device, dtype=probs.dtype) + 0.5 for n in probs.shape]
    rows = (centres[0] >= y0 - margin) & (centres[0] <= y1 + margin)
    cols = (centres[1] >= x0 - margin) & (centres[1] <= x1 + margin)
    return probs * (rows[:, None] & cols[None, :])


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index (B, k)`` of ``x (B, N, ...)`` -> ``(B, k, ...)``."""
    return x[torch.arange(len(x), device=x.device)[:, None], index]


def _to_original(box: torch.Tensor, size: tuple[int, int], scale: float) -> torch.Tensor:
    """Input-pixel boxes ``(..., 4)`` clipped to the letterboxed image, in original pixels."""
    h, w = size
    limits = box.new_tensor([w, h, w, h])
    return torch.minimum(box.clamp(min=0), limits) / scale


def mask_probabilities(logits: torch.Tensor, size: tuple[float, float], orig: tuple[int, int]
                       ) -> torch.Tensor:
    """Stride-4 mask logits ``(..., S/4, S/4)`` of the square input -> probabilities
    ``(..., H0, W0)`` in original pixels (crop to the letterboxed image, then resize)."""
    return probabilities_to_original(logits.sigmoid(), size, orig)


def probabilities_to_original(probs: torch.Tensor, size: tuple[float, float],
                              orig: tuple[int, int]) -> torch.Tensor:
    """Stride-4 mask probabilities ``(..., S/4, S/4)`` of the square input -> ``(..., H0, W0)``
    in original pixels: cropped to the letterboxed image ``size``, resized bilinearly."""
    h4, w4 = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    probs = probs[..., :h4, :w4]
    up = F.interpolate(probs.reshape(1, -1, h4, w4), size=tuple(orig), mode="bilinear",
                       align_corners=False)
    return up.reshape(*probs.shape[:-2], *orig)


def mask_to_original(logits: torch.Tensor, size: tuple[float, float], orig: tuple[int, int],
                     threshold: float) -> torch.Tensor:
    """:func:`mask_probabilities` above ``threshold``: ``(..., H0, W0) bool``."""
    return mask_probabilities(logits, size, orig) > threshold


def build_pbrec(cfg: PBRECConfig, *, backbone: nn.Module | None = None,
                text_encoder: TextEncoder | None = None) -> PBRECModel:
    """Compose PBREC; ``backbone`` and ``text_encoder`` may be parts another model owns."""
    if cfg.num_classes < 1:
        raise ConfigError("pbrec: model.num_classes is 0: set it to the number of object "
                          "categories of the data (groundkit train fills it from the training split)")
    channels = cfg.backbone.fpn_channels
    first_level = int(math.log2(cfg.grid_stride))
    detector = FCOS(channels, cfg.num_classes, num_levels=1, num_convs=cfg.detector_convs,
                    size_limits=(), center_radius=cfg.center_radius, first_level=first_level)
    mask_head = PointMaskHead(channels, cfg.mask_dim, cfg.mask_convs, cfg.grid_stride)
    text_encoder = text_encoder or TextEncoder(cfg.text_encoder, freeze=cfg.freeze_text,
                                               train_layers=cfg.text_train_layers or None,
                                               adapter_rank=cfg.text_adapter_rank,
                                               adapter_alpha=cfg.text_adapter_alpha)
    visual_dim = channels + (3 if cfg.cell_colours else 0)
    encoder = VisionLanguageEncoder(visual_dim, text_encoder.dim, cfg.dim, cfg.layers, cfg.heads,
                                    cfg.ffn_dim, cfg.dropout)
    backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
    return PBRECModel(cfg, backbone, text_encoder, detector, mask_head, encoder)

