"""Messages speak of the user's dims (``batch``, ``inputs.0.shape[2]``), not of torch's symbols (``s22``).
"""

from __future__ import annotations

import torch
import torch.fx as fx


def symbol_names(gm: fx.GraphModule) -> dict[str, str]:
    """``{"s22": "batch", "s7": "inputs.0.shape[2]"}``: the user's names for the graph's
    symbolic input sizes, so that messages speak of their dims, not of torch's symbols."""
    names: dict[str, str] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        val = node.meta.get("val")
        for d, size in enumerate(getattr(val, "shape", ())):
            if isinstance(size, torch.SymInt) and getattr(size.node.expr, "is_Symbol", False):
                names.setdefault(str(size.node.expr), "batch" if d == 0 else f"inputs.{i}.shape[{d}]")
    return names


def humanize_symbols(text: str, names: dict[str, str]) -> str:
    if not names:
        return text
    import re

    return re.sub(r"\b[su]\d+\b", lambda m: names.get(m.group(0), m.group(0)), text)
