"""The field's metrics, computed exactly as the official code does (NumPy only, no models).

- :mod:`png_ar`: Average Recall of panoptic narrative grounding (+ recall curves, mask IoU);
- :mod:`panoptic_quality`: PQ / SQ / RQ as the COCO panoptic API;
- :mod:`referring`: REC Acc@0.5, RES oIoU / mIoU / Pr@X; :mod:`proposals`: proposal recall;
- :mod:`files`: the same metrics on prediction files (``groundkit score``); :mod:`plots`: figures.
"""
from groundkit.metrics.panoptic_quality import PQStat, pq_average, pq_stats_image
from groundkit.metrics.png_ar import average_recall, mask_iou, mask_ious, png_average_recall, recall_curve
from groundkit.metrics.proposals import proposal_recall
from groundkit.metrics.referring import (
                                      box_iou,
                                      box_iou_pairwise,
                                      mask_intersection_union,
                                      rec_accuracy,
                                      res_scores,
)

__all__ = [
    "PQStat", "pq_average", "pq_stats_image",
    "average_recall", "mask_iou", "mask_ious", "png_average_recall", "recall_curve",
    "proposal_recall",
    "box_iou", "box_iou_pairwise", "mask_intersection_union", "rec_accuracy", "res_scores",
]
