"""What keeps a job's time and memory down, held to giving the same answers as the dear way.

* shapes read from the capture's metadata equal the shapes of running the graph at both examples;
* the masked original, the pruned model and the graph the writer scripts share the captured
  graph's tensors instead of copying them, and never write into them;
* a state-dict upload is memory-mapped and its tensors become the parameters of the empty build
  (``io/empty.py``), with ties, dtypes and computed buffers kept as the copying load keeps them;
* the artifact proof runs the written model on the check's own inputs and still fails a file that
  computes something else.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit.analysis import shapes as shapes_mod
from prunekit.capture import capture
from prunekit.io.inputs import from_specs, sample_inputs
from prunekit.io.loading import LoadedModel, load_model
from prunekit.registry import register

from helpers import save_model

INPUTS = [{"shape": [1, 3, 16, 16], "dtype": "float32"}]


class Net(nn.Module):
    """Convs, a residual add, a reshape with a batch-dependent size, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4, 5)

    def forward(self, x):
        y = F.relu(self.bn(self.c1(x)))
        y = y + self.c2(y)
        y = F.adaptive_avg_pool2d(y, 2)
        return self.fc(y.reshape(y.shape[0], -1))


def _captured(tmp_path, fmt: str):
    model = Net().eval()
    sigs = from_specs(INPUTS)
    if fmt == "module":
        return capture(LoadedModel("state_dict", 0, module=model), sigs), sigs
    path = save_model(model, fmt, INPUTS, tmp_path / "m.bin")
    return capture(load_model(path), sigs), sigs


def test_shapes_from_metadata_equal_shapes_from_running(tmp_path):
    for fmt in ("module", "traced", "export"):
        cap, sigs = _captured(tmp_path, fmt)
        ex2 = sample_inputs(sigs, cap.example[0].shape[0] + 1, 7)
        got = shapes_mod.from_meta(cap.gm, cap.example, ex2)
        want = shapes_mod.by_running(cap.gm, cap.example, ex2)
        assert got == want, fmt
        # the batch moves: some node's first dim is symbolic, the weights' are not
        assert any(isinstance(s, tuple) and s and s[0] for s in got[2].values())
        assert not any(any(got[2][n.name]) for n in cap.gm.graph.nodes if n.op == "get_attr")


def test_shapes_fall_back_to_running_where_metadata_is_missing(tmp_path):
    cap, sigs = _captured(tmp_path, "module")
    gm = cap.gm
    node = next(n for n in gm.graph.nodes if n.op == "call_function" and "relu" in str(n.target))
    with gm.graph.inserting_after(node):  # a node a pass added, without "val"
        extra = gm.graph.call_function(torch.ops.aten.mul.Tensor, (node, 1.0))
    node.replace_all_uses_with(extra, delete_user_cb=lambda u: u is not extra)
    gm.recompile()
    ex2 = sample_inputs(sigs, 3, 7)
    got = shapes_mod.record_shapes(gm, cap.example, ex2)
    assert got == shapes_mod.by_running(gm, cap.example, ex2)
    assert got[0][extra.name] == got[0][node.name]


def test_derived_models_share_the_captured_weights_and_leave_them_alone(tmp_path):
    from prunekit.analysis.walk import analyse
    from prunekit.prune.removal import Removal
    from prunekit.prune.surgery import apply
    from prunekit.verify.masked import masked_original

    cap, sigs = _captured(tmp_path, "module")
    gm = cap.gm
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    ptrs = {k: v.data_ptr() for k, v in gm.state_dict().items()}
    a = analyse(gm, cap.example, sample_inputs(sigs, 3, 7))
    c1 = a.attr_labels["c1.weight"][0]
    removal = Removal.of({int(c1[0]), int(c1[3])}, a.atoms.roots())
    pruned = apply(gm, a, removal)
    masked = masked_original(gm, a, removal)
    for k, p in masked.state_dict().items():
        if k in ptrs:  # every original tensor, not a copy (the masks are new buffers)
            assert p.data_ptr() == ptrs[k], k
    sd = pruned.state_dict()
    assert sd["c1.weight"].shape[0] == 6 and sd["c1.weight"].data_ptr() != ptrs["c1.weight"]
    assert sd["fc.bias"].data_ptr() == ptrs["fc.bias"]  # untouched by the removal: shared
    for k, v in gm.state_dict().items():
        assert torch.equal(v, before[k]), k
    x = sample_inputs(sigs, 2, 3)
    with torch.no_grad():
        assert torch.allclose(pruned(*x), masked(*x), atol=1e-5)


# ----------------------------------------------------------------------------- state-dict loading


class Tied(nn.Module):
    """Tied weights, a non-persistent buffer computed at construction, a float64 parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight
        self.scale = nn.Parameter(torch.ones(6, dtype=torch.float64))
        self.register_buffer("freq", torch.arange(6, dtype=torch.float32) / 6, persistent=False)

    def forward(self, ids):
        h = self.emb(ids) * self.freq
        return self.head(F.relu(self.mid(h)) * self.scale.float())


class ReadsWeights(nn.Module):
    """A constructor that computes with a weight value: cannot be built on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        if float(self.fc.weight.detach().abs().sum()) < 0:
            raise AssertionError


def test_state_dict_upload_takes_the_files_tensors_and_keeps_ties_dtypes_buffers(tmp_path):
    from prunekit.io import empty

    register("test:tied_memory", example_inputs=[{"shape": [1, 5], "dtype": "int64", "low": 0, "high": 10}])(Tied)
    src = Tied().eval()
    sd = src.state_dict()
    sd["scale"] = sd["scale"].float()  # stored as float32: loading converts it, as copying would
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    m = load_model(path, architecture="test:tied_memory").module
    assert not any(t.is_meta for t in list(m.parameters()) + list(m.buffers()))
    assert m.head.weight is m.emb.weight  # the tie survives
    assert m.scale.dtype == torch.float64
    assert torch.equal(m.freq, torch.arange(6, dtype=torch.float32) / 6)
    ids = torch.randint(0, 10, (2, 5))
    with torch.no_grad():
        assert torch.allclose(m(ids), src(ids), atol=1e-6)
    # the same model built the copying way holds the same tensors
    assert empty.build(ReadsWeights)[1] is False
    register("test:reads_weights", example_inputs=[{"shape": [1, 4]}])(ReadsWeights)
    r = ReadsWeights()
    torch.save(r.state_dict(), tmp_path / "r.pt")
    got = load_model(tmp_path / "r.pt", architecture="test:reads_weights").module
    assert torch.equal(got.fc.weight, r.fc.weight) and not got.fc.weight.is_meta


def test_state_dict_upload_is_memory_mapped(tmp_path):
    register("test:net_memory", example_inputs=INPUTS)(Net)
    src = Net().eval()
    torch.save(src.state_dict(), tmp_path / "sd.pt")
    m = load_model(tmp_path / "sd.pt", architecture="test:net_memory").module
    # the parameter's memory lies in a mapping of the file, not in the process's heap
    ptr, mapped = m.c1.weight.data_ptr(), []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= ptr < hi:
                mapped.append(parts[-1])
    assert mapped and mapped[0].endswith("sd.pt"), mapped
    assert torch.equal(m.c1.weight, src.c1.weight)


def test_state_dict_job_end_to_end_with_mapped_weights(tmp_path):
    register("test:net_memory_job", example_inputs=INPUTS)(Net)
    torch.save(Net().eval().state_dict(), tmp_path / "sd.pt")
    res = prunekit.prune_to_dir(tmp_path / "sd.pt", {"inputs": INPUTS, "ratio": 0.5, "architecture": "test:net_memory_job"},
                                tmp_path / "out")
    assert res.report.check["passed"] and res.report.params_after < res.report.params_before
    assert not any(p.is_meta for p in res.model.parameters())


# ----------------------------------------------------------------------------- the artifact proof


def test_artifact_proof_uses_the_checks_inputs_and_fails_a_different_file(tmp_path, monkeypatch):
    from prunekit.errors import ExportFailed
    from prunekit.io import export as export_mod

    path = save_model(Net(), "traced", INPUTS, tmp_path / "m.pt")
    real = export_mod.write

    def tampered(gm, fmt, out_dir, *a, **kw):  # the written file computes something else
        artifacts, load = real(gm, fmt, out_dir, *a, **kw)

        def load_wrong():
            m = load()
            with torch.no_grad():
                m.fc.bias.add_(1.0)
            return m

        return artifacts, load_wrong

    monkeypatch.setattr(export_mod, "write", tampered)
    try:
        prunekit.prune_to_dir(path, {"inputs": INPUTS, "ratio": 0.5}, tmp_path / "out")
    except ExportFailed as exc:
        assert "computes something else" in str(exc)
    else:
        raise AssertionError("a tampered artifact passed the proof")
    assert not (tmp_path / "out" / "model.pt").exists()


def test_torchscript_capture_shares_the_uploads_weights(tmp_path):
    """TS2EP lifts parameters as buffers; turning them back into parameters does not copy them."""
    path = save_model(Net(), "traced", INPUTS, tmp_path / "m.pt")
    loaded = load_model(path)
    ptrs = {p.data_ptr() for p in loaded.module.parameters()}
    cap = capture(loaded, from_specs(INPUTS))
    params = list(cap.gm.parameters())
    assert params and all(p.data_ptr() in ptrs for p in params)
    assert all(isinstance(p, nn.Parameter) for p in params)


def test_upload_is_let_go_after_the_upload_comparison(tmp_path, monkeypatch):
    """A TorchScript module or a .pt2 program is not held through analysis, check and export (its
    code and graphs were 1.5x the weights on EfficientNet-B0; the capture keeps the weights); the
    job still refuses an output with more parameters than the upload, counted before it went."""
    import gc
    import weakref

    from prunekit import api

    real = api.load_model
    for fmt in ("traced", "export"):
        path = save_model(Net(), fmt, INPUTS, tmp_path / f"m_{fmt}.bin")
        refs: list = []

        def spy(*args, **kwargs):
            loaded = real(*args, **kwargs)
            refs.append(weakref.ref(loaded.module if loaded.module is not None else loaded.program))
            return loaded

        monkeypatch.setattr(api, "load_model", spy)
        alive: dict[str, bool] = {}

        def progress(stage, fraction, message):
            if stage not in alive and refs:
                gc.collect()
                alive[stage] = refs[0]() is not None

        res = prunekit.prune_to_dir(path, {"inputs": INPUTS, "ratio": 0.5}, tmp_path / f"out_{fmt}", progress=progress)
        assert alive["capture"], fmt  # the capture and the upload comparison run it
        later = [s for s in ("analyse", "rank", "remove", "check", "export") if s in alive]
        assert later == ["analyse", "rank", "remove", "check", "export"], (fmt, alive)
        assert not any(alive[s] for s in later), (fmt, alive)
        assert 0 < res.report.params_after < res.report.params_before


def test_upload_parameter_count_is_taken_before_the_upload_goes(tmp_path, monkeypatch):
    """What the no-larger-output rule compares with is the upload's own unique parameter count."""
    from prunekit import api
    from prunekit.metrics import count_parameters

    path = save_model(Net(), "traced", INPUTS, tmp_path / "m.pt")
    seen: list[int] = []
    real = api._let_go_of_upload

    def spy(load, cap):
        real(load, cap)
        seen.append(load.upload_params)

    monkeypatch.setattr(api, "_let_go_of_upload", spy)
    prunekit.prune_to_dir(path, {"inputs": INPUTS, "ratio": 0.5}, tmp_path / "out")
    assert seen == [count_parameters(load_model(path).module)] and seen[0] > 0


def test_writer_skips_scripting_only_where_it_cannot_work(tmp_path):
    """The TorchScript writer goes straight to tracing when the graph still calls an ATen overload:
    scripting such a graph fails (checked here, so a torch that learns to script overloads shows
    up), and the traced file computes what the graph computes.  A graph of plain torch calls is
    still scripted."""
    from prunekit.io.export import _traceable_sizes, _unscriptable_call, to_torchscript

    cap, sigs = _captured(tmp_path, "traced")
    prepared = _traceable_sizes(cap.gm)
    assert _unscriptable_call(prepared) is not None
    try:
        torch.jit.script(prepared)
        scripted = True
    except Exception:
        scripted = False
    assert not scripted
    ts = to_torchscript(cap.gm, cap.example)
    x = sample_inputs(sigs, 3, 1)
    torch.testing.assert_close(ts(*x), cap.gm(*x))
    plain = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    assert _unscriptable_call(plain) is None
    assert isinstance(to_torchscript(plain, (torch.randn(2, 4),)), torch.jit.RecursiveScriptModule)


def test_slice_scores_in_chunks_equal_scores_of_the_whole_tensor(monkeypatch):
    """Scoring a weight chunk by chunk (a bounded working copy) gives every slice's score whole."""
    from prunekit.prune import importance as imp

    torch.manual_seed(0)
    w = torch.randn(24, 10, 3, 3)
    for dim in (0, 1):
        whole = w.movedim(dim, 0).reshape(w.shape[dim], -1).pow(2).sum(1).double().numpy()
        for chunk in (1, 50, 10**9):  # one row at a time, a few rows, everything at once
            monkeypatch.setattr(imp, "SCORE_CHUNK", chunk)
            got = imp.slice_scores(w, dim, imp._l2)
            assert got.shape == whole.shape and abs(got - whole).max() <= 1e-5 * abs(whole).max(), (dim, chunk)
