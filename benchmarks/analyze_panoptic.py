"""Whether a panoptic model gives a thing the pixels its detection box missed; prints a table.

    python benchmarks/analyze_panoptic.py --checkpoint panoptic-synthetic --data data/unseen7 \\
        --split val [--checkpoint runs/pan-A ...]

The paper's central claim (its Figs. 1 and 6): the dense instance affinity lets a detection's
segment reach past its box. For every non-crowd ground-truth thing segment matched to a detection
(same category, IoU > 0.5 between the segment and the detection's pixels in the argmax over P,
as ``PanopticModel.detections`` gives them, at the original resolution), its pixels are split
into those inside the detection's box and those outside. Printed per checkpoint: how many thing
segments were matched, the share of their pixels that lie outside the box, and the share of
those outside pixels (and of the inside ones) that the model gave to the right segment. A model
whose thing channels stop at the box reaches outside it only within the stride-4 cells the box
edge cuts (P is argmaxed on that grid, then upsampled).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader


@dataclass
class Counts:
    """Pixel and segment counts of one checkpoint over a split."""

    segments: int = 0
    matched: int = 0
    inside: int = 0
    inside_right: int = 0
    outside: int = 0
    outside_right: int = 0

    def add(self, truth: np.ndarray, pred: np.ndarray, box: np.ndarray) -> None:
        """truth, pred: ``(H, W)`` bool masks of one matched pair; box: ``(H, W)`` bool."""
        self.inside += int(np.count_nonzero(truth & box))
        self.inside_right += int(np.count_nonzero(truth & box & pred))
        self.outside += int(np.count_nonzero(truth & ~box))
        self.outside_right += int(np.count_nonzero(truth & ~box & pred))


def box_mask(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie in the xyxy ``box``: ``(H, W)`` bool."""
    ys, xs = np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5
    in_y = (ys >= box[1]) & (ys <= box[3])
    in_x = (xs >= box[0]) & (xs <= box[2])
    return in_y[:, None] & in_x[None, :]


def count(checkpoint: str, data: str, split: str, batch_size: int) -> Counts:
    from groundkit.data.panoptic_dataset import collate_panoptic
    from groundkit.engine.panoptic import PanopticTask, ground_truth, panoptic_result

    task = PanopticTask()
    model, cfg = task.load(checkpoint)
    dataset = task.dataset(cfg, data, split)
    gt = ground_truth(dataset)
    counts = Counts()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_panoptic)
    for batch in loader:
        dets = model.detections(batch["images"], batch["image_sizes"], batch["orig_sizes"])
        for image_id, det in zip(batch["image_ids"], dets):
            truth = panoptic_result(gt, image_id).id_map
            masks, boxes = det["masks"].numpy(), det["boxes"].numpy()
            categories = det["category_ids"].tolist()
            for segment in gt.annotation(image_id).segments:
                if segment.iscrowd or not gt.categories[segment.category_id].isthing:
                    continue
                counts.segments += 1
                inside = truth == segment.id
                for d, category in enumerate(categories):
                    if category != segment.category_id:
                        continue
                    union = np.count_nonzero(inside | masks[d])
                    if union and np.count_nonzero(inside & masks[d]) / union > 0.5:
                        counts.matched += 1  # masks are disjoint: at most one match
                        counts.add(inside, masks[d], box_mask(boxes[d], inside.shape))
                        break
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"{args.data} [{args.split}]: ground-truth thing segments matched to a detection "
          f"(IoU > 0.5) and their pixels outside / inside the detection's box")
    print(f"{'checkpoint':<28}{'matched':>12}{'% outside box':>15}{'% of those right':>18}"
          f"{'% inside right':>16}")
    for checkpoint in args.checkpoint:
        c = count(checkpoint, args.data, args.split, args.batch_size)
        total = c.inside + c.outside
        print(f"{checkpoint:<28}{f'{c.matched}/{c.segments}':>12}"
              f"{100 * c.outside / max(total, 1):15.2f}"
              f"{100 * c.outside_right / max(c.outside, 1):18.2f}"
              f"{100 * c.inside_right / max(c.inside, 1):16.2f}")


if __name__ == "__main__":
    main()
