"""Give memory the process freed back to the operating system between stages.

Capture (torch.export's fake tensors, the converter's graphs, symbolic shapes) allocates many
small objects and frees most of them when it ends; glibc's allocator keeps the freed pages for
reuse, so the process's resident size stays at the capture's peak and every later stage (the check
runs two models) adds to it.  ``malloc_trim(0)`` returns the free pages at the top and the
unused pages inside the heap.  Where the C library has no ``malloc_trim`` (musl, macOS) this
does nothing: the job computes the same, it only keeps more memory.

The same holds after every stage, not only capture: glibc raises its mmap threshold each time a
large mapped block is freed, so later tensors up to 32 MB (activations, the rank's per-slice
scores, a pruned weight's old copy) come from the heap and stay resident once freed; the next
stage's peak then sits on top of them.  :func:`trim` (no garbage collection: a full collection
costs ~0.1 s on a graph of a few hundred thousand objects) runs at every stage boundary.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def trim() -> None:
    """Hand freed heap pages back to the OS (glibc only; a few milliseconds)."""
    fn = _trim()
    if fn is not None:
        fn(0)


def release_freed() -> None:
    """Collect garbage cycles, then hand freed heap pages back to the OS (glibc only)."""
    gc.collect()
    trim()
