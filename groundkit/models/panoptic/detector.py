"""FCOS (Tian et al. 2019), the object detection submodule: anchor-free, one location per FPN cell.

The paper uses a Faster R-CNN box head and says any detector fits (App. A.2); FCOS is one dense
head with no RoI sampling, which keeps the whole model a few small files. Detections keep their
scores differentiable, so the panoptic loss reaches the classification branch through the dynamic
potential (App. A.4: "gradients from the panoptic submodule flow to the object detection submodule").

Per level with stride s the head predicts class logits, distances ``(l, t, r, b)`` from the cell centre
to the box sides (in units of s) and a centre-ness logit (on the regression tower, as in FCOS v2).
Levels P3..P5 come from the backbone (from P``first_level``: P5 alone is the point detector of PBREC),
P6/P7 from stride-2 convs on P5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from groundkit.ops.boxes import batched_nms, clip_boxes
from groundkit.vision.neck import ConvGNReLU

INF = float("inf")


@dataclass
class LevelOutputs:
    """Raw head outputs of all levels, each flattened over cells and concatenated across levels.

    cls: ``(B, N, C)`` logits; ltrb: ``(B, N, 4)`` distances in pixels; ctr: ``(B, N)`` logits;
    points: ``(N, 2)`` cell centres ``(x, y)``; strides: ``(N,)``; level: ``(N,)`` level index.
    """

    cls: torch.Tensor
    ltrb: torch.Tensor
    ctr: torch.Tensor
    points: torch.Tensor
    strides: torch.Tensor
    level: torch.Tensor


def cell_centres(size: tuple[int, int], stride: int,
                 device: torch.device | None = None) -> torch.Tensor:
    """Centres ``(h*w, 2)`` as ``(x, y)`` pixels of a stride-``stride`` grid of ``size = (h, w)``,
    row-major."""
    h, w = size
    ys = torch.arange(h, device=device, dtype=torch.float32) * stride + stride // 2
    xs = torch.arange(w, device=device, dtype=torch.float32) * stride + stride // 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)


class FCOSHead(nn.Module):
    """Shared towers over levels. forward: list of ``(B, C_in, h_l, w_l)`` -> per level
    ``cls (B, K, h, w)``, ``ltrb (B, 4, h, w)`` pixels, ``ctr (B, 1, h, w)``."""

    def __init__(self, in_channels: int, num_classes: int, strides: tuple[int, ...],
                 num_convs: int = 4, prior_prob: float = 0.01) -> None:
        super().__init__()
        c = in_channels
        self.cls_tower = nn.Sequential(*[ConvGNReLU(c, c) for _ in range(num_convs)])
        self.box_tower = nn.Sequential(*[ConvGNReLU(c, c) for _ in range(num_convs)])
        self.cls_logits = nn.Conv2d(c, num_classes, 3, padding=1)
        self.ltrb_pred = nn.Conv2d(c, 4, 3, padding=1)
        self.ctr_logits = nn.Conv2d(c, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(strides)))
        self.strides = strides
        for conv in (self.cls_logits, self.ltrb_pred, self.ctr_logits):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        # Focal-loss prior: every location starts as background with probability 1 - prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]
                ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        out = []
        for i, (x, stride) in enumerate(zip(features, self.strides)):
            box = self.box_tower(x)
            # exp keeps distances positive; the clamp guards against overflow early in training.
            ltrb = (self.scales[i] * self.ltrb_pred(box)).clamp(max=10.0).exp() * stride
            out.append((self.cls_logits(self.cls_tower(x)), ltrb, self.ctr_logits(box)))
        return out


class FCOS(nn.Module):
    """Detector over backbone levels ``p{first_level}..p5`` (+ P6, P7 made here when ``num_levels``
    asks), strides ``2**first_level * 2**i``.

    ``forward(features) -> LevelOutputs``; ``losses(outputs, gt_boxes, gt_classes)`` -> dict;
    ``detect(outputs, image_sizes)`` -> per image ``{"boxes", "scores", "classes"}``;
    ``point_boxes(outputs)`` -> one box and score per point (no threshold, no NMS);
    ``decode(outputs, i, size)`` -> every point's box, class probabilities, centre-ness logit (image i).
    ``num_levels=1, first_level=5, size_limits=()`` is a P5-only point detector (one box per cell).
    """

    def __init__(self, in_channels: int, num_classes: int, num_levels: int = 5, num_convs: int = 4,
                 size_limits: tuple[float, ...] = (64, 128, 256, 512), center_radius: float = 1.5,
                 box_loss: str = "giou", focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 pre_nms_thresh: float = 0.05, pre_nms_top_n: int = 1000, nms_thresh: float = 0.6,
                 max_detections: int = 100, first_level: int = 3) -> None:
        super().__init__()
        if first_level not in (3, 4, 5):
            raise ValueError(f"FCOS: first_level must be 3, 4 or 5, got {first_level}")
        max_levels = 8 - first_level  # up to P7
        if not 1 <= num_levels <= max_levels or len(size_limits) != num_levels - 1:
            raise ValueError(f"FCOS: num_levels must be 1..{max_levels} (from P{first_level}) with "
                             f"num_levels - 1 size limits, got {num_levels} and {size_limits}")
        if box_loss not in ("giou", "iou"):
            raise ValueError(f"FCOS: box_loss must be 'giou' or 'iou', got {box_loss!r}")
        self.num_classes = num_classes
        self.first_level = first_level
        self.strides = tuple(2 ** first_level * 2 ** i for i in range(num_levels))
        bounds = [-1.0, *size_limits, INF]  # level i takes max(l, t, r, b) in (bounds[i], bounds[i+1]]
        self.limits = list(zip(bounds[:-1], bounds[1:]))
        extra = max(0, num_levels - (6 - first_level))  # levels past P5
        self.extra = nn.ModuleList([nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1)
                                    for _ in range(extra)])
        self.head = FCOSHead(in_channels, num_classes, self.strides, num_convs)
        self.center_radius, self.box_loss = center_radius, box_loss
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.pre_nms_thresh, self.pre_nms_top_n = pre_nms_thresh, pre_nms_top_n
        self.nms_thresh, self.max_detections = nms_thresh, max_detections

    def pyramid(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        levels = [features[f"p{k}"] for k in range(self.first_level, 6)][:len(self.strides)]
        x = features["p5"]
        for i, conv in enumerate(self.extra):
            x = conv(x if i == 0 else F.relu(x))
            levels.append(x)
        return levels

    def forward(self, features: dict[str, torch.Tensor]) -> LevelOutputs:
        cls, ltrb, ctr, points, strides, level = [], [], [], [], [], []
        for i, (c, r, t) in enumerate(self.head(self.pyramid(features))):
            pts = cell_centres(c.shape[-2:], self.strides[i], c.device)
            cls.append(c.flatten(2).transpose(1, 2))
            ltrb.append(r.flatten(2).transpose(1, 2))
            ctr.append(t.flatten(1))
            points.append(pts)
            strides.append(torch.full((len(pts),), self.strides[i], device=c.device))
            level.append(torch.full((len(pts),), i, device=c.device, dtype=torch.long))
        return LevelOutputs(torch.cat(cls, 1), torch.cat(ltrb, 1), torch.cat(ctr, 1), torch.cat(points),
                            torch.cat(strides), torch.cat(level))

    # --- training ------------------------------------------------------------------------------

    def targets(self, out: LevelOutputs, gt_boxes: list[torch.Tensor], gt_classes: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """FCOS assignment of every point of a batch.

        gt_boxes: per image ``(G_i, 4)`` xyxy pixels; gt_classes: per image ``(G_i,)`` in ``[0, K)``.
        Returns labels ``(B, N)`` (``num_classes`` = background), ltrb targets ``(B, N, 4)`` pixels and
        matched ``(B, N)`` long, the index of the point's box in ``gt_boxes[i]`` (-1 = background),
        so that other per-point heads (a mask per point) train on the same instance as the box.
        """
        limits = torch.tensor(self.limits, device=out.points.device)[out.level]
        boxes, classes, valid = pad_boxes(gt_boxes, gt_classes, out.points)  # one batched assignment
        matched, reg = match_points(out.points, out.strides, limits, boxes, self.center_radius,
                                    valid)
        return point_labels(matched, classes, self.num_classes), reg, matched

    def losses(self, out: LevelOutputs, gt_boxes: list[torch.Tensor], gt_classes: list[torch.Tensor],
               targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:
        """Focal loss (per positive), box loss weighted by centre-ness, centre-ness BCE.

        gt_boxes: per image ``(G_i, 4)`` xyxy pixels; gt_classes: per image ``(G_i,)`` in ``[0, K)``;
        targets: :meth:`targets` of the same, when the caller needs them too (assigned once).
        """
        labels, reg, _ = targets or self.targets(out, gt_boxes, gt_classes)  # (B, N), (B, N, 4)
        pos = labels < self.num_classes
        num_pos = max(int(pos.sum()), 1)
        onehot = F.one_hot(labels, self.num_classes + 1)[..., :-1].to(out.cls.dtype)
        loss_cls = sigmoid_focal_loss(out.cls, onehot, self.focal_alpha, self.focal_gamma) / num_pos
        reg_pos, pred_pos, ctr_pos = reg[pos], out.ltrb[pos], out.ctr[pos]
        ctr_target = centerness(reg_pos)
        loss_ctr = F.binary_cross_entropy_with_logits(ctr_pos, ctr_target, reduction="sum") / num_pos
        box = ltrb_iou_loss(pred_pos, reg_pos, self.box_loss)
        loss_box = (box * ctr_target).sum() / ctr_target.sum().clamp(min=1e-6)
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}

    # --- inference -----------------------------------------------------------------------------

    def detect(self, out: LevelOutputs, image_sizes: list[tuple[int, int]], score_thresh: float = 0.05
               ) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes": (D, 4) xyxy, "scores": (D,), "classes": (D,) int64}``, at most
        ``max_detections``, score ``sqrt(p_class * p_centre)``. Scores keep their autograd graph."""
        return [self._detect_one(out, i, size, score_thresh) for i, size in enumerate(image_sizes)]

    def point_boxes(self, out: LevelOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """One proposal per point, no threshold and no NMS (PBREC's localisation stage).

        Returns boxes ``(B, N, 4)`` xyxy pixels, not clipped (the caller clips to its image), and
        scores ``(B, N)`` = ``sqrt(max_k p_k * p_centre)``, the score ``detect`` gives the point's
        best class. Both keep their autograd graph.
        """
        scores = point_scores(out.cls.sigmoid().amax(dim=2), out.ctr)
        return ltrb_to_boxes(out.points, out.ltrb), scores

    def decode(self, out: LevelOutputs, i: int, size: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every point of image ``i`` as the detector reads it: boxes ``(N, 4)`` xyxy clipped to
        ``size = (h, w)`` (detached), class probabilities ``(N, K)`` and centre-ness logits ``(N,)``
        (both keep their autograd graph). A point's score for class k is :func:`point_scores` of the
        two; a box is usable when :func:`nonempty`."""
        boxes = clip_boxes(ltrb_to_boxes(out.points, out.ltrb[i].detach()), size)
        return boxes, out.cls[i].sigmoid(), out.ctr[i]

    def _detect_one(self, out: LevelOutputs, i: int, size: tuple[int, int], score_thresh: float
                    ) -> dict[str, torch.Tensor]:
        all_boxes, prob, ctr_logits = self.decode(out, i, size)  # (N, 4), (N, K), (N,)
        boxes, scores, classes = [], [], []
        for lvl in range(len(self.strides)):
            cells = torch.nonzero(out.level == lvl).flatten()
            p = prob[cells]
            cand = torch.nonzero(p.detach() > self.pre_nms_thresh)  # (M, 2) cell, class
            if len(cand) > self.pre_nms_top_n:
                cand = cand[p.detach()[cand[:, 0], cand[:, 1]].topk(self.pre_nms_top_n).indices]
            cell = cells[cand[:, 0]]
            scores.append(point_scores(p[cand[:, 0], cand[:, 1]], ctr_logits[cell]))
            boxes.append(all_boxes[cell])
            classes.append(cand[:, 1])
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        valid = nonempty(boxes) & (scores.detach() >= score_thresh)
        boxes, scores, classes = boxes[valid], scores[valid], classes[valid]
        keep = batched_nms(boxes, scores.detach(), classes, self.nms_thresh)[:self.max_detections]
        return {"boxes": boxes[keep], "scores": scores[keep], "classes": classes[keep]}


def point_scores(prob: torch.Tensor, ctr_logits: torch.Tensor) -> torch.Tensor:
    """The detection score ``sqrt(p_class * sigmoid(ctr_logits))`` that ranks detections (FCOS),
    elementwise (``prob (N, K)`` with ``ctr_logits (N, 1)`` broadcasts to every class)."""
    return (prob * ctr_logits.sigmoid()).sqrt()


def nonempty(boxes: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which ``boxes (N, 4)`` xyxy have positive width and height."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def ltrb_to_boxes(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """points ``(..., 2)`` ``(x, y)`` and distances ``(..., 4)`` -> boxes ``(..., 4)`` xyxy."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def assign_targets(points: torch.Tensor, strides: torch.Tensor, limits: torch.Tensor,
                   gt_boxes: torch.Tensor, gt_classes: torch.Tensor, num_classes: int,
                   center_radius: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """FCOS target assignment for one image.

    points: ``(N, 2)`` cell centres; strides: ``(N,)``; limits: ``(N, 2)`` the level's ``(lo, hi]``
    range for ``max(l, t, r, b)``; gt_boxes: ``(G, 4)`` xyxy; gt_classes: ``(G,)``.
    A cell is positive for a box when it lies inside the box (inside its centre region of radius
    ``center_radius * stride`` when that is > 0) and the box's largest distance fits the level; a cell
    positive for several boxes takes the smallest. Returns labels ``(N,)`` (``num_classes`` =
    background) and ltrb ``(N, 4)`` pixels (zeros on background).
    """
    matched, reg = match_points(points, strides, limits, gt_boxes, center_radius)
    return point_labels(matched, gt_classes, num_classes), reg


def point_labels(matched: torch.Tensor, gt_classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """matched ``(N,)`` / ``(B, N)`` box index or -1, gt_classes ``(G,)`` / ``(B, G)`` -> labels of
    matched's shape, long, ``num_classes`` where unmatched."""
    classes = gt_classes.to(matched.device, torch.long)
    if classes.shape[-1] == 0:
        return torch.full_like(matched, num_classes)
    found = torch.gather(classes, -1, matched.clamp(min=0))
    return torch.where(matched >= 0, found, torch.full_like(found, num_classes))


def pad_boxes(gt_boxes: list[torch.Tensor], gt_classes: list[torch.Tensor], like: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image boxes ``(G_i, 4)`` and classes ``(G_i,)`` -> boxes ``(B, G, 4)`` in ``like``'s dtype,
    classes ``(B, G)`` long and valid ``(B, G)`` bool (G = max G_i; zeros and False past G_i), on
    ``like``'s device."""
    lengths = torch.tensor([len(x) for x in gt_boxes], dtype=torch.long)
    g = int(lengths.max()) if len(lengths) else 0
    valid = (torch.arange(g)[None] < lengths[:, None]).to(like.device)  # (B, G)
    boxes = like.new_zeros(len(gt_boxes), g, 4)
    classes = torch.zeros(valid.shape, dtype=torch.long, device=like.device)
    if g:  # a few kernels for the batch, not three per image (a GPU step launches fewer)
        boxes[valid] = torch.cat(list(gt_boxes)).to(boxes)
        classes[valid] = torch.cat(list(gt_classes)).to(like.device, torch.long)
    return boxes, classes, valid


def match_points(points: torch.Tensor, strides: torch.Tensor, limits: torch.Tensor,
                 gt_boxes: torch.Tensor, center_radius: float = 1.5,
                 valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The FCOS rule of ``assign_targets`` (see there), as box indices, for one image's boxes
    ``(G, 4)`` or a batch's padded boxes ``(B, G, 4)`` with ``valid (B, G)`` (see :func:`pad_boxes`).

    Returns matched ``(N,)`` / ``(B, N)`` long, the index in the image's boxes of each point's box or
    -1 (background), and ltrb ``(N, 4)`` / ``(B, N, 4)`` pixels (zeros on background). A point
    inside several boxes takes the smallest, the first of equal areas.
    """
    if gt_boxes.dim() == 2:
        matched, reg = match_points(points, strides, limits, gt_boxes[None], center_radius)
        return matched[0], reg[0]
    b, n = len(gt_boxes), len(points)
    x, y = points[None, :, 0, None], points[None, :, 1, None]  # (1, N, 1)
    boxes = gt_boxes[:, None]  # (B, 1, G, 4)
    ltrb = torch.stack([x - boxes[..., 0], y - boxes[..., 1],
                        boxes[..., 2] - x, boxes[..., 3] - y], dim=3)  # (B, N, G, 4)
    inside = ltrb.min(dim=3).values > 0  # (B, N, G)
    if center_radius > 0:
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, 1, G, 2)
        radius = (strides * center_radius)[None, :, None, None]  # (1, N, 1, 1)
        lo = torch.maximum(centre - radius, boxes[..., :2])  # (B, N, G, 2)
        hi = torch.minimum(centre + radius, boxes[..., 2:])
        p = points[None, :, None]  # (1, N, 1, 2)
        inside &= (p > lo).all(dim=3) & (p < hi).all(dim=3)
    if valid is not None:
        inside &= valid[:, None]
    reach = ltrb.max(dim=3).values
    fits = (reach > limits[None, :, :1]) & (reach <= limits[None, :, 1:])
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).expand(b, n, -1)
    area = torch.where(inside & fits, area, torch.full_like(area, INF))
    if area.shape[-1] == 0:  # no boxes in the batch
        return (torch.full((b, n), -1, dtype=torch.long, device=points.device),
                points.new_zeros(b, n, 4))
    min_area, best = area.min(dim=2)
    found = min_area < INF
    reg = torch.gather(ltrb, 2, best[..., None, None].expand(b, n, 1, 4))[:, :, 0] * found[..., None]
    return torch.where(found, best, torch.full_like(best, -1)), reg


def centerness(ltrb: torch.Tensor) -> torch.Tensor:
    """``(P, 4)`` positive distances -> ``(P,)`` ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))``."""
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return (lr.amin(1) / lr.amax(1) * tb.amin(1) / tb.amax(1)).sqrt()


def ltrb_iou_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "giou") -> torch.Tensor:
    """Per-pair loss of boxes that share their anchor point. pred, target: ``(P, 4)`` ltrb -> ``(P,)``.

    ``"giou"``: ``1 - GIoU``; ``"iou"``: ``-log IoU`` (the original FCOS / UnitBox loss).
    """
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inner = torch.minimum(pred, target)
    inter = (inner[:, 0] + inner[:, 2]) * (inner[:, 1] + inner[:, 3])
    union = pred_area + target_area - inter
    iou = (inter + 1.0) / (union + 1.0)  # +1: a finite loss for degenerate boxes, as FCOS does
    if kind == "iou":
        return -iou.log()
    outer = torch.maximum(pred, target)
    enclosing = (outer[:, 0] + outer[:, 2]) * (outer[:, 1] + outer[:, 3]) + 1e-7
    return 1.0 - (iou - (enclosing - union) / enclosing)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Summed focal loss (Lin et al. 2017). logits, targets: same shape, targets 0/1."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).sum()
