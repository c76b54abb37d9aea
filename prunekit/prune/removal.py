"""Which channels a prune removes, as one value the surgery, the masked original and the check share.

The plan chooses channels (root atoms); every atom of a chosen channel goes.  ``Removal`` holds
that per-atom flag and answers the one question every later stage asks: for a dimension's
labels, which of its indices stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Removal:
    removed_atom: np.ndarray  # bool per atom: True where the atom's channel is removed

    @classmethod
    def of(cls, removed_roots: set[int], roots: np.ndarray) -> "Removal":
        """From the plan's removed channels (root atoms) and every atom's root."""
        flag = np.zeros(len(roots), dtype=bool)
        if removed_roots:
            flag = np.isin(roots, np.fromiter(removed_roots, dtype=np.int64, count=len(removed_roots)))
        return cls(flag)

    def kept(self, lab: np.ndarray) -> np.ndarray:
        """For one dimension's labels, a bool mask of the indices that stay (unlabelled ones stay)."""
        keep = np.ones(len(lab), dtype=bool)
        ok = lab >= 0
        keep[ok] = ~self.removed_atom[lab[ok]]
        return keep
