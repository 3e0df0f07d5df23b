import os
import subprocess
import sys

import pytest

from groundkit._malloc import _glibc, keep_freed_memory

# Allocate and free a few arrays of megabytes per round beside a small long-lived one, as the
# scorers do per image, and print the minor page faults of the rounds after the first.
PATTERN = """
import resource, sys
import numpy as np
from groundkit._malloc import keep_freed_memory
if sys.argv[1] == "pad":
    assert keep_freed_memory()
keep = []
def round_():
    a = np.ones(600_000, np.uint32); b = (a > 0); c = np.flatnonzero(b); d = a & 7
    keep.append(np.zeros(10))
    return int(c.size + d.sum())
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not (sys.platform == "linux" and _glibc()), reason="glibc's mallopt only")
def test_the_pad_keeps_freed_pages_for_the_next_round():
    """With the pad, rounds that allocate and free megabytes fault (almost) no page in again;
    without it glibc returns them to the kernel at each free."""
    faults = {}
    for mode in ("pad", "default"):
        out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True,
                             env={**os.environ, "MALLOC_TOP_PAD_": ""}, check=True)
        faults[mode] = int(out.stdout)
    assert faults["pad"] * 10 < faults["default"], faults


def test_elsewhere_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
