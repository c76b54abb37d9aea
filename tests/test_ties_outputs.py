"""Tied weights stay one tensor in every output format, counts count them once, and no output is
ever larger than its upload nor takes fewer input sizes (both checked on every job).

GPT-2 ties its token embedding to its LM head (``wte.weight`` is ``lm_head.weight``).  Uploaded as
a ``.pt2`` or traced TorchScript (tiny config, random weights) and pruned at 0.5, the written
model must hold that matrix once, the report's parameter counts must count it once (before and
after), and unique parameters only go down.  The invariants are then fed real artifacts that break
them (a model frozen at one sequence length, an untied copy of a tied model): the job's last
step refuses each with its stable code and the reason.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import InputSizesLost, OutputLarger
from prunekit.metrics import count_parameters

from helpers import load_output
from test_dynamic_dims import SEQ, VOCAB, FixedLength, _ids, _write, tiny

WTE, HEAD = "m.transformer.wte.weight", "m.lm_head.weight"


def _unique(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel()
    return total


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_tied_gpt2_stays_tied_and_counts_once(tmp_path, fmt):
    model = tiny("gpt2")
    assert model.m.lm_head.weight is model.m.transformer.wte.weight
    unique_upload = _unique(model.parameters())
    path = tmp_path / ("model.pt2" if fmt == "export" else "model.pt")
    _write(model, fmt, path)
    inp = {"shape": [2, SEQ], "dtype": "int64", "high": VOCAB, "dims": [0, 1]}
    result = prunekit.prune_to_dir(path, {"ratio": 0.5, "inputs": [inp]}, tmp_path / "out")
    rep = result.report
    assert rep.params_before == unique_upload  # the shared matrix once, not twice
    assert rep.params_after < rep.params_before
    written = next(p for n, p in result.artifacts.items() if n.startswith("model"))
    assert rep.file_size_after <= rep.file_size_before
    if fmt == "export":
        sd = torch.export.load(str(written)).state_dict
        params = [sd[k] for k in sd]
    else:
        ts = torch.jit.load(str(written))
        sd = dict(ts.named_parameters(remove_duplicate=False)) if hasattr(ts, "named_parameters") else {}
        params = list(ts.parameters())
    shared = [sd[k] for k in (WTE, HEAD) if k in sd]  # a trace keeps the name the graph reads
    assert shared and len({t.untyped_storage().data_ptr() for t in shared}) == 1  # one tensor
    assert _unique(params) == rep.params_after
    out = load_output(written, fmt)
    assert count_parameters(out) == rep.params_after
    with torch.no_grad():
        assert out(_ids(3, SEQ - 2)).shape == (3, SEQ - 2, VOCAB)


def test_state_dict_outputs_store_a_tied_tensor_once(tmp_path):
    """Checkpoint (safetensors: under one name) and state-dict (torch.save: one storage) outputs
    of a tied LLaMA; both rebuild tied."""
    from helpers import hf_checkpoint
    from safetensors import safe_open

    src = hf_checkpoint(tmp_path, "llama", tie=True)
    for fmt in ("checkpoint", "state_dict"):
        out = tmp_path / fmt
        result = prunekit.prune_to_dir(src, {"ratio": 0.5, "output_format": fmt}, out)
        assert result.report.params_after < result.report.params_before
        if fmt == "checkpoint":
            with safe_open(str(out / "model.safetensors"), "pt") as f:
                keys = set(f.keys())
            assert ("lm_head.weight" in keys) != ("model.embed_tokens.weight" in keys)  # stored once
        else:
            sd = torch.load(out / "state_dict.pt", weights_only=True)
            assert sd["lm_head.weight"].untyped_storage().data_ptr() == sd["model.embed_tokens.weight"].untyped_storage().data_ptr()
        model = prunekit.load_pruned(out)
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert count_parameters(model) == result.report.params_after


def test_an_output_that_takes_fewer_sizes_is_refused(tmp_path):
    """The artifact proof runs the written model on the check's inputs, the second at another
    sequence length: a written model frozen at one length is refused with ``input_sizes_lost``."""
    from prunekit.api import _prove_artifact

    model = FixedLength().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(model, (_ids(2, SEQ),))
    path = tmp_path / "model.pt"
    torch.jit.save(ts, str(path))
    x1, x2 = (_ids(1, SEQ),), (_ids(3, SEQ - 1),)
    with torch.no_grad():
        samples = [(1, x1, model(*x1)), (3, x2, torch.zeros(3, 4))]
    with pytest.raises(InputSizesLost, match=r"batch 3 \(input shapes \[3, 7\]\).*fewer input sizes") as err:
        _prove_artifact(lambda: torch.jit.load(str(path)), samples, None, {"model.pt": path})
    assert err.value.code == "input_sizes_lost"
    assert not path.exists()  # never handed out


def test_an_output_larger_than_its_upload_is_refused(tmp_path):
    """A tie cut apart (the untied copy a writer that lost it would produce) has more unique
    parameters than the tied upload: refused with ``output_larger``; the tied one passes."""
    from dataclasses import dataclass

    from prunekit.api import _Exported, _never_larger

    tied = tiny("gpt2")
    untied = tiny("gpt2")
    untied.m.lm_head.weight = nn.Parameter(untied.m.lm_head.weight.detach().clone())

    @dataclass
    class Loaded:
        format: str = "export"
        size_bytes: int = 10**9

    @dataclass
    class Load:
        loaded: Loaded
        out_fmt: str = "export"
        upload_params: int = count_parameters(tied)  # counted before the upload is let go (api._let_go_of_upload)

    @dataclass
    class Cap:
        upload: nn.Module

    @dataclass
    class Checked:
        params_before: int

    before = count_parameters(tied)
    ok = _Exported({}, tied, count_parameters(tied), 1000)
    _never_larger(Load(Loaded()), Cap(tied), Checked(before), ok)
    with pytest.raises(OutputLarger, match="unique parameters, more than the upload") as err:
        _never_larger(Load(Loaded()), Cap(tied), Checked(before), _Exported({}, untied, count_parameters(untied), 1000))
    assert err.value.code == "output_larger"
    with pytest.raises(OutputLarger, match="bytes, more than the upload's 999"):
        _never_larger(Load(Loaded(size_bytes=999)), Cap(tied), Checked(before), ok)


def test_a_small_pt2_whose_graph_text_outweighs_its_weights_is_written_compact(tmp_path):
    """A fixed-batch program is written back with a dynamic batch (more graph text): on a model this
    small the text outweighs the weights the prune removed, so the archive is written again without
    the nodes' stack traces rather than refused as larger than its upload."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 8),)), str(path))
    result = prunekit.prune_to_dir(path, {"ratio": 0.5, "inputs": [{"shape": [2, 8]}]}, tmp_path / "out")
    rep = result.report
    assert rep.check["passed"] and rep.file_size_after <= rep.file_size_before
    assert rep.file_size_after == result.artifacts["model.pt2"].stat().st_size
    program = torch.export.load(str(result.artifacts["model.pt2"]))
    assert not any(n.meta.get("stack_trace") for n in program.graph.nodes)
    assert program.module()(torch.randn(5, 8)).shape == (5, 4)
