"""VL-NMS's relatedness modules, targets and losses against slow literal readings of Eqs. 1-7."""
import math

import pytest
import torch

from groundkit.errors import InputError
from groundkit.models.referring.proposals import select_proposals
from groundkit.models.referring.vlnms import (
    RelatednessFC,
    RelatednessTrans,
    apply_box_deltas,
    box_deltas,
    pad_rows,
    spatial_code,
    vlnms_proposals,
)
from groundkit.models.referring.vlnms_losses import (
    bce_loss,
    box_regression_loss,
    ranking_levels,
    ranking_loss,
    relatedness_targets,
)

C, S, D = 3, 2, 8          # RoI channels, RoI size, word width


def fc_module(seed=0):
    torch.manual_seed(seed)
    return RelatednessFC(C, S, D, visual_dim=16)


def trans_module(seed=0):
    torch.manual_seed(seed)
    return RelatednessTrans(C, S, D, dim=16, layers=2, heads=2, ffn_dim=32, visual_dim=16).eval()


def random_boxes(n, gen, size=100.0):
    xy = torch.rand(n, 2, generator=gen) * size * 0.7
    wh = 5 + torch.rand(n, 2, generator=gen) * size * 0.3
    return torch.cat([xy, xy + wh], dim=1)


def random_batch(counts, lengths, seed=0):
    """Images with ``counts`` candidates, one expression of ``lengths`` tokens per image; padding
    filled with noise, so that only the masks can keep it out."""
    gen = torch.Generator().manual_seed(seed)
    rois = [torch.randn(n, C, S, S, generator=gen) for n in counts]
    boxes = [random_boxes(n, gen) for n in counts]
    words = [torch.randn(n, D, generator=gen) for n in lengths]
    roi_features, candidate_mask = pad_rows(rois)
    padded_boxes, _ = pad_rows(boxes)
    text, word_mask = pad_rows(words)
    roi_features[~candidate_mask] = torch.randn(int((~candidate_mask).sum()), C, S, S, generator=gen)
    padded_boxes[~candidate_mask] = random_boxes(int((~candidate_mask).sum()), gen)
    text[~word_mask] = torch.randn(int((~word_mask).sum()), D, generator=gen)
    sizes = torch.tensor([[100.0, 120.0]]).repeat(len(counts), 1)
    return dict(rois=rois, boxes=boxes, words=words, roi_features=roi_features,
                candidate_mask=candidate_mask, padded_boxes=padded_boxes, text=text,
                word_mask=word_mask, sizes=sizes)


COUNTS, LENGTHS = [4, 0, 6, 1], [5, 3, 7, 2]


# --- the modules ---------------------------------------------------------------------------------

def test_fc_batch_equals_each_expression_alone():
    model, batch = fc_module(), random_batch(COUNTS, LENGTHS)
    with torch.no_grad():
        out = model(batch["roi_features"], batch["candidate_mask"], batch["text"], batch["word_mask"])
    assert out["logits"].shape == (4, 6) and out["attention"].shape == (4, 6, 7)
    assert torch.isneginf(out["logits"][~batch["candidate_mask"]]).all()
    for b, (rois, words) in enumerate(zip(batch["rois"], batch["words"])):
        n, length = len(rois), len(words)
        with torch.no_grad():
            alone = model(rois[None], torch.ones(1, n, dtype=torch.bool), words[None],
                          torch.ones(1, length, dtype=torch.bool))
        assert alone["logits"].shape == (1, n)
        assert torch.allclose(out["logits"][b, :n], alone["logits"][0], atol=1e-5)
        assert torch.allclose(out["attention"][b, :n, :length], alone["attention"][0], atol=1e-6)
        assert (out["attention"][b, :n, length:] == 0).all()
        assert torch.allclose(alone["attention"].sum(-1), torch.ones(1, n))


def test_trans_batch_equals_each_expression_alone():
    model, batch = trans_module(), random_batch(COUNTS, LENGTHS)
    with torch.no_grad():
        out = model(batch["roi_features"], batch["candidate_mask"], batch["padded_boxes"],
                    batch["sizes"], batch["text"], batch["word_mask"])
    assert out["logits"].shape == (4, 6) and out["deltas"].shape == (4, 6, 4)
    assert torch.isneginf(out["logits"][~batch["candidate_mask"]]).all()
    assert (out["deltas"][~batch["candidate_mask"]] == 0).all()
    for b, (rois, boxes, words) in enumerate(zip(batch["rois"], batch["boxes"], batch["words"])):
        n, length = len(rois), len(words)
        with torch.no_grad():
            alone = model(rois[None], torch.ones(1, n, dtype=torch.bool), boxes[None],
                          batch["sizes"][:1], words[None], torch.ones(1, length, dtype=torch.bool))
        assert torch.allclose(out["logits"][b, :n], alone["logits"][0], atol=1e-5)
        assert torch.allclose(out["deltas"][b, :n], alone["deltas"][0], atol=1e-5)


@pytest.mark.parametrize("variant", ["fc", "trans"])
def test_image_index_shares_the_image_side(variant):
    """Two images, three expressions (two on image 0): the same as the image rows repeated."""
    batch = random_batch([3, 5], [4, 6], seed=1)
    gen = torch.Generator().manual_seed(2)
    text, word_mask = pad_rows([torch.randn(n, D, generator=gen) for n in (4, 6, 2)])
    index = torch.tensor([0, 1, 0])
    image_side = [batch["roi_features"], batch["candidate_mask"]]
    if variant == "trans":
        model, image_side = trans_module(), image_side + [batch["padded_boxes"], batch["sizes"]]
    else:
        model = fc_module()
    with torch.no_grad():
        shared = model(*image_side, text, word_mask, image_index=index)
        repeated = model(*[x[index] for x in image_side], text, word_mask)
    for key in shared:
        assert torch.allclose(shared[key], repeated[key], atol=1e-5), key
    with pytest.raises(InputError, match="image_index"):
        model(*image_side, text, word_mask)


def test_fc_follows_eqs_1_2_literally():
    """Eqs. 1-2 per proposal and per word, with the attention score ``FC_s([w_j; v_a_i * w_j])``."""
    model, batch = fc_module(3), random_batch([3], [4], seed=3)
    with torch.no_grad():
        out = model(batch["roi_features"], batch["candidate_mask"], batch["text"], batch["word_mask"])
        words = batch["words"][0]
        u = model.fc_s.weight[0]
        for i, roi in enumerate(batch["rois"][0]):
            v = model.region(roi)
            v_a, v_b = model.mlp_a(v), model.mlp_b(v)
            a = torch.stack([u @ torch.cat([w, v_a * w]) for w in words])
            alpha = torch.exp(a) / torch.exp(a).sum()
            q = sum(alpha[j] * words[j] for j in range(len(words)))
            m = v_b * q / (v_b * q).norm()
            assert torch.allclose(out["attention"][0, i], alpha, atol=1e-6)
            assert torch.allclose(out["logits"][0, i], model.fc_r(m)[0], atol=1e-5)


def test_fc_attention_depends_on_the_proposal():
    """Eq. 1 as printed (a linear FC of the concatenation) would give every proposal one attention."""
    model, batch = fc_module(4), random_batch([5], [6], seed=4)
    with torch.no_grad():
        attention = model(batch["roi_features"], batch["candidate_mask"], batch["text"],
                          batch["word_mask"])["attention"][0]
    assert (attention - attention[:1]).abs().amax() > 1e-3


def test_an_expression_without_tokens_attends_to_nothing():
    model, batch = fc_module(), random_batch([3], [2])
    with torch.no_grad():
        out = model(batch["roi_features"], batch["candidate_mask"], batch["text"],
                    torch.zeros(1, 2, dtype=torch.bool))
    assert (out["attention"] == 0).all() and torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("variant", ["fc", "trans"])
def test_gradients_reach_every_parameter(variant):
    batch = random_batch(COUNTS, LENGTHS, seed=5)
    gen = torch.Generator().manual_seed(6)
    targets = [relatedness_targets(boxes, boxes[0] if len(boxes) else torch.tensor([0., 0, 9, 9]),
                                   random_boxes(2, gen)) for boxes in batch["boxes"]]
    labels, mask = pad_rows([t["labels"] for t in targets])
    labels[0, :2] = 1.0  # make sure of positives
    rho, _ = pad_rows([t["rho"] for t in targets])
    rho[0, :2] = torch.tensor([0.95, 0.72])
    if variant == "fc":
        model = fc_module()
        out = model(batch["roi_features"], batch["candidate_mask"], batch["text"], batch["word_mask"])
        loss = bce_loss(out["logits"], labels, mask) + ranking_loss(out["logits"], rho, mask)
    else:
        model = trans_module().train()
        out = model(batch["roi_features"], batch["candidate_mask"], batch["padded_boxes"],
                    batch["sizes"], batch["text"], batch["word_mask"])
        goal, _ = pad_rows([box_deltas(b, t["matched_boxes"]) for b, t in zip(batch["boxes"], targets)])
        loss = bce_loss(out["logits"], labels, mask) + box_regression_loss(out["deltas"], goal,
                                                                           labels.bool() & mask)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_spatial_code():
    boxes = torch.tensor([[[10.0, 20.0, 50.0, 80.0]]])
    got = spatial_code(boxes, torch.tensor([[100.0, 200.0]]))
    assert torch.allclose(got[0, 0], torch.tensor([10 / 200, 20 / 100, 50 / 200, 80 / 100,
                                                   40 * 60 / (200 * 100)]))


def test_pad_rows():
    rows = [torch.ones(2, 3), torch.ones(0, 3), torch.ones(1, 3)]
    padded, mask = pad_rows(rows)
    assert padded.shape == (3, 2, 3) and mask.tolist() == [[True, True], [False, False], [True, False]]
    assert padded[mask].sum() == 9 and padded[~mask].sum() == 0
    padded, mask = pad_rows([torch.ones(0, 4)])
    assert padded.shape == (1, 0, 4) and mask.shape == (1, 0)


# --- box deltas ----------------------------------------------------------------------------------

def test_deltas_round_trip():
    gen = torch.Generator().manual_seed(7)
    boxes, targets = random_boxes(20, gen).double(), random_boxes(20, gen).double()
    deltas = box_deltas(boxes, targets)
    assert torch.allclose(apply_box_deltas(boxes, deltas), targets, atol=1e-9)
    assert torch.allclose(box_deltas(boxes, boxes), torch.zeros(20, 4, dtype=torch.double))
    literal = []
    for (x1, y1, x2, y2), (u1, v1, u2, v2) in zip(boxes.tolist(), targets.tolist()):
        w, h = x2 - x1, y2 - y1
        literal.append([10 * ((u1 + u2) / 2 - (x1 + x2) / 2) / w, 10 * ((v1 + v2) / 2 - (y1 + y2) / 2) / h,
                        5 * math.log((u2 - u1) / w), 5 * math.log((v2 - v1) / h)])
    assert torch.allclose(deltas, torch.tensor(literal, dtype=torch.double))


def test_large_deltas_are_clamped():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = apply_box_deltas(box, torch.tensor([[0.0, 0.0, 1e4, 1e4]]))
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, 2] - out[0, 0], torch.tensor(10 * 1000 / 16))


# --- targets and losses --------------------------------------------------------------------------

def literal_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


@pytest.mark.parametrize("num_context", [0, 1, 3])
def test_targets_against_a_literal_reference(num_context):
    gen = torch.Generator().manual_seed(num_context)
    referent, context = random_boxes(1, gen)[0], random_boxes(num_context, gen)
    # Candidates: jittered copies of the foreground (so there are positives) and random boxes.
    foreground = torch.cat([referent[None], context])
    extent = (foreground[:, 2:] - foreground[:, :2]).repeat(4, 2)
    near = foreground.repeat(4, 1) + torch.randn(4 * len(foreground), 4, generator=gen) * extent * 0.1
    candidates = torch.cat([near, random_boxes(15, gen)])
    candidates[:, 2:] = torch.maximum(candidates[:, 2:], candidates[:, :2] + 1)
    got = relatedness_targets(candidates, referent, context)
    assert 0 < got["labels"].sum() < len(candidates)
    for i, box in enumerate(candidates.tolist()):
        ious = [literal_iou(box, f) for f in foreground.tolist()]
        rho = max(ious)
        assert got["rho"][i].item() == pytest.approx(rho, abs=1e-6)
        assert got["referent_iou"][i].item() == pytest.approx(ious[0], abs=1e-6)
        assert got["labels"][i].item() == float(rho >= 0.5)
        assert got["matched"][i].item() == ious.index(rho)
        assert torch.equal(got["matched_boxes"][i], foreground[ious.index(rho)])


def test_ranking_levels():
    rho = torch.tensor([0.0, 0.3, 0.5, 0.5001, 0.55, 0.65, 0.75, 0.85, 0.95, 1.0])
    expected = [math.ceil(max(0.0, x - 0.5) / 0.1) for x in rho.tolist()]
    assert ranking_levels(rho).tolist() == expected == [0, 0, 0, 1, 1, 2, 3, 4, 5, 5]


def literal_ranking(r, rho, margin, top_h):
    """Eq. 5 for one expression: pairs (positive i, one of the top-h by r of lower levels)."""
    q = [min(5, math.ceil(max(0.0, x - 0.5) / 0.1)) for x in rho]
    terms = []
    for i in range(len(r)):
        if q[i] < 1:
            continue
        lower = sorted((j for j in range(len(r)) if q[j] < q[i]), key=lambda j: -r[j])[:top_h]
        terms += [max(0.0, r[j] - r[i] + margin) for j in lower]
    return sum(terms) / len(terms) if terms else None


@pytest.mark.parametrize("top_h", [1, 3, 100])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_loss_against_a_literal_loop(seed, top_h):
    gen = torch.Generator().manual_seed(seed)
    counts = [12, 0, 9, 5, 7]
    logits = torch.randn(len(counts), 12, generator=gen)
    rho = torch.rand(len(counts), 12, generator=gen)
    rho[:, :2] = torch.tensor([0.93, 0.21])   # a positive and a negative in each expression,
    rho[3] = rho[3] * 0.5                     # but this one: no positive
    mask = torch.arange(12)[None] < torch.tensor(counts)[:, None]
    r = logits.sigmoid()
    per_expression = [literal_ranking(r[b, :n].tolist(), rho[b, :n].tolist(), 0.1, top_h)
                      for b, n in enumerate(counts)]
    defined = [x for x in per_expression if x is not None]
    assert per_expression[1] is None and per_expression[3] is None and len(defined) == 3
    got = ranking_loss(logits, rho, mask, margin=0.1, top_h=top_h)
    assert got.item() == pytest.approx(sum(defined) / len(defined), abs=1e-6)


def test_bce_and_regression_losses_against_literal_loops():
    gen = torch.Generator().manual_seed(8)
    counts = [5, 0, 3]
    logits, labels = torch.randn(3, 5, generator=gen), (torch.rand(3, 5, generator=gen) > 0.5).float()
    labels[2] = 0.0                       # an expression without positives
    mask = torch.arange(5)[None] < torch.tensor(counts)[:, None]
    logits = logits.masked_fill(~mask, float("-inf"))
    bce = [sum(-(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
               for x, y in zip(logits[b, :n].tolist(), labels[b, :n].tolist())) / n
           for b, n in enumerate(counts) if n]
    assert bce_loss(logits, labels, mask).item() == pytest.approx(sum(bce) / len(bce), abs=1e-5)

    deltas, goal = torch.randn(3, 5, 4, generator=gen) * 2, torch.randn(3, 5, 4, generator=gen)
    goal[~(labels.bool() & mask)] = float("nan")           # never read

    def smooth_l1(d):
        return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
    reg = []
    for b, n in enumerate(counts):
        pos = [i for i in range(n) if labels[b, i] == 1]
        if pos:
            reg.append(sum(smooth_l1(deltas[b, i, c].item() - goal[b, i, c].item())
                           for i in pos for c in range(4)) / len(pos))
    got = box_regression_loss(deltas, goal, labels.bool() & mask)
    assert got.item() == pytest.approx(sum(reg) / len(reg), abs=1e-5)


def test_no_candidate_gives_empty_outputs_and_zero_losses():
    batch = random_batch([0], [3])
    fc, trans = fc_module(), trans_module().train()
    out = fc(batch["roi_features"], batch["candidate_mask"], batch["text"], batch["word_mask"])
    out.update(trans(batch["roi_features"], batch["candidate_mask"], batch["padded_boxes"],
                     batch["sizes"], batch["text"], batch["word_mask"]))
    assert out["logits"].shape == (1, 0) and out["attention"].shape == (1, 0, 3)
    assert out["deltas"].shape == (1, 0, 4)
    targets = relatedness_targets(torch.zeros(0, 4), torch.tensor([0.0, 0, 5, 5]), torch.zeros(0, 4))
    assert all(v.shape[0] == 0 for v in targets.values())
    labels, mask = pad_rows([targets["labels"]])
    losses = [bce_loss(out["logits"], labels, mask), ranking_loss(out["logits"], labels, mask),
              box_regression_loss(out["deltas"], out["deltas"].detach(), mask)]
    for loss in losses:
        assert loss.item() == 0.0
    sum(losses).backward()
    empty = {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long),
             "confidence": torch.zeros(0)}
    assert vlnms_proposals(empty, torch.zeros(0), k=5)["index"].shape == (0,)


@pytest.mark.parametrize("seed", [0, 1])
def test_vlnms_proposals_is_select_proposals_by_r_times_c(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 40
    candidates = {"boxes": random_boxes(n, gen), "classes": torch.randint(0, 3, (n,), generator=gen),
                  "confidence": torch.rand(n, generator=gen), "roi_features": torch.randn(n, 2, 1, 1)}
    r = torch.rand(n, generator=gen)
    got = vlnms_proposals(candidates, r, k=6)
    expected = select_proposals(candidates, r * candidates["confidence"], k=6)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert torch.equal(got["relatedness"], r[expected["index"]])
    baseline = select_proposals(candidates, candidates["confidence"], k=6)
    assert got["index"].tolist() != baseline["index"].tolist()
