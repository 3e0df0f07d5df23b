"""Does a referring model's grid level know colours? A linear probe of the referent's colour.

For referents whose expression names a colour (the synthetic benchmark's eight), the grid-level
features of the model's backbone are averaged over the referent's mask (resampled to the grid), and
a softmax regression is fitted on 70% of them (by order of the split) and tested on the rest; the
same probe on the image's pixels averaged over the mask is the reference. Chance is 1/8.

    python benchmarks/probe_grid_colour.py --checkpoint runs/pbrec_synthetic --data data/synthetic
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from groundkit.data.synthetic.scene import COLOURS
from groundkit.engine.tasks import get_task


def masked_means(checkpoint: str, data: str, split: str, limit: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n, C)`` grid features and ``(n, 3)`` pixels averaged over each referent, ``(n,)`` colours."""
    task = get_task("referring")
    model, cfg = task.load(checkpoint)
    dataset = task.dataset(cfg, data, split)
    colours = list(COLOURS)
    grid, pixels, labels, seen = [], [], [], set()
    for i, sample in enumerate(dataset.samples):
        named = [w for w in sample.sentence.lower().split() if w in colours]
        if not named or (sample.image_id, sample.ann_id) in seen:
            continue
        seen.add((sample.image_id, sample.ann_id))
        item = dataset[i]
        image, mask = item["image"][None], item["mask"].float()[None, None]
        with torch.no_grad():
            level = model.encode_images(image)[model.grid]
        cell = F.adaptive_avg_pool2d(mask, level.shape[-2:])
        grid.append((level * cell).sum((2, 3))[0] / cell.sum().clamp(min=1e-6))
        pixels.append((image * mask).sum((2, 3))[0] / mask.sum())
        labels.append(colours.index(named[0]))
        if len(labels) == limit:
            break
    return torch.stack(grid), torch.stack(pixels), torch.tensor(labels)


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 500) -> float:
    """Test accuracy of a softmax regression on standardised ``x`` (first 70% fit, rest tested)."""
    torch.manual_seed(0)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    n = int(len(y) * 0.7)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(x[:n] @ weight + bias, y[:n]).backward()
        optimizer.step()
    return ((x[n:] @ weight + bias).argmax(1) == y[n:]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--split", default="train")
    parser.add_argument("--referents", type=int, default=1500)
    args = parser.parse_args()
    grid, pixels, labels = masked_means(args.checkpoint, args.data, args.split, args.referents)
    print(f"{args.checkpoint}: {len(labels)} referents whose expression names one of "
          f"{len(COLOURS)} colours ({args.split})")
    print(f"  grid features ({grid.shape[1]} channels): colour probe accuracy "
          f"{100 * probe_accuracy(grid, labels, len(COLOURS)):.1f}%")
    print(f"  pixels (3 channels):              colour probe accuracy "
          f"{100 * probe_accuracy(pixels, labels, len(COLOURS)):.1f}%")


if __name__ == "__main__":
    main()
