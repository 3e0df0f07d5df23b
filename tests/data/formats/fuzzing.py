"""Mutation fuzzing of every reader of ``data/formats`` and every scorer of ``metrics/files``.

Shared by ``tests/data/formats/test_fuzz.py`` (hypothesis, a few dozen cases per target, in
``make test``) and ``benchmarks/fuzz_readers.py`` (hundreds per target, random seeds). Both load
this file by path (the tests are imported in importlib mode).

A case starts from valid small files (the real COCO sample, and files the project's own writers
make from it), mutates one of the files a target reads, runs the target and sorts the outcome:
``accepted`` (no error), ``typed`` (a :class:`groundkit.errors.GroundkitError`) or ``escape``:
any other exception, or a peak of traced memory past the target's ``memory_limit`` (numpy,
pycocotools and Python allocations are traced; Pillow bounds its own with its decompression-bomb
limit).

Every random decision goes through a :class:`Chooser`, so hypothesis can draw (and shrink) them
and the benchmark can drive them from a seeded ``random.Random``.
"""
from __future__ import annotations

import copy
import io
import json
import pickle
import random
import shutil
import struct
import traceback
import tracemalloc
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from groundkit.errors import GroundkitError

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "coco_sample"
# Scoring the sample's two 640 x 427 images peaks near 20 MB; a mask decoded at a size a hostile
# file declares would take gigabytes.
MEMORY_LIMIT = 256 * 2**20
# read_image decodes any image up to Pillow's decompression-bomb limit (89 M pixels), and Pillow
# reads a PNG whose data stops short of its header's size: a 14 kB PNG claiming 64 x 1,048,576
# pixels comes back as an array of 200 MB, which is a user's image as far as anyone can tell.
IMAGE_MEMORY_LIMIT = 1024 * 2**20


# --- choices --------------------------------------------------------------------------------------

class Chooser:
    """Every random decision of a case; ``choice`` picks one of ``options``, ``below(n)`` an int in
    ``[0, n)``."""

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.below(len(options))]

    def below(self, n: int) -> int:
        raise NotImplementedError


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def below(self, n: int) -> int:
        return self.rng.randrange(n)


class DataChooser(Chooser):
    """Draws from hypothesis' ``data`` object (``st.data()``), so failures shrink."""

    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def below(self, n: int) -> int:
        return self.data.draw(self.st.integers(0, n - 1))


# --- hostile values -------------------------------------------------------------------------------

# Stand-ins replaced in the JSON text after json.dumps (which cannot write them).
DEEP = "@@fuzz-deep@@"  # 100,000 nested lists
LONG_INT = "@@fuzz-long-int@@"  # an integer of 5,000 digits (past Python's max-str-digits)
RAW = {f'"{DEEP}"': "[" * 100_000 + "]" * 100_000, f'"{LONG_INT}"': "7" * 5000}

HOSTILE: list[Any] = [
    -1, 0, 1, 2, 3, -(2**31), 2**31, 2**32, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400,
    65535, 65536, 256**3, 256**3 - 1, 1000000,
    float("nan"), float("inf"), float("-inf"), -0.0, 0.5, -0.5, 1e308, 1e-320, 1e300, 1e9,
    True, False, None,
    "", "0", "-1", "1e5", " 12 ", "²", "\x00", "../../../../etc/passwd", "a" * 10000, "İ" * 3,
    "000000142238.png", "val", "testAB",
    [], {}, [0], [None], [-1, -1, -1, -1], [1e300, 1e300, 1e300, 1e300], [[]], [[0, 0, 1]],
    {"size": [1, 1], "counts": "1"}, {"size": [427, 640], "counts": [273280]},
    {"size": [65535, 65535], "counts": [65535 * 65535]}, {"size": [427, 640], "counts": "0" * 50},
    [[0, 0, 1e9, 0, 1e9, 1e9]], [[0, 0, float("nan"), 0, 5, 5]], [[-1, -1, 700, -1, 700, 500]],
    [[0, 0, 640, 427, 0, 427, 640, 0] * 500],
    DEEP, LONG_INT,
]
# Values a pickle can hold and JSON cannot.
PICKLE_ONLY: list[Any] = [b"bytes", (1, 2), {1, 2}, frozenset(), 1 + 2j, bytearray(b"x"),
                          10**5000, range(3)]


def hostile_value(chooser: Chooser, old: Any, doc: Any, pickle_values: bool) -> Any:
    """A value to put where ``old`` was: a listed hostile value, one near ``old``, or another value
    of the same document (an id of another record, a list of another shape)."""
    kind = chooser.below(10)
    if kind < 6:  # a copy: later mutations of this case may edit it in place
        return copy.deepcopy(chooser.choice(HOSTILE + (PICKLE_ONLY if pickle_values else [])))
    if kind < 8:
        return copy.deepcopy(near(chooser, old))
    return copy.deepcopy(random_node(chooser, doc))


def near(chooser: Chooser, old: Any) -> Any:
    """A value close to ``old`` in type: a number moved or negated, a string cut, a list shortened
    or lengthened, a dict missing a key."""
    if isinstance(old, bool):
        return chooser.choice([not old, int(old), str(old).lower()])
    if isinstance(old, (int, float)) and abs(old) < 1e300:
        return chooser.choice([-old, old + 1, old - 1, old * 2**20, float(old) + 0.5, str(old),
                               -1 - old, old * 1e300])
    if isinstance(old, str):
        return chooser.choice([old[: len(old) // 2], old.upper(), old + old, "-" + old,
                               old.encode("utf-8").decode("latin-1"), old[::-1], old + "\x00"])
    if isinstance(old, list):
        return chooser.choice([old[:-1], old + old[-1:], old[::-1], [old], old[: len(old) // 2]])
    if isinstance(old, dict) and old:
        key = chooser.choice(sorted(old, key=str))
        return {k: v for k, v in old.items() if k != key}
    return chooser.choice(HOSTILE)


def random_node(chooser: Chooser, doc: Any) -> Any:
    parent, key = walk(chooser, [doc])
    return parent[key]


def walk(chooser: Chooser, box: list[Any]) -> tuple[Any, Any]:
    """``(container, key)`` of a node of the document ``box[0]``, reached by a random walk from
    the root that stops at each container with probability 1/6 (at the root, 1/50: a file that is
    not even the right kind of JSON value says little). ``(box, 0)`` is the root itself."""
    parent, key = box, 0
    while True:
        value = parent[key]
        keys = (list(value) if isinstance(value, dict) else range(len(value))
                if isinstance(value, list) else [])
        # 1 stops: hypothesis draws the ends of a range (0, the last) more often than the rest
        if not keys or chooser.below(50 if parent is box else 6) == 1:
            return parent, key
        parent, key = value, keys[chooser.below(len(keys))]


def mutate_document(chooser: Chooser, doc: Any, pickle_values: bool = False) -> Any:
    """A copy of ``doc`` (JSON-like data) after 1 (most often) to 3 mutations: a value replaced,
    deleted, duplicated in its list (repeated ids) or wrapped in a list."""
    box = [copy.deepcopy(doc)]
    for _ in range(chooser.choice([1, 1, 1, 1, 2, 3])):
        parent, key = walk(chooser, box)
        op = chooser.below(8)
        if op < 5 or parent is box:
            parent[key] = hostile_value(chooser, parent[key], box[0], pickle_values)
        elif op == 5:
            del parent[key]
        elif op == 6 and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        else:
            parent[key] = [parent[key]]
    return box[0]


def dump_json(doc: Any) -> bytes:
    """JSON text of ``doc`` with Python's NaN/Infinity literals and the stand-ins written out."""
    text = json.dumps(doc, allow_nan=True)
    for stand_in, raw in RAW.items():
        text = text.replace(stand_in, raw)
    return text.encode("utf-8", errors="surrogatepass")


def mutate_text(chooser: Chooser, data: bytes) -> bytes:
    """Byte-level damage: flip a few bytes, cut the end off, or insert a run of one byte."""
    data = bytearray(data)
    op = chooser.below(3)
    if op == 0:
        for _ in range(1 + chooser.below(8)):
            data[chooser.below(len(data))] ^= 1 + chooser.below(255)
    elif op == 1:
        del data[chooser.below(len(data)):]
    else:
        at = chooser.below(len(data) + 1)
        data[at:at] = bytes([chooser.below(256)]) * (1 + chooser.below(64))
    return bytes(data)


# --- PNG and pickle mutations ---------------------------------------------------------------------

def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``[(type, payload), ...]`` of a PNG file (assumed well formed: it is a seed)."""
    out, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        out.append((data[at + 4:at + 8], data[at + 8:at + 8 + length]))
        at += 12 + length
    return out


def png_bytes(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG file of ``chunks``, every CRC right (so damage reaches the decoder)."""
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, payload in chunks:
        out.append(struct.pack(">I", len(payload)) + kind + payload
                   + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return b"".join(out)


def mutate_png(chooser: Chooser, data: bytes) -> bytes:
    """A damaged or disguised segment PNG: bytes flipped or cut; header fields (size, bit depth,
    colour type) rewritten with a valid CRC; the pixel data recompressed after damage; the same
    pixels in another format (TIFF, JPEG, GIF, BMP, WebP; intact or damaged) or mode (16-bit,
    palette, grey, RGBA) under the .png name; or another PNG of another size."""
    op = chooser.below(7)
    if op == 0:
        return mutate_text(chooser, data)
    chunks = png_chunks(data)
    if op == 1:
        ihdr = bytearray(chunks[0][1])
        field_at, size = chooser.choice([(0, 4), (4, 4), (8, 1), (9, 1), (10, 1), (11, 1),
                                         (12, 1)])
        value = chooser.choice([0, 1, 2, 3, 4, 6, 8, 16, 255, 2**16, 2**20, 2**31 - 1, 2**32 - 1])
        ihdr[field_at:field_at + size] = (value % 256**size).to_bytes(size, "big")
        chunks[0] = (chunks[0][0], bytes(ihdr))
        return png_bytes(chunks)
    if op == 2:
        idat = b"".join(p for k, p in chunks if k == b"IDAT")
        raw = bytearray(zlib.decompress(idat))
        for _ in range(1 + chooser.below(8)):
            raw[chooser.below(len(raw))] = chooser.below(256)  # filter bytes included
        if chooser.below(2):
            del raw[chooser.below(len(raw)):]
        others = [(k, p) for k, p in chunks if k != b"IDAT"]
        return png_bytes(others[:-1] + [(b"IDAT", zlib.compress(bytes(raw)))] + others[-1:])
    image = Image.open(io.BytesIO(data))
    image.load()
    out = io.BytesIO()
    if op in (3, 6):
        image.save(out, format=chooser.choice(["TIFF", "JPEG", "GIF", "BMP", "WEBP"]))
        if op == 6:  # disguised and damaged: other decoders' errors
            return mutate_text(chooser, out.getvalue())
    elif op == 4:
        rgb = np.asarray(image.convert("RGB"))
        mode = chooser.choice(["I;16", "P", "L", "RGBA", "1", "LA"])
        if mode == "I;16":
            Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(out, format="PNG")
        else:
            image.convert(mode).save(out, format="PNG")
    else:
        h, w = chooser.choice([(1, 1), (427, 641), (640, 427), (360, 640), (0, 0)])
        Image.new("RGB", (max(w, 1), max(h, 1))).save(out, format="PNG")
    return out.getvalue()


def deep_pickle(depth: int = 100_000) -> bytes:
    """A pickle of lists nested ``depth`` deep: built without recursion, printed with it."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def mutate_pickle(chooser: Chooser, data: bytes) -> bytes:
    """A damaged refs pickle: its data mutated (including values only a pickle holds) and pickled
    again, its bytes flipped or cut, a class or a deep nesting in it."""
    op = chooser.below(8)
    if op < 5:
        refs = pickle.loads(data, encoding="latin1")
        return pickle.dumps(mutate_document(chooser, refs, pickle_values=True), protocol=2)
    if op == 5:
        return mutate_text(chooser, data)
    if op == 6:
        return deep_pickle()
    refs = pickle.loads(data, encoding="latin1")
    from collections import OrderedDict
    refs[chooser.below(len(refs))]["sentences"] = OrderedDict(a=1)
    return pickle.dumps(refs, protocol=2)


def mutate_file(chooser: Chooser, kind: str, data: bytes) -> bytes:
    if kind == "json":
        if chooser.below(8) == 7:
            return mutate_text(chooser, data)
        return dump_json(mutate_document(chooser, json.loads(data)))
    if kind == "png":
        return mutate_png(chooser, data)
    if kind == "pickle":
        return mutate_pickle(chooser, data)
    if kind == "image":
        return mutate_png(chooser, data) if data.startswith(b"\x89PNG") else \
            mutate_text(chooser, data)
    raise ValueError(kind)


# --- seeds: valid small files ---------------------------------------------------------------------

def make_seeds(folder: Path) -> Path:
    """Write the valid files every target starts from into ``folder``: the real sample (half its
    RefCOCO instances given polygons, so both kinds of segmentation are read) and files the
    project's writers make from it (predictions of every kind, scores, small images)."""
    from dataclasses import replace

    from groundkit.data.formats import (
        grounding_record,
        load_instances,
        load_narratives,
        load_panoptic,
        load_refs,
        write_grounding_predictions,
        write_instances,
        write_panoptic_predictions,
        write_referring_predictions,
        write_refs,
        write_scores,
    )
    from groundkit.ops.masks import encode_rle
    from groundkit.structures import PanopticResult

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE / "panoptic.json", folder / "panoptic.json")
    shutil.copytree(SAMPLE / "panoptic", folder / "panoptic")
    shutil.copy(SAMPLE / "png_narratives.json", folder / "png_narratives.json")
    for p in folder.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the fixture files are read-only
    gt = load_panoptic(folder / "panoptic.json", folder / "panoptic")

    instances = load_instances(SAMPLE / "refcoco" / "instances.json")
    annotations = [a if k % 2 else replace(a, segmentation=[_box_polygon(a.bbox)])
                   for k, a in enumerate(instances.annotations.values())]
    write_instances(folder / "instances.json", instances.images.values(), annotations,
                    instances.categories.values())
    write_refs(folder / "refs.p", load_refs(SAMPLE / "refcoco" / "refs(unc).p"))
    instances = load_instances(folder / "instances.json")

    records = []
    for n in load_narratives(folder / "png_narratives.json"):
        grounded = n.grounded()
        masks = gt.union_masks(n.image_id, [u.segment_ids for _, u in grounded])
        records.append(grounding_record(n, [i for i, _ in grounded], masks,
                                        np.linspace(0.5, 1, len(grounded))))
    write_grounding_predictions(folder / "grounding.json", records)

    referring = []
    for ref in load_refs(folder / "refs.p"):
        x, y, w, h = instances.annotations[ref["ann_id"]].bbox
        for k, sentence in enumerate(ref["sentences"]):
            record = {"ref_id": ref["ref_id"], "sent_id": sentence["sent_id"],
                      "box": [x + k, y, x + w, y + h], "score": 0.9}
            if k % 2 == 0:  # the mask is optional
                record["mask"] = encode_rle(instances.mask(ref["ann_id"]))
            referring.append(record)
    write_referring_predictions(folder / "referring.json", referring)

    results = {i: PanopticResult(np.where(gt.id_map(i) % 3 == 0, 0, gt.id_map(i)),
                                 [{"id": s.id, "category_id": s.category_id, "score": 0.5}
                                  for s in gt.annotations[i].segments if s.id % 3])
               for i in gt.images}
    write_panoptic_predictions(folder / "pred_panoptic.json", folder / "pred_panoptic", results,
                               gt.images)
    write_scores(folder / "scores.json", {"overall": {"ar": 0.5, "acc@0.5": 0.25, "n": 7},
                                          "plurals": {"ar": float("nan"), "n": 0}})
    photo = Image.open(SAMPLE / "images" / "000000142238.jpg").resize((64, 48))
    photo.save(folder / "image.jpg", format="JPEG", quality=80)
    photo.save(folder / "image.png", format="PNG")
    return folder


def _box_polygon(box: Sequence[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y, x + w, y + h, x, y + h]


# --- targets: the readers and scorers -------------------------------------------------------------

@dataclass
class Target:
    """A reader or scorer: the files it reads, by role (a path in the seeds folder and how to
    mutate it: "json", "pickle", "png" for one file, "png_dir" for a folder of PNGs, "image"), and
    ``run(paths, seeds)``, which reads them all the way (masks decoded, samples built)."""

    name: str
    roles: dict[str, tuple[str, str]]
    run: Callable[[dict[str, Path], Path], Any]
    memory_limit: int = MEMORY_LIMIT


def _panoptic(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import load_panoptic

    ds = load_panoptic(paths["json"], paths["png"])
    for image_id, ann in ds.annotations.items():
        ids = [s.id for s in ann.segments]
        ds.union_masks(image_id, [ids, ids[:1], []])


def _narratives(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import check_narratives, load_narratives, load_panoptic

    narratives = load_narratives(paths["json"])
    check_narratives(narratives, load_panoptic(seeds / "panoptic.json", seeds / "panoptic"),
                     paths["json"])


def _instances(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import load_instances

    instances = load_instances(paths["json"])
    for ann_id in instances.annotations:
        instances.box(ann_id)
        instances.mask(ann_id)


def _refs(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import load_instances, load_refs, select_refs
    from groundkit.data.formats.refcoco import referring_samples, sentence_types

    refs = load_refs(paths["refs"])
    instances = load_instances(seeds / "instances.json")
    for split in ("val", "test", "testA", "testB"):
        referring_samples(select_refs(refs, split, paths["refs"]), instances, paths["refs"])
        sentence_types(refs, split, paths["refs"])


def _grounding(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import read_grounding_predictions
    from groundkit.metrics.files import grounding_masks

    grounding_masks(read_grounding_predictions(paths["pred"]), paths["pred"])


def _referring(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import read_referring_predictions
    from groundkit.metrics.files import referring_by_sentence

    referring_by_sentence(read_referring_predictions(paths["pred"]), paths["pred"])


def _scores(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import read_scores

    read_scores(paths["scores"])


def _images(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.data.formats import read_segment_png
    from groundkit.data.images import read_image

    read_image(paths["png"])
    read_image(paths["jpg"])
    read_segment_png(paths["png"], (48, 64))  # its callers know the size from the JSON


def _score_png(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.metrics.files import score_png_files

    score_png_files(paths["narratives"], paths["panoptic_json"], paths["panoptic_png"],
                    paths["pred"]).scores()


def _score_panoptic(paths: dict[str, Path], seeds: Path) -> None:
    from groundkit.metrics.files import score_panoptic_files

    score_panoptic_files(paths["gt_json"], paths["gt_png"], paths["pred_json"], paths["pred_png"])


def _score_referring(task: str) -> Callable[[dict[str, Path], Path], None]:
    def run(paths: dict[str, Path], seeds: Path) -> None:
        from groundkit.metrics.files import score_referring_files

        for split in ("val", "test"):
            score_referring_files(task, paths["refs"], paths["instances"], split, paths["pred"])
    return run


TARGETS = {t.name: t for t in [
    Target("coco_panoptic", {"json": ("panoptic.json", "json"), "png": ("panoptic", "png_dir")},
           _panoptic),
    Target("png_narratives", {"json": ("png_narratives.json", "json")}, _narratives),
    Target("refcoco_instances", {"json": ("instances.json", "json")}, _instances),
    Target("refcoco_refs", {"refs": ("refs.p", "pickle")}, _refs),
    Target("grounding_predictions", {"pred": ("grounding.json", "json")}, _grounding),
    Target("referring_predictions", {"pred": ("referring.json", "json")}, _referring),
    Target("scores", {"scores": ("scores.json", "json")}, _scores),
    Target("images", {"png": ("image.png", "image"), "jpg": ("image.jpg", "image")}, _images,
           IMAGE_MEMORY_LIMIT),
    Target("score_png", {"narratives": ("png_narratives.json", "json"),
                         "panoptic_json": ("panoptic.json", "json"),
                         "panoptic_png": ("panoptic", "png_dir"), "pred": ("grounding.json", "json")},
           _score_png),
    Target("score_panoptic", {"gt_json": ("panoptic.json", "json"), "gt_png": ("panoptic", "png_dir"),
                              "pred_json": ("pred_panoptic.json", "json"),
                              "pred_png": ("pred_panoptic", "png_dir")}, _score_panoptic),
    Target("score_rec", {"refs": ("refs.p", "pickle"), "instances": ("instances.json", "json"),
                         "pred": ("referring.json", "json")}, _score_referring("rec")),
    Target("score_res", {"refs": ("refs.p", "pickle"), "instances": ("instances.json", "json"),
                         "pred": ("referring.json", "json")}, _score_referring("res")),
]}


# --- cases ----------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """How a case ended: ``kind`` "accepted", "typed" or "escape"; the error, its traceback, the
    peak of traced memory, the mutated role and the paths the target read."""

    kind: str
    error: BaseException | None
    trace: str
    peak: int
    role: str
    paths: dict[str, Path] = field(default_factory=dict)

    def describe(self) -> str:
        what = "nothing" if self.error is None else f"{type(self.error).__name__}: {self.error}"
        return f"{self.kind} (role {self.role}, peak {self.peak / 2**20:.1f} MB): {what[:300]}"


def make_case(target: Target, seeds: Path, chooser: Chooser, case_dir: Path
              ) -> tuple[str, dict[str, Path]]:
    """Mutate one file of one role of ``target`` into ``case_dir``; the role and every path."""
    role = chooser.choice(sorted(target.roles))
    paths = {r: seeds / rel for r, (rel, _) in target.roles.items()}
    rel, kind = target.roles[role]
    dst = case_dir / rel
    if kind == "png_dir":
        shutil.copytree(seeds / rel, dst)
        victim = chooser.choice(sorted(dst.iterdir()))
        victim.write_bytes(mutate_png(chooser, victim.read_bytes()))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(mutate_file(chooser, kind, (seeds / rel).read_bytes()))
    paths[role] = dst
    return role, paths


def execute(target: Target, paths: dict[str, Path], seeds: Path, role: str = "") -> Outcome:
    """Run ``target`` on ``paths``: the outcome, with the peak of memory traced meanwhile."""
    import warnings

    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    error, trace = None, ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycocotools' and Pillow's, not errors
            target.run(paths, seeds)
        kind = "accepted"
    except GroundkitError as e:
        kind, error = "typed", e
    except Exception as e:  # RecursionError and MemoryError included: what the fuzz looks for
        kind, error, trace = "escape", e, traceback.format_exc()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        if not tracing:
            tracemalloc.stop()
    if peak > target.memory_limit:
        kind, error = "escape", MemoryError(f"allocated {peak / 2**20:.0f} MB (limit "
                                            f"{target.memory_limit / 2**20:.0f} MB) after {kind}: "
                                            f"{error}")
    return Outcome(kind, error, trace, peak, role, paths)


def run_case(target: Target, seeds: Path, chooser: Chooser, case_dir: Path) -> Outcome:
    """One fuzz case of ``target``: mutate, run, sort the outcome."""
    role, paths = make_case(target, seeds, chooser, case_dir)
    return execute(target, paths, seeds, role)


def escape_key(outcome: Outcome) -> str:
    """What makes two escapes the same bug: the exception type and the innermost groundkit frame
    (or the innermost frame) it came through."""
    frames = traceback.extract_tb(outcome.error.__traceback__) if outcome.error else []
    ours = [f for f in frames if "groundkit" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "memory"
    return f"{type(outcome.error).__name__} at {where}"

