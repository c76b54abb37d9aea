"""A refused pickle says what it asked for, and never relays torch's advice to load it unsafely.

torch's weights-only refusal suggests re-running with ``weights_only=False`` or allow-listing
the global; relayed to a service user, that is advice to run the attacker's code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from prunekit.errors import UnsafeModelFile
from prunekit.io.loading import load_model


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "raw pickle"])
def test_a_pickle_asking_for_code_names_it_and_gives_no_unsafe_advice(writer: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "weights.pt"
    if writer == "torch.save":
        torch.save({"conv.weight": torch.zeros(1), "x": RunsACommand(marker)}, path)
    else:  # plain pickle cannot hold a tensor without naming torch's own globals first
        path.write_bytes(pickle.dumps({"x": RunsACommand(marker)}, protocol=2))
    with pytest.raises(UnsafeModelFile) as err:
        load_model(path, architecture="zoo:resnet_mini")
    text = str(err.value)
    assert "system" in text  # what it asked for (posix.system)
    for advice in ("weights_only=False", "weights_only` set to `False", "safe_globals", "trusted source"):
        assert advice not in text
    assert not marker.exists()
