"""Time `groundkit score png` on 100,000 phrases and `groundkit score panoptic` on 500 images.

Generates the files in a temporary folder (not timed): for PNG, small segment maps (64x64 by
default), four narratives of five grounded phrases per image, and perturbed ground-truth masks as
predictions; for panoptic, id maps of COCO size (480x640 by default) with a perturbed prediction.
Then runs each command once through the CLI, and prints where the time went.

    .venv/bin/python benchmarks/bench_scoring.py
    .venv/bin/python benchmarks/bench_scoring.py --phrases 20000 --pq-images 100 --pq-size 240 320
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from groundkit.cli import main
from groundkit.data.formats import (
    grounding_record,
    write_grounding_predictions,
    write_narratives,
    write_panoptic_json,
    write_segment_png,
)
from groundkit.metrics.panoptic_quality import segment_index_map
from groundkit.structures import Category, ImageRecord, Narrative, PanopticAnnotation, Segment, Utterance

CATEGORIES = [Category(i, f"thing{i}", True) for i in range(1, 6)] + \
             [Category(i, f"stuff{i}", False) for i in range(100, 103)]
NARRATIVES_PER_IMAGE, PHRASES_PER_NARRATIVE = 4, 5


def random_id_map(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[Segment]]:
    """Two stuff bands, up to eight thing rectangles and a little VOID; ids unique per image."""
    ids = np.zeros((h, w), np.int64)
    cut = int(rng.integers(h // 4, 3 * h // 4))
    ids[:cut], ids[cut:] = 1, 2
    cats = {1: 100, 2: 101}
    for sid in range(3, 3 + int(rng.integers(3, 9))):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        ids[y:y + rng.integers(4, h // 2), x:x + rng.integers(4, w // 2)] = sid
        cats[sid] = int(rng.integers(1, 6))
    ids[rng.random((h, w)) < 0.02] = 0
    present, areas = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), areas.tolist()))
    return ids, [Segment(s, c, area[s]) for s, c in cats.items() if s in area]


def perturb(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A prediction near ``mask``: shifted by a few pixels, with some pixels flipped."""
    shifted = np.roll(mask, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    return shifted ^ (rng.random(mask.shape) < 0.02)


def make_png_benchmark(root: Path, phrases: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    per_image = NARRATIVES_PER_IMAGE * PHRASES_PER_NARRATIVE
    images, annotations, narratives, records = [], [], [], []
    for image_id in range(1, -(-phrases // per_image) + 1):
        ids, segments = random_id_map(rng, *size)
        name = f"{image_id:012d}"
        write_segment_png(root / "panoptic" / f"{name}.png", ids)
        images.append(ImageRecord(image_id, f"{name}.jpg", *size))
        annotations.append(PanopticAnnotation(image_id, f"{name}.png", tuple(segments)))
        seg_ids = [s.id for s in segments]
        for a in range(NARRATIVES_PER_IMAGE):
            words = [f"phrase{a}x{k}" for k in range(PHRASES_PER_NARRATIVE)]
            groups = [tuple(rng.choice(seg_ids, int(rng.integers(1, 3)), replace=False).tolist())
                      for _ in words]
            spans, at = [], 0
            for word in words:
                spans.append((at, at + len(word)))
                at += len(word) + 1
            n = Narrative(image_id, " ".join(words), tuple(
                Utterance(wd, sp, g, len(g) > 1, True) for wd, sp, g in zip(words, spans, groups)))
            narratives.append(n)
            masks = np.stack([perturb(np.isin(ids, g), rng) for g in groups])
            records.append(grounding_record(n, range(len(words)), masks, rng.random(len(words))))
    write_panoptic_json(root / "panoptic.json", images, annotations, CATEGORIES)
    write_narratives(root / "narratives.json", narratives)
    write_grounding_predictions(root / "pred.json", records)
    return ["score", "png", "--narratives", str(root / "narratives.json"), "--panoptic-json",
            str(root / "panoptic.json"), "--panoptic-dir", str(root / "panoptic"),
            "--pred", str(root / "pred.json")]


def make_panoptic_benchmark(root: Path, n_images: int, size: tuple[int, int],
                            seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    images, gt_anns, pred_anns = [], [], []
    for image_id in range(1, n_images + 1):
        ids, segments = random_id_map(rng, *size)
        name = f"{image_id:012d}.png"
        write_segment_png(root / "gt" / name, ids)
        # prediction: new ids, a shift, one segment lost to VOID
        seg_ids = np.array([s.id for s in segments])
        # prediction ids by segment index (0 VOID, 1..K, K + 1 other); the last segment is lost
        new_ids = np.zeros(len(segments) + 2, np.int64)
        new_ids[1:-1] = rng.choice(2**24 - 1, len(segments), replace=False) + 1
        new_ids[-2] = 0
        new = dict(zip(seg_ids.tolist(), new_ids[1:-1].tolist()))
        pred = new_ids[segment_index_map(np.roll(ids, 5, axis=1), seg_ids)].reshape(ids.shape)
        lost = segments[-1].id
        write_segment_png(root / "pred" / name, pred)
        images.append(ImageRecord(image_id, name.replace(".png", ".jpg"), *size))
        gt_anns.append(PanopticAnnotation(image_id, name, tuple(segments)))
        pred_anns.append(PanopticAnnotation(image_id, name, tuple(
            Segment(new[s.id], s.category_id) for s in segments if s.id != lost)))
    write_panoptic_json(root / "gt.json", images, gt_anns, CATEGORIES)
    write_panoptic_json(root / "pred.json", images, pred_anns, CATEGORIES)
    return ["score", "panoptic", "--gt-json", str(root / "gt.json"), "--gt-dir", str(root / "gt"),
            "--pred-json", str(root / "pred.json"), "--pred-dir", str(root / "pred")]


def timed(label: str, step):
    """Run ``step()``, print its wall and CPU seconds (CPU time is what a shared machine's load
    does not inflate), return its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = step()
    print(f"  {label:<38} {time.perf_counter() - wall:7.2f} s wall "
          f"{time.process_time() - cpu:7.2f} s CPU")
    return out


def run_command(name: str, argv: list[str]) -> None:
    """Time the whole command through the CLI; print its table after the figure."""
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        wall, cpu = time.perf_counter(), time.process_time()
        main(argv)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"  {'whole command (groundkit ' + name + ')':<38} {wall:7.2f} s wall {cpu:7.2f} s CPU")
    print(table.getvalue())


def bench_png(root: Path, phrases: int, size: tuple[int, int]) -> None:
    from groundkit.data.formats import (
        check_narratives,
        load_narratives,
        load_panoptic,
        read_grounding_predictions,
    )
    from groundkit.metrics.files import grounding_masks, png_phrase_ious

    argv = timed(f"generate {phrases} phrases ({size[0]}x{size[1]})",
                 lambda: make_png_benchmark(root, phrases, size))
    print(f"score png, {phrases} phrases:")
    narratives = timed("read narratives + panoptic JSON", lambda: load_narratives(
        root / "narratives.json"))
    panoptic = load_panoptic(root / "panoptic.json", root / "panoptic")
    timed("check narratives against the JSON", lambda: check_narratives(narratives, panoptic))
    records = timed("read + check predictions",
                    lambda: read_grounding_predictions(root / "pred.json"))
    preds = grounding_masks(records)
    phrase_ious = timed("IoUs (decode RLE, read PNGs, count)",
                        lambda: png_phrase_ious(narratives, panoptic, preds))
    timed("AR of the five splits", phrase_ious.scores)
    run_command("score png", argv)


def bench_panoptic(root: Path, n_images: int, size: tuple[int, int]) -> None:
    argv = timed(f"generate {n_images} images ({size[0]}x{size[1]})",
                 lambda: make_panoptic_benchmark(root, n_images, size))
    print(f"score panoptic, {n_images} images:")
    run_command("score panoptic", argv)


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=100_000)
    parser.add_argument("--png-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--pq-images", type=int, default=500)
    parser.add_argument("--pq-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_png(Path(tmp) / "png", args.phrases, tuple(args.png_size))
        bench_panoptic(Path(tmp) / "pq", args.pq_images, tuple(args.pq_size))


if __name__ == "__main__":
    main_bench()
