"""Channel atoms and the union-find that couples them.

Every sliceable dimension of every tensor attribute (parameter, buffer, constant) and of every
constant-filled tensor the graph creates gets one *atom* per index.  Op rules unify atoms that
must be removed together (conv2's input channel ``c`` with conv1's output channel ``c``) and *pin*
atoms that must stay (channels a LayerNorm normalises over, the model's input, an op with no
rule).  After analysis each connected component is one removable channel: removing it slices every
tensor dimension index that carries one of its atoms.

Pins come in two kinds: ``hard`` (removing would change the maths) and ``output`` (the model's
output width; released when the spec names a parameter in that component).
"""

from __future__ import annotations

import numpy as np


class Atoms:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.hard: dict[int, str] = {}  # root -> reason the component may not be removed
        self.output: set[int] = set()   # roots of components that reach a model output

    def __len__(self) -> int:
        return len(self.parent)

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.hard and ra not in self.hard:
            self.hard[ra] = self.hard[rb]
        self.hard.pop(rb, None)
        if rb in self.output:
            self.output.discard(rb)
            self.output.add(ra)
        return ra

    def union_arrays(self, a: np.ndarray | None, b: np.ndarray | None, reason: str) -> np.ndarray | None:
        """Couple two label vectors index by index; an index labelled on one side only is pinned."""
        if a is None and b is None:
            return None
        if a is None or b is None:
            self.pin(a if a is not None else b, reason)
            return a if a is not None else b
        if len(a) != len(b):
            raise ValueError(f"cannot couple dimensions of sizes {len(a)} and {len(b)}")
        both = (a >= 0) & (b >= 0)
        for x, y in zip(a[both].tolist(), b[both].tolist()):
            if x != y:
                self.union(x, y)
        self.pin(a[(a >= 0) & (b < 0)], reason)
        self.pin(b[(b >= 0) & (a < 0)], reason)
        return np.where(a >= 0, a, b)

    def merge(self, atoms: np.ndarray) -> int:
        """Unify all given atoms into one component; return an atom of it (or -1 if none)."""
        atoms = atoms[atoms >= 0]
        if atoms.size == 0:
            return -1
        uniq = np.unique(atoms)
        first = int(uniq[0])
        for x in uniq[1:].tolist():
            self.union(first, x)
        return first

    def pin(self, atoms: np.ndarray | None, reason: str, *, output: bool = False) -> None:
        if atoms is None:
            return
        for a in np.unique(atoms[atoms >= 0]).tolist():
            r = self.find(a)
            if output:
                self.output.add(r)
            elif r not in self.hard:
                self.hard[r] = reason

    def roots(self) -> np.ndarray:
        """Root of every atom, as one vector (call after analysis).

        Pointer jumping over the whole parent vector at once (each step halves every path), then
        the compressed vector is kept: the same roots :meth:`find` gives, without a Python loop."""
        parent = np.asarray(self.parent, dtype=np.int64)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        self.parent = parent.tolist()
        return parent
