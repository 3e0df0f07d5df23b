"""Where PBREC / PBREC-MT loses, by stage and by expression type; prints tables.

    python benchmarks/analyze_referring.py --checkpoint runs/pbrec_synthetic --data data/synthetic
    python benchmarks/analyze_referring.py --checkpoint /tmp/pb_overfit2 --data data/synthetic \
        --max-items 64

Every number comes from the model on the split (rows: all expressions, each type the refs name:
attributes / relation / extreme, then the thirds of the expressions by the size of their referent,
the square root of its box area in original pixels):

1. Proposal ceiling (the paper's Table 1, for the point proposals): the share of expressions whose
   referent box is matched (IoU >= 0.5) by ANY grid point's box (``detector.point_boxes``, clipped
   to the letterboxed image, in input pixels against the item's referent box), and by one of the
   top-k points ranked by center-ness. The same for masks, ranked by mass-ness: each point's mask
   (sigmoid > ``mask_threshold``) at stride 4, cut to the letterboxed image, against the referent
   mask area-downsampled to stride 4 (a cell is in when the mask covers half of it).
2. Comprehension: the share of expressions whose top-1 center-ness point is a positive point of
   the center-ness target (``center_targets > 0``), and the same for mass-ness (``mass_targets``).
3. The IoU vote (the paper's Table 5): REC Acc@0.5 of ``model.refer`` for top-k in 1, 4, 8, 12,
   16, ranking by center-ness and by center-ness x detector confidence, and RES oIoU of the mask
   vote for the same k; both in original pixels against the instances' boxes and masks. With the
   checkpoint's ``joint_ranking`` both votes rank by center-ness + mass-ness.
4. Stages, at the checkpoint's own setting (its top_k and ranking): correct; lost by the vote (a
   matching proposal was among the top k); lost by the ranking (a point matched, none in the top
   k); lost by the localisation (no point matches at all). Boxes at IoU >= 0.5, and masks at mask
   IoU >= 0.5 on the stride-4 grid of table 1. Computed in input pixels, so the "correct" column
   can differ from table 3 by a rounding of the letterbox on a rare expression.
5. Where RES oIoU is lost, in original pixels: the oIoU of the checkpoint's own masks; of the
   best-matching point's mask for every expression (a perfect ranking over the same proposals);
   and of the referent's own mask area-downsampled to the stride-4 grid and resized back as a
   prediction is (the resolution limit of stride-4 masks: no point's mask can do better).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

KS = (1, 4, 8, 12, 16)
STAGES = ("correct", "vote lost", "ranking lost", "no proposal")


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index (B, k)`` of ``x (B, N, ...)`` -> ``(B, k, ...)``."""
    return x[torch.arange(len(x), device=x.device)[:, None], index]


def point_box_ious(boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``boxes (B, N, 4)``, ``gt (B, 4)`` xyxy -> ``(B, N)`` IoU of each point's box with its row's."""
    lt = torch.maximum(boxes[..., :2], gt[:, None, :2])
    rb = torch.minimum(boxes[..., 2:], gt[:, None, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    union = area + (gt[:, 2:] - gt[:, :2]).clamp(min=0).prod(-1)[:, None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def point_mask_ious(masks: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``masks (B, N, h, w)``, ``gt (B, h, w)`` bool -> ``(B, N)`` mask IoUs."""
    inter = (masks & gt[:, None]).flatten(2).sum(-1).float()
    union = (masks | gt[:, None]).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def stage_of(hit: torch.Tensor, chosen: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``hit (B, N)`` bool, chosen point ``(B,)``, top-k points ``(B, k)`` -> index in STAGES."""
    correct = hit.gather(1, chosen[:, None])[:, 0]
    in_top = hit.gather(1, top).any(1)
    anywhere = hit.any(1)
    return torch.where(correct, 0, torch.where(in_top, 1, torch.where(anywhere, 2, 3)))


@torch.no_grad()
def analyse(model, dataset, batch_size: int, device: str) -> dict[str, np.ndarray]:
    """Per-expression arrays of every analysis (see the module docstring)."""
    from groundkit.data.referring import collate_referring
    from groundkit.metrics.referring import mask_intersection_union
    from groundkit.models.panoptic.detector import cell_centres
    from groundkit.models.referring.comprehension import (
        center_targets,
        iou_vote,
        mass_targets,
        pairwise_box_iou,
        pairwise_mask_iou,
    )

    base = model.cfg
    stride = base.grid_stride
    cols: dict[str, list] = {}

    def add(name: str, values) -> None:
        cols.setdefault(name, []).append(np.asarray(values))

    for start in range(0, len(dataset), batch_size):
        index = range(start, min(start + batch_size, len(dataset)))
        batch = collate_referring([dataset[i] for i in index])
        samples = [dataset.samples[i] for i in index]
        features = model.encode_images(batch["images"].to(device))
        expressions = batch["expressions"]
        center, mass = (x.sigmoid() for x in model.point_logits(features, expressions))
        boxes, confidence = model.detector.point_boxes(model.detector(features))   # (B, N, 4), (B, N)
        limits = torch.tensor([[w, h, w, h] for h, w in batch["image_sizes"]], dtype=boxes.dtype,
                              device=device)
        boxes = torch.minimum(boxes.clamp(min=0), limits[:, None])                 # as _to_original
        gt_box = batch["box"].to(device)
        box_hit = point_box_ious(boxes, gt_box) >= 0.5

        kernels, mask_features = model.mask_head(features, model.grid)
        logits = model.mask_head.mask_logits(kernels, mask_features)               # (B, N, S/4, S/4)
        valid = torch.zeros(logits.shape[-2:], dtype=torch.bool, device=device).repeat(len(index), 1, 1)
        for b, (h, w) in enumerate(batch["image_sizes"]):
            valid[b, :-(-h // 4), :-(-w // 4)] = True
        threshold = float(np.log(base.mask_threshold / (1 - base.mask_threshold)))
        masks = (logits > threshold) & valid[:, None]
        gt_mask = F.avg_pool2d(batch["mask"].float()[:, None].to(device), 4)[:, 0] >= 0.5
        mask_hit = point_mask_ious(masks, gt_mask) >= 0.5

        # 1. proposal ceilings
        by_center = center.topk(max(KS), dim=1).indices
        by_mass = mass.topk(max(KS), dim=1).indices
        add("box any", box_hit.any(1).cpu())
        add("mask any", mask_hit.any(1).cpu())
        for k in KS:
            add(f"box top-{k}", box_hit.gather(1, by_center[:, :k]).any(1).cpu())
            add(f"mask top-{k}", mask_hit.gather(1, by_mass[:, :k]).any(1).cpu())

        # 2. comprehension: is the top-1 point a positive point of the target?
        points = cell_centres(features[model.grid].shape[-2:], stride, device)
        c_target = center_targets(gt_box, points, stride)
        m_target = mass_targets(batch["mask"].to(device), points, stride)
        add("center hit", (c_target.gather(1, by_center[:, :1])[:, 0] > 0).cpu())
        add("mass hit", (m_target.gather(1, by_mass[:, :1])[:, 0] > 0).cpu())
        add("center positives", (c_target > 0).sum(1).cpu())
        add("mass positives", (m_target > 0).sum(1).cpu())

        # 4. stages at the checkpoint's setting (the vote exactly as refer does it)
        box_rank, mask_rank = model.rankings(center, mass, confidence)
        chosen, top = iou_vote(box_rank, lambda i: pairwise_box_iou(_take(boxes, i)), base.top_k)
        add("box stage", stage_of(box_hit, chosen, top).cpu())
        chosen, top = iou_vote(mask_rank, lambda i: pairwise_mask_iou(_take(logits, i) > 0), base.top_k)
        add("mask stage", stage_of(mask_hit, chosen, top).cpu())

        # 5. oIoU with a perfect ranking, and the stride-4 resolution limit
        for b, sample in enumerate(samples):
            size, orig = batch["image_sizes"][b], batch["orig_sizes"][b]
            gt = torch.from_numpy(dataset.instances.gt_mask(sample)).to(device)
            inter, union = best_point_mask(logits[b], size, orig, base.mask_threshold, gt)
            add("inter best", [inter])
            add("union best", [union])
            inter, union = stride4_mask_limit(gt, size, batch["images"].shape[-1], base.mask_threshold)
            add("inter limit", [inter])
            add("union limit", [union])

        # 3. the vote through model.refer, in original pixels
        gt_boxes = np.stack([dataset.instances.gt_box(s) for s in samples])
        gt_masks = [dataset.instances.gt_mask(s) for s in samples]
        add("gt box", gt_boxes)
        for k in KS:
            for by_conf in (False, True):
                model.cfg = replace(base, top_k=k, rank_by_confidence=by_conf)
                results = model.refer(features, expressions, batch["image_sizes"],
                                      batch["orig_sizes"], batch["scales"])
                add(f"box k{k} conf{int(by_conf)}", np.stack([r.box for r in results]))
                if not by_conf:   # the mask vote ranks by mass-ness either way
                    counts = np.array([mask_intersection_union(r.mask, g)
                                       for r, g in zip(results, gt_masks)])
                    add(f"inter k{k}", counts[:, 0])
                    add(f"union k{k}", counts[:, 1])
        model.cfg = base
    return {name: np.concatenate(parts) for name, parts in cols.items()}


def best_point_mask(logits: torch.Tensor, size: tuple[int, int], orig: tuple[int, int],
                    threshold: float, gt: torch.Tensor) -> tuple[int, int]:
    """``logits (N, S/4, S/4)`` of one image's points, ``gt (H0, W0)`` bool -> (intersection,
    union) of the point mask (resized as ``refer`` resizes it) with the highest IoU against ``gt``."""
    from groundkit.models.referring.pbrec import mask_to_original

    masks = mask_to_original(logits, size, orig, threshold)
    inter = (masks & gt).flatten(1).sum(1)
    union = (masks | gt).flatten(1).sum(1)
    best = int((inter / union.clamp(min=1)).argmax())
    return int(inter[best]), int(union[best])


def stride4_mask_limit(gt: torch.Tensor, size: tuple[int, int], side: int, threshold: float
                       ) -> tuple[int, int]:
    """(intersection, union) with ``gt (H0, W0)`` bool of ``gt`` itself taken to the stride-4
    grid of the letterboxed input (resized to ``size``, pasted on the ``side``-square, each cell's
    covered fraction) and brought back as ``refer`` brings a prediction (bilinear, threshold)."""
    canvas = gt.new_zeros((side, side), dtype=torch.float32)
    canvas[:size[0], :size[1]] = F.interpolate(gt.float()[None, None], size=tuple(size),
                                               mode="bilinear", align_corners=False)[0, 0]
    cells = F.avg_pool2d(canvas[None, None], 4)[0, 0]
    h4, w4 = -(-size[0] // 4), -(-size[1] // 4)
    back = F.interpolate(cells[:h4, :w4][None, None], size=tuple(gt.shape), mode="bilinear",
                         align_corners=False)[0, 0] > threshold
    return int((back & gt).sum()), int((back | gt).sum())


def groups_of(dataset, boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Row name -> expression indices: "all", each expression type present, then the thirds of
    the expressions by their referent's box area (``boxes (E, 4)`` xyxy): "small <= A px",
    "medium <= B px" and "large", A and B the terciles of sqrt(area)."""
    types = np.array(dataset.types)
    groups = {"all": np.arange(len(types))}
    for kind in ("attributes", "relation", "extreme"):
        if (types == kind).any():
            groups[kind] = np.nonzero(types == kind)[0]
    side = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    if len(side) >= 3:
        low, high = np.quantile(side, [1 / 3, 2 / 3])
        groups[f"small<={low:.0f}px"] = np.nonzero(side <= low)[0]
        groups[f"medium<={high:.0f}px"] = np.nonzero((side > low) & (side <= high))[0]
        groups["large"] = np.nonzero(side > high)[0]
    return groups


def table(title: str, header: list[str], groups: dict[str, np.ndarray], cell, width: int = 8) -> None:
    """One row per group: its size then ``cell(indices, column)`` for each column, in percent."""
    print(title)
    print(f"{'expressions':<16}{'n':>6}" + "".join(f"{h:>{width}}" for h in header))
    for name, index in groups.items():
        values = [cell(index, h) for h in header]
        print(f"{name:<16}{len(index):>6}" + "".join(
            f"{'n/a':>{width}}" if v is None or np.isnan(v) else f"{100 * v:>{width}.1f}" for v in values))
    print()


def report(cols: dict[str, np.ndarray], groups: dict[str, np.ndarray], cfg, n_points: int) -> None:
    from groundkit.metrics.referring import rec_accuracy, res_scores

    def mean(name: str):
        return lambda index, h: float(cols[name.format(h)][index].mean()) if len(index) else None

    tops = [f"top-{k}" for k in KS]
    table(f"1a. Box proposal ceiling: referent box matched (IoU >= 0.5) by any of the {n_points} "
          "point boxes / by one of the top-k by center-ness (%)",
          ["any"] + tops, groups, mean("box {}"))
    table("1b. Mask proposal ceiling: referent mask matched (mask IoU >= 0.5, stride 4, referent mask "
          "area-downsampled) by any point's mask / one of the top-k by mass-ness (%)",
          ["any"] + tops, groups, mean("mask {}"))
    hits = {"center": cols["center hit"], "mass": cols["mass hit"],
            "c has +": cols["center positives"] > 0, "m has +": cols["mass positives"] > 0}
    table("2. Comprehension hit rate: top-1 point is a positive point of the target (%); "
          "'has +' = the target has a positive point at all",
          list(hits), groups, lambda index, h: float(hits[h][index].mean()) if len(index) else None)

    def rec(index, h):
        k, by_conf = h.split("/")
        pred = cols[f"box k{k} conf{int(by_conf == 'cxf')}"][index]
        return rec_accuracy(pred, cols["gt box"][index])["acc@0.5"] if len(index) else None

    joint = " (+ mass-ness: joint_ranking)" if cfg.joint_ranking else ""
    table(f"3a. REC Acc@0.5 of the IoU vote over the top-k (k/c: ranked by center-ness{joint}, "
          "k/cxf: by the same x detector confidence), original pixels (%)",
          [f"{k}/c" for k in KS] + [f"{k}/cxf" for k in KS], groups, rec)
    table(f"3b. RES oIoU of the mask vote over the top-k by mass-ness{joint.replace('mass', 'center')}, "
          "original pixels (%)",
          [f"k={k}" for k in KS], groups,
          lambda index, h: res_scores(cols[f"inter k{h[2:]}"][index],
                                      cols[f"union k{h[2:]}"][index])["oiou"] if len(index) else None)
    box_rank, mask_rank = "center-ness", "mass-ness"
    if cfg.joint_ranking:
        box_rank = mask_rank = "center-ness + mass-ness"
    box_rank += " x confidence" if cfg.rank_by_confidence else ""
    for part, name, ranked in (("a", "box", box_rank), ("b", "mask", mask_rank)):
        table(f"4{part}. Where the {name} vote loses at the checkpoint's setting (top_k={cfg.top_k}, "
              f"ranked by {ranked}), input pixels (%)",
              list(STAGES), groups,
              lambda index, h, name=name: float((cols[f"{name} stage"][index] == STAGES.index(h)).mean())
              if len(index) else None, width=14)
    # column -> the suffix of its "inter ..." / "union ..." columns (None: the checkpoint's own
    # k is not among KS, so its masks were not scored)
    oiou = {"model": f"k{cfg.top_k}" if cfg.top_k in KS else None, "best point": "best",
            "stride-4 limit": "limit"}

    def oiou_of(index, h):
        if oiou[h] is None or not len(index):
            return None
        return res_scores(cols[f"inter {oiou[h]}"][index], cols[f"union {oiou[h]}"][index])["oiou"]

    table(f"5. RES oIoU (%): the checkpoint's masks (top_k={cfg.top_k}) / the best point's mask "
          "for every expression (a perfect ranking) / the referent's mask at stride 4 (the "
          "resolution limit)", list(oiou), groups, oiou_of, width=16)


def main() -> None:
    from groundkit.engine.tasks import get_task

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or bundled name")
    parser.add_argument("--data", required=True, help="data folder with refcoco/refs(unc).p")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-items", type=int, default=None, help="first N sentences only")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    task = get_task("referring")
    model, cfg = task.load(args.checkpoint, device=args.device)
    cfg = replace(cfg, data=replace(cfg.data, max_items=None, cache=False))  # not the training limit
    dataset = task.dataset(cfg, args.data, args.split, max_items=args.max_items)
    task.prepare_model(model, dataset)
    cols = analyse(model, dataset, args.batch_size, args.device)
    side = cfg.data.input_size // model.cfg.grid_stride
    print(f"{args.checkpoint} on {args.data} [{args.split}]: {len(dataset)} expressions, "
          f"{side} x {side} points (stride {model.cfg.grid_stride})\n")
    report(cols, groups_of(dataset, cols["gt box"]), model.cfg, side * side)


if __name__ == "__main__":
    main()
