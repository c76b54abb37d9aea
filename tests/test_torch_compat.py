"""The torch internals PruneKit patches are still there (prunekit/torch_compat.py).

A torch upgrade that removes one must fail here, by name, not silently disable a patch (for the
unpickling patch that would mean unpickling uploads with ``weights_only=False``).
"""

import pytest
import torch

from prunekit import torch_compat
from prunekit.errors import UnsafeModelFile


def test_every_patched_piece_exists_in_this_torch() -> None:
    torch_compat.check()


def test_a_missing_piece_fails_loudly_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch._C, "_pickle_load_obj")
    with pytest.raises(torch_compat.TorchInternalsChanged, match="_pickle_load_obj"):
        torch_compat.check()


def test_untrusted_unpickling_forces_weights_only_and_restores_torch(tmp_path) -> None:
    import os

    class Runs:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.getcwd, ())

    path = tmp_path / "obj.pt"
    torch.save({"x": Runs()}, path)
    real_load = torch.load

    def refuse(*_a, **_k):
        raise UnsafeModelFile("refused")

    with torch_compat.untrusted_unpickling(refuse):
        with pytest.raises(Exception, match="Weights only load failed|Unsupported"):
            torch.load(path, weights_only=False)  # the caller's False is overridden
        with pytest.raises(UnsafeModelFile):
            torch._C._pickle_load_obj(b"")
    assert torch.load is real_load
