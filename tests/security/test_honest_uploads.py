"""Honest files the audits must let through (each was once refused as unsafe).

The audits are strict by design, so every refusal of an honest model found by trying real
architectures becomes a row here: dict inputs and outputs (torchvision segmentation, Hugging Face
outputs), keyword inputs, boolean-mask and shift ops (``aten.__and__``, ``aten.__rshift__``),
``ModuleDict`` keys with punctuation, and TorchScript modules that merely *name* ``save``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from prunekit.io.loading import load_model


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        return {"out": y, "aux": y.mean((2, 3))}


class DictIn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.conv(batch["image"])


class Masks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = (x > 0) & (x < 1) | (x == 2)
        shifted = (x.long() >> 1).float()
        return self.fc(x * keep + shifted)


class PunctuatedKeys(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({"conv(3x3)": nn.Conv2d(3, 4, 3), "op#1=a|b->c": nn.Conv2d(4, 4, 1)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops["op#1=a|b->c"](self.ops["conv(3x3)"](x))


class HalfHeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[:, :, : x.shape[2] // 2])


def _derived_dims(path: Path) -> Path:  # range constraints keyed by an expression ("2*s39")
    h = torch.export.Dim("h", min=4, max=256)
    ep = torch.export.export(HalfHeight().eval(), (torch.randn(2, 3, 16, 16),),
                             dynamic_shapes=({2: 2 * h},), strict=False)
    torch.export.save(ep, str(path))
    return path


class NamesSave(nn.Module):
    """A submodule called ``save`` and a mode string ``"save"``: names, not the ``aten::save`` op."""

    def __init__(self) -> None:
        super().__init__()
        self.save = nn.Linear(8, 8)
        self.mode = "save"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "save":
            return self.save(x)
        return x


def _pt2(module: nn.Module, args: tuple, path: Path, kwargs: dict | None = None) -> Path:
    ep = torch.export.export(module.eval(), args, kwargs=kwargs, strict=False)
    torch.export.save(ep, str(path))
    return path


CASES = {
    "dict_output": lambda p: _pt2(DictOut(), (torch.randn(2, 3, 8, 8),), p / "a.pt2"),
    "dict_input": lambda p: _pt2(DictIn(), ({"image": torch.randn(2, 3, 8, 8)},), p / "b.pt2"),
    "keyword_input": lambda p: _pt2(DictOut(), (), p / "c.pt2", kwargs={"x": torch.randn(2, 3, 8, 8)}),
    "mask_and_shift_ops": lambda p: _pt2(Masks(), (torch.randn(2, 8),), p / "d.pt2"),
    "derived_dims": lambda p: _derived_dims(p / "h.pt2"),
    "punctuated_module_keys": lambda p: _pt2(PunctuatedKeys(), (torch.randn(2, 3, 8, 8),), p / "e.pt2"),
    "ts_traced_names_save": lambda p: _ts(torch.jit.trace(NamesSave().eval(), torch.randn(2, 8)), p / "f.pt"),
    "ts_scripted_names_save": lambda p: _ts(torch.jit.script(NamesSave().eval()), p / "g.pt"),
}


def _ts(module, path: Path) -> Path:  # type: ignore[no-untyped-def]
    module.save(str(path))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_honest_file_loads(case: str, tmp_path: Path) -> None:
    loaded = load_model(CASES[case](tmp_path))
    assert loaded.program is not None or loaded.module is not None
