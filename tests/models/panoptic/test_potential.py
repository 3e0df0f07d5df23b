import pytest
import torch

from groundkit.models.panoptic.potential import box_cells, dynamic_potential


def test_box_cells_overlap_rule():
    cells = box_cells(torch.tensor([[5.0, 0.0, 9.0, 3.0], [1.0, 1.0, 2.0, 2.0]]), (3, 4), stride=4)
    # box 0 covers x in [5, 9): columns 1 (4-8) and 2 (8-12); y in [0, 3): row 0
    expected0 = torch.zeros(3, 4)
    expected0[0, 1:3] = 1
    torch.testing.assert_close(cells[0], expected0)
    # a box smaller than a cell still owns the cell it lies in
    assert cells[1].sum() == 1 and cells[1][0, 0] == 1


def _inputs():
    torch.manual_seed(0)
    sem = torch.rand(5, 2, 3).softmax(0)  # 2 things, 3 stuff
    boxes = torch.tensor([[0.0, 0.0, 4.0, 8.0], [4.0, 4.0, 12.0, 8.0]])
    scores = torch.tensor([0.5, 0.9])
    classes = torch.tensor([1, 0])
    masks = torch.rand(2, 2, 3)
    return sem, boxes, scores, classes, masks


def literal_potential(sem, boxes, scores, classes, masks, variant, stride=4):
    k = len(boxes)
    psi = torch.zeros(k + sem.shape[0] - 2, *sem.shape[1:])
    for c in range(k):
        for i in range(sem.shape[1]):
            for j in range(sem.shape[2]):
                x1, y1, x2, y2 = boxes[c].tolist()
                if not (j * stride < x2 and (j + 1) * stride > x1
                        and i * stride < y2 and (i + 1) * stride > y1):
                    continue
                v = sem[classes[c], i, j]
                m = None if masks is None else masks[c, i, j]
                if variant == "A":
                    psi[c, i, j] = v if m is None else v + m
                elif variant == "B":
                    psi[c, i, j] = scores[c] * (v if m is None else v * m)
                else:
                    psi[c, i, j] = scores[c] * (v if m is None else v + m)
    psi[k:] = sem[2:]
    return psi


@pytest.mark.parametrize("variant", ["A", "B", "C"])
@pytest.mark.parametrize("with_masks", [False, True])
def test_variants_against_literal_loop(variant, with_masks):
    sem, boxes, scores, classes, masks = _inputs()
    masks = masks if with_masks else None
    psi = dynamic_potential(sem, boxes, scores, classes, num_things=2, masks=masks, variant=variant)
    assert psi.shape == (5, 2, 3)
    torch.testing.assert_close(psi, literal_potential(sem, boxes, scores, classes, masks, variant))


def test_b_and_c_agree_without_masks_and_gradients_reach_scores():
    sem, boxes, scores, classes, _ = _inputs()
    scores.requires_grad_(True)
    sem.requires_grad_(True)
    b = dynamic_potential(sem, boxes, scores, classes, 2, variant="B")
    c = dynamic_potential(sem, boxes, scores, classes, 2, variant="C")
    torch.testing.assert_close(b, c)
    c.sum().backward()
    assert (scores.grad > 0).all() and sem.grad.abs().sum() > 0


def test_no_detections_gives_stuff_only_and_bad_variant_raises():
    sem = torch.rand(4, 2, 2)
    psi = dynamic_potential(sem, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 1)
    torch.testing.assert_close(psi, sem[1:])
    with pytest.raises(ValueError, match="variant"):
        dynamic_potential(sem, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 1,
                          variant="D")
