import torch

from groundkit.models.panoptic.heuristic import heuristic_merge


def test_merge_rules():
    h, w = 4, 6
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    masks[0, :2, :2] = True    # score 0.6: visited second, 1 of 4 pixels taken -> keeps 3 free pixels
    masks[1, 1:3, 1:3] = True  # score 0.9: visited first, takes all 4
    masks[2, 1:3, 1:3] = True  # score 0.8: fully covered by instance 1 -> dropped
    masks[3, 3, :] = True      # score 0.3: under the score threshold -> skipped
    scores = torch.tensor([0.6, 0.9, 0.8, 0.3])
    classes = torch.tensor([0, 1, 1, 0])
    semantic = torch.full((h, w), 2)       # stuff label 2 everywhere ...
    semantic[:, 5] = 3                     # ... but a 4-pixel column of stuff label 3 (too small)
    semantic[0, 0] = 1                     # a thing label left over: never becomes a segment
    id_map, segments = heuristic_merge(masks, scores, classes, semantic, num_things=2, stuff_area_min=5)
    assert [(s["id"], s["label"], s["isthing"]) for s in segments] == [
        (1, 1, True), (2, 0, True), (3, 2, False)]
    assert abs(segments[0]["score"] - 0.9) < 1e-6 and segments[2]["score"] == 1.0
    expected = torch.tensor([
        [2, 2, 3, 3, 3, 0],
        [2, 1, 1, 3, 3, 0],
        [3, 1, 1, 3, 3, 0],
        [3, 3, 3, 3, 3, 0],
    ])
    assert id_map.tolist() == expected.tolist()


def test_no_instances_only_stuff():
    semantic = torch.tensor([[3, 3], [2, 3]])
    id_map, segments = heuristic_merge(torch.zeros(0, 2, 2, dtype=torch.bool), torch.zeros(0),
                                       torch.zeros(0, dtype=torch.long), semantic, 2, stuff_area_min=1)
    assert [s["label"] for s in segments] == [2, 3]
    assert id_map.tolist() == [[2, 2], [1, 2]]
