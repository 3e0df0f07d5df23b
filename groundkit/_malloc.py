"""Keep freed memory in the process for the next allocation (glibc's malloc).

Scoring a segment map allocates and frees arrays of a few megabytes per image. glibc gives the
top of its heap back to the kernel as soon as more than its trim threshold is free there, so the
next image's arrays fault every page in again: on 500 maps of 512 x 512 that was a third of
`groundkit score panoptic`'s time, all of it in the kernel (0.97 s of system time against 0.02 s
with the pad below; docs/results.md, "Metrics"). ``M_TOP_PAD`` makes every growth of the heap
take that much more and keeps it when freed: a few tens of megabytes held for the run.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TOP_PAD = -2  # glibc's mallopt parameter number (malloc.h)


def keep_freed_memory(pad_bytes: int = 64 << 20) -> bool:
    """Ask glibc's malloc for ``pad_bytes`` of headroom at the heap top; True when it took it.

    A no-op returning False where the C library is not glibc (macOS, Windows, musl): their
    allocators keep their own policies. Forked workers inherit the setting.
    """
    if sys.platform != "linux" or not _glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_TOP_PAD, pad_bytes) == 1


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # the name unknown to this C library
        return False
