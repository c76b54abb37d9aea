"""Every dimension the upload takes at any size stays so in the output, and the check proves it.

Tiny Hugging Face models built from configs (random weights) are uploaded as a ``.pt2`` exported
with a dynamic batch *and* sequence length, and as traced TorchScript with ``inputs[i].dims``
saying the sequence is dynamic; each is pruned at 0.5, written, loaded back and run at another
batch and another sequence length than the example's.  A model that cannot keep a dimension
dynamic fails with the reason instead of handing out a model frozen at the example's size.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import CaptureFailed, InvalidSpec

from helpers import load_output

SEQ = 8
VOCAB = 50


class TokenModel(nn.Module):
    """input_ids -> the Hugging Face model's first output (no cache: one tensor out)."""

    def __init__(self, m: nn.Module, cache: bool):
        super().__init__()
        self.m, self.cache = m, cache

    def forward(self, ids):
        return self.m(input_ids=ids, use_cache=False)[0] if self.cache else self.m(input_ids=ids)[0]


def tiny(kind: str) -> nn.Module:
    from prunekit.providers.transformers_models import _transformers

    t = _transformers()
    torch.manual_seed(0)
    if kind == "bert":
        m = t.BertModel(t.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                     vocab_size=VOCAB, max_position_embeddings=32))
        return TokenModel(m.eval(), cache=False).eval()
    m = t.GPT2LMHeadModel(t.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=VOCAB, n_positions=32,
                                       bos_token_id=0, eos_token_id=0))
    return TokenModel(m.eval(), cache=True).eval()


def _ids(b: int, s: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, s), generator=torch.Generator().manual_seed(b * 100 + s))


def _write(model: nn.Module, fmt: str, path) -> None:
    ids = _ids(2, SEQ)
    if fmt == "export":
        batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=32)
        ep = torch.export.export(model, (ids,), dynamic_shapes=({0: batch, 1: seq},), strict=False)
        torch.export.save(ep, str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(model, (ids,), check_trace=False), str(path))


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_output_runs_at_another_batch_and_sequence_length(tmp_path, kind, fmt):
    model = tiny(kind)
    path = tmp_path / ("model.pt2" if fmt == "export" else "model.pt")
    _write(model, fmt, path)
    inp = {"shape": [2, SEQ], "dtype": "int64", "high": VOCAB}
    if fmt == "torchscript":  # a trace cannot say which sizes it takes: the spec does
        inp["dims"] = [0, 1]
    result = prunekit.prune_to_dir(path, {"ratio": 0.5, "inputs": [inp]}, tmp_path / "out")
    out = load_output(next(p for n, p in result.artifacts.items() if n.startswith("model")), fmt)
    assert result.report.params_after < result.report.params_before
    with torch.no_grad():
        for b, s in [(3, SEQ - 3), (1, SEQ + 5), (4, SEQ)]:
            y = out(_ids(b, s))
            assert tuple(y.shape[:2]) == (b, s)
            assert torch.isfinite(y).all()


def test_check_exercises_the_second_size():
    """The check's second batch is drawn at the second sequence length (shapes in the report's inputs)."""
    from prunekit.io.inputs import from_specs
    from prunekit.verify.check import check_inputs

    sigs = from_specs([{"shape": [2, SEQ], "dtype": "int64", "high": VOCAB, "dims": [0, 1]},
                       {"shape": [2, SEQ, 4], "dims": [1]}])
    shapes = [[tuple(t.shape) for t in x] for _, x in check_inputs(sigs, [1, 3], 0)]
    assert shapes == [[(1, SEQ), (1, SEQ, 4)], [(3, SEQ - 1), (3, SEQ - 1, 4)]]


class FixedLength(nn.Module):
    """Flattens the sequence into the features: it only runs at the length it was written for."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.fc = nn.Linear(8 * SEQ, 4)

    def forward(self, ids):
        return self.fc(self.emb(ids).reshape(ids.shape[0], 8 * SEQ))


def test_a_dimension_that_cannot_stay_dynamic_fails_with_the_reason():
    spec = {"ratio": 0.5, "inputs": [{"shape": [2, SEQ], "dtype": "int64", "high": VOCAB, "dims": [0, 1]}]}
    with pytest.raises(CaptureFailed, match=r"inputs\.0 dim 1 dynamic"):
        prunekit.prune(FixedLength().eval(), spec)
    spec["inputs"][0]["dims"] = [0]  # the batch only: fine
    assert prunekit.prune(FixedLength().eval(), spec).report.params_after > 0


def test_dims_must_name_dimensions_of_the_shape():
    with pytest.raises(InvalidSpec, match=r"inputs\.0\b.*dims"):
        prunekit.prune(FixedLength().eval(), {"ratio": 0.5, "inputs": [{"shape": [2, SEQ], "dims": [0, 2]}]})


def test_dims_naming_a_dimension_the_program_holds_fixed_is_refused(tmp_path):
    """A .pt2 says itself which sizes it takes: a spec asking for more is refused, naming the field."""
    model = tiny("bert")
    path = tmp_path / "fixed_seq.pt2"
    ep = torch.export.export(model, (_ids(2, SEQ),), dynamic_shapes=({0: torch.export.Dim("batch")},), strict=False)
    torch.export.save(ep, str(path))
    spec = {"ratio": 0.5, "inputs": [{"shape": [2, SEQ], "dtype": "int64", "high": VOCAB, "dims": [0, 1]}]}
    with pytest.raises(InvalidSpec, match=r"inputs\.0\.dims names dimension 1.*one size only"):
        prunekit.prune(path, spec)
    spec["inputs"][0]["dims"] = [0]
    assert prunekit.prune(path, spec).report.check["passed"]
