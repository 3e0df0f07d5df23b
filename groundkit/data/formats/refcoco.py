"""RefCOCO / RefCOCO+ / RefCOCOg: ``refs(<splitBy>).p`` pickles + a COCO detection ``instances.json``.

Security: a pickle runs code while it loads. :func:`load_refs` only ever opens a local file the user
points at (never a URL, never a path found inside another file); do not load refs files you do not
trust.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from groundkit._io import atomic_path


def write_refs(path: str | Path, refs: list[dict[str, Any]]) -> None:
    """Write ``refs`` as a ``refs(<splitBy>).p`` pickle, atomically.

    Protocol 2 is the newest one Python 2 reads, as the original refs files were written by it.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(list(refs), f, protocol=2)
