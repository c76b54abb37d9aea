"""Higher-order ops' subgraphs in a ``.pt2`` (``torch.cond``): their names reach generated code.

A subgraph argument (``as_graph``) is registered as a submodule under its ``name`` and read by a
``get_attr`` node whose target is that name; fx writes a target that is not an identifier as
``getattr(self, "<name>")``, so a name holding ``",<expr>,"`` (no dot: ``register_module`` refuses
dots) evaluates ``<expr>`` when the program runs: ``exec`` of bytes decoded by ``str``.  The
control shows torch alone runs it; PruneKit refuses it, and any non-identifier value name inside
a nested graph, before torch opens the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crafted import edit_model_json
from prunekit.errors import UnsafeModelFile
from prunekit.io.loading import load_model


class Branches(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cond") / "cond.pt2"
    torch.export.save(torch.export.export(Branches(), (torch.randn(2, 3),), strict=False), str(path))
    return path


def _dotless(marker: Path) -> str:
    """``exec`` of a Python statement with no dot and no quote in the expression itself."""
    code = ",".join(str(b) for b in f"import os; os.system('touch {marker}')".encode())
    latin1 = "+".join(f"chr({ord(c)})" for c in "latin1")
    return f"exec(str(bytes([{code}]),{latin1}))"


def _rename(doc: dict, old: str, new: str) -> None:
    def walk(o: object) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                if v == old and k in ("name", "as_name", "target"):
                    o[k] = new
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(doc)


def subgraph_name(honest: Path, dst: Path, marker: Path) -> Path:
    return edit_model_json(honest, dst, lambda doc: _rename(doc, "false_graph_0", f'false_graph_0",{_dotless(marker)},"'))


def test_control_torch_alone_runs_code_in_a_subgraph_name(honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = subgraph_name(honest, tmp_path / "evil.pt2", marker)
    module = torch.export.load(str(path)).module()
    with pytest.raises(TypeError):  # getattr with four arguments, after the third ran
        module(torch.randn(2, 3))
    assert marker.exists(), "torch alone did not run the subgraph name: the attack is not real"


def test_a_subgraph_name_that_is_not_an_identifier_is_refused(honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(UnsafeModelFile, match="as_graph/name"):
        load_model(subgraph_name(honest, tmp_path / "evil.pt2", marker))
    assert not marker.exists()


def test_a_nested_graphs_value_name_that_is_not_an_identifier_is_refused(honest: Path, tmp_path: Path) -> None:
    def edit(doc: dict) -> None:
        text = json.dumps(doc)
        graphs = [n for n in doc["graph_module"]["graph"]["nodes"] if "cond" in n["target"]][0]["inputs"]
        nested = next(i["arg"]["as_graph"]["graph"] for i in graphs if "as_graph" in i["arg"])
        old = nested["inputs"][0]["as_tensor"]["name"]
        assert old in text
        _rename(nested, old, "x=print(1)")

    with pytest.raises(UnsafeModelFile, match="not a Python identifier"):
        load_model(edit_model_json(honest, tmp_path / "nested.pt2", edit))


def test_an_honest_program_with_subgraphs_loads(honest: Path) -> None:
    assert load_model(honest).program is not None
