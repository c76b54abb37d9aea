"""One small model per structural pattern: each must prune (channels really go) and check out.

A rule that couples too little fails the masked-vs-pruned check; one that pins too much removes
nothing where something should go; both are asserted here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from helpers import example
from prunekit.errors import CheckFailed
from prunekit.analysis.rules import RULES, Rule
from prunekit.analysis.rules.elementwise import elementwise


class ConvTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.out = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        return self.out(F.relu(self.up(F.relu(self.c(x)))))


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.c2 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.c2(F.silu(self.gn(self.c1(x))))


class SplitCatPadInterp(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.prelu = nn.PReLU(8)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        a, b = torch.chunk(self.c1(x), 2, dim=1)
        b = self.c2(F.pad(b, (1, 1, 1, 1), mode="reflect"))
        b = self.prelu(self.inorm(b))
        y = torch.cat([a, b], dim=1)
        y = F.interpolate(F.avg_pool2d(y, 2), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(y)


class GluSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 32)
        self.fc2 = nn.Linear(16, 12)
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x):
        h = F.glu(self.fc1(x), dim=-1)
        h = self.fc2(h)
        return self.fc3(h[:, :6] * torch.sigmoid(h[:, 6:]))


class EmbeddingBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 24)
        self.fc = nn.Linear(24, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, ids):
        return self.head(F.gelu(self.fc(self.emb(ids))).sum(1))


class ManualAttention(nn.Module):
    """Per-head reshape with matmul/softmax written out, as many codebases do."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 32), nn.Linear(16, 32), nn.Linear(16, 32)
        self.o = nn.Linear(32, 16)
        self.heads = 4

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.k(x).view(b, n, self.heads, -1).transpose(1, 2)
        v = self.v(x).view(b, n, self.heads, -1).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * 0.25
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.o(y)


class SdpaNoScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.o = nn.Linear(16, 16)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.c(x)), 1))


class BmmAddmm(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(12, 20))
        self.b1 = nn.Parameter(torch.randn(20))
        self.w2 = nn.Parameter(torch.randn(20, 6))

    def forward(self, x):
        h = torch.addmm(self.b1, x, self.w1).relu()
        return torch.bmm(h.unsqueeze(1), self.w2.expand(x.shape[0], -1, -1)).squeeze(1)


class PixelShuffles(nn.Module):
    """Space-to-depth and back: a shuffled channel is a block of r*r input channels."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(64, 24, 3, padding=1)
        self.c3 = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.c2(F.pixel_unshuffle(F.relu(self.c1(x)), 2)))
        return self.c3(F.pixel_shuffle(h, 2))


class GatherTokens(nn.Module):
    """Token-type ids gathered from a buffer (BERT's), then an embedding: ``gather`` has a rule."""

    def __init__(self):
        super().__init__()
        self.register_buffer("types", torch.zeros(1, 32, dtype=torch.long))
        self.tok, self.typ = nn.Embedding(50, 16), nn.Embedding(2, 16)
        self.fc, self.out = nn.Linear(16, 24), nn.Linear(24, 4)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
        types = torch.gather(self.types.expand(ids.shape[0], -1), 1, pos)
        return self.out(F.gelu(self.fc(self.tok(ids) + self.typ(types)))).sum(1)


class IndexPooling(nn.Module):
    """CLIP's pooling: one token per row picked by two index tensors; channels pass through."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc, self.out = nn.Embedding(50, 16), nn.Linear(16, 24), nn.Linear(24, 4)

    def forward(self, ids):
        h = F.gelu(self.fc(self.emb(ids)))
        return self.out(h[torch.arange(h.shape[0]), ids.argmax(-1)])


class WeightNormConv(nn.Module):
    """A weight-normalised conv (wav2vec2's positional conv) is kept whole, without a barrier; the
    conv before it still loses channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv1d(4, 8, 1), nn.Conv1d(8, 6, 3, padding=1)
        self.c = nn.utils.parametrizations.weight_norm(nn.Conv1d(6, 6, 3, padding=1), dim=2)

    def forward(self, x):
        h = self.b(F.relu(self.a(x)))
        return h + self.c(h)


class GroupedQueryAttention(nn.Module):
    """``enable_gqa``: 4 query heads share 2 key/value heads; a key/value head goes with its queries."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 32), nn.Linear(16, 16), nn.Linear(16, 16)
        self.o = nn.Linear(32, 16)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, -1, 8).transpose(1, 2)
        k = self.k(x).view(b, n, -1, 8).transpose(1, 2)
        v = self.v(x).view(b, n, -1, 8).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


class NormalizedTokens(nn.Module):
    """``F.normalize`` over the tokens, per channel (EdgeNeXt's cross-covariance attention): the
    divisor carries the channels, so the masked reference must not divide a removed one by zero."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        h = F.normalize(self.a(x).transpose(1, 2), dim=-1)
        return self.b(h.transpose(1, 2) * torch.rsqrt(h.pow(2).mean(-1) + 1e-6).unsqueeze(1))


CASES = {
    "conv_transpose": (ConvTranspose, [{"shape": [1, 3, 16, 16]}], ["c.weight", "up.weight"]),
    "group_norm": (GroupNormNet, [{"shape": [1, 3, 8, 8]}], ["c1.weight"]),
    "split_cat_pad_interp": (SplitCatPadInterp, [{"shape": [1, 3, 16, 16]}], ["c1.weight", "c2.weight"]),
    "glu_slice": (GluSlice, [{"shape": [1, 10]}], ["fc1.weight"]),
    "embedding": (EmbeddingBag, [{"shape": [1, 7], "dtype": "int64", "high": 50}], ["emb.weight", "fc.weight"]),
    "manual_attention": (ManualAttention, [{"shape": [1, 5, 16]}], ["q.weight", "v.weight"]),
    "sdpa_default_scale": (SdpaNoScale, [{"shape": [1, 5, 16]}], ["qkv.weight"]),
    "flatten_linear": (FlattenLinear, [{"shape": [1, 3, 8, 8]}], ["c.weight"]),
    "addmm_bmm": (BmmAddmm, [{"shape": [1, 12]}], ["w1"]),
    "pixel_shuffle": (PixelShuffles, [{"shape": [1, 3, 8, 8]}], ["c1.weight", "c2.weight"]),
    "gather": (GatherTokens, [{"shape": [1, 7], "dtype": "int64", "high": 50}], ["fc.weight"]),
    "index_two_tensors": (IndexPooling, [{"shape": [1, 7], "dtype": "int64", "high": 50}], ["fc.weight"]),
    "weight_norm": (WeightNormConv, [{"shape": [1, 4, 10]}], ["a.weight"]),
    "sdpa_grouped_query": (GroupedQueryAttention, [{"shape": [1, 5, 16]}], ["q.weight", "k.weight", "o.weight"]),
    "divide_by_channels": (NormalizedTokens, [{"shape": [1, 5, 16]}], ["a.weight"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pattern_prunes_and_checks(case):
    cls, inputs, shrunk = CASES[case]
    torch.manual_seed(0)
    model = cls().eval()
    before = {n: p.shape for n, p in model.named_parameters()}
    res = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs})
    assert res.report.check["passed"], res.report.check
    assert not res.report.barriers, res.report.barriers
    after = dict(res.model.named_parameters())
    for name in shrunk:
        assert after[name].numel() < before[name].numel(), f"{name} was not pruned"
    for b in (1, 6):
        assert res.model(*example(inputs, b, seed=b)).shape[0] == b


def test_pixel_shuffle_removes_whole_blocks():
    res = prunekit.prune(PixelShuffles().eval(), {"ratio": 0.5, "inputs": [{"shape": [1, 3, 8, 8]}]})
    c2_out, c3_in = res.model.c2.weight.shape[0], res.model.c3.weight.shape[1]
    assert c2_out == 4 * c3_in and c3_in < 6  # blocks of 2*2 went whole
    assert res.model.c2.weight.shape[1] == 4 * res.model.c1.weight.shape[0]  # unshuffle: r*r per channel


def test_group_norm_removes_whole_groups():
    res = prunekit.prune(GroupNormNet().eval(), {"ratio": 0.5, "inputs": [{"shape": [1, 3, 8, 8]}]})
    assert res.model.c1.weight.shape[0] == 8  # two of four groups of four channels
    gn = [n for n in res.model.graph.nodes if "group_norm" in str(n.target)][0]
    assert gn.args[1] == 2


def test_layer_norm_pins_its_channels():
    class LN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.ln, self.fc2, self.fc3 = nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 32), nn.Linear(32, 4)

        def forward(self, x):
            return self.fc3(F.relu(self.fc2(self.ln(self.fc1(x)))))

    res = prunekit.prune(LN().eval(), {"ratio": 0.5, "inputs": [{"shape": [1, 8]}]})
    assert res.model.fc1.weight.shape[0] == 16  # normalised over: kept
    assert res.model.fc2.weight.shape[0] == 16  # free: halved
    # The report says which weights kept every output channel, and why.
    kept = {k["param"]: k["reason"] for k in res.report.kept}
    assert set(kept) == {"fc1.weight", "fc3.weight"}, kept
    assert "layer_norm" in kept["fc1.weight"] and "model output" in kept["fc3.weight"], kept


def test_kept_names_a_transposed_conv_by_its_output_channels():
    class Generator(nn.Module):  # DCGAN-style: the latent input pins the first layer's inputs
        def __init__(self):
            super().__init__()
            self.up1, self.up2 = nn.ConvTranspose2d(8, 16, 4, 2, 1), nn.ConvTranspose2d(16, 3, 4, 2, 1)

        def forward(self, z):
            return torch.tanh(self.up2(F.relu(self.up1(z))))

    res = prunekit.prune(Generator().eval(), {"ratio": 0.5, "inputs": [{"shape": [1, 8, 4, 4]}]})
    assert res.model.up1.weight.shape == (8, 8, 4, 4)  # (in, out, k, k): its outputs were halved
    kept = {k["param"]: k["reason"] for k in res.report.kept}
    assert "up1.weight" not in kept and "model output" in kept["up2.weight"], kept


def test_unknown_op_is_a_barrier_not_a_crash():
    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = torch.logcumsumexp(self.c1(x), dim=1)  # mixes channels; no channel rule
            return self.c3(F.relu(self.c2(y)))

    res = prunekit.prune(Shuffle().eval(), {"ratio": 0.5, "inputs": [{"shape": [1, 3, 8, 8]}]})
    assert {b["op"] for b in res.report.barriers} == {"aten.logcumsumexp.default"}
    assert any("logcumsumexp" in w for w in res.report.warnings)
    assert res.model.c1.weight.shape[0] == 16  # channels through the barrier are kept
    assert res.model.c2.weight.shape[0] == 4   # the rest still prunes


def test_a_wrong_rule_is_caught_by_the_check(monkeypatch):
    """Pretend softmax were elementwise: the masked-vs-pruned check must reject the result."""

    class Soft(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(torch.softmax(self.fc1(x), dim=-1))

    spec = {"ratio": 0.5, "inputs": [{"shape": [1, 8]}]}
    with pytest.raises(prunekit.errors.InvalidSpec, match="nothing to prune"):
        prunekit.prune(Soft().eval(), spec)  # the true rule pins the softmax dim
    monkeypatch.setitem(RULES, torch.ops.aten.softmax, Rule(elementwise))
    monkeypatch.setitem(RULES, torch.ops.aten._softmax, Rule(elementwise))
    with pytest.raises(CheckFailed, match="deviates from the masked original"):
        prunekit.prune(Soft().eval(), spec)


def test_progress_goes_through_every_stage(tmp_path):
    seen = []
    model = ConvTranspose().eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.jit.save(torch.jit.trace(model, torch.randn(2, 3, 16, 16)), str(tmp_path / "m.pt"))
    prunekit.prune_to_dir(tmp_path / "m.pt", {"ratio": 0.5, "inputs": [{"shape": [1, 3, 16, 16]}]}, tmp_path / "out",
                          progress=lambda s, f, m: seen.append((s, f)))
    stages = [s for s, _ in seen]
    assert [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] == list(prunekit.api.STAGES)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_spec_options_shape_the_result():
    from prunekit.registry import build

    model = build("zoo:resnet_mini")
    inputs = [{"shape": [1, 3, 32, 32]}]
    base = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs}).model
    ign = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs, "ignore": ["layer1.0.conv1.weight"]}).model
    assert ign.get_parameter("layer1.0.conv1.weight").shape[0] == model.layer1[0].conv1.weight.shape[0]
    assert base.get_parameter("layer1.0.conv1.weight").shape[0] < model.layer1[0].conv1.weight.shape[0]
    r8 = prunekit.prune(model, {"ratio": 0.3, "inputs": inputs, "round_to": 8}).model
    for n, p in r8.named_parameters():
        if n.endswith("conv1.weight") and n.startswith("layer"):
            assert p.shape[0] % 8 == 0, (n, p.shape)
    mc = prunekit.prune(model, {"ratio": 0.9, "inputs": inputs, "min_channels": 6}).model
    assert mc.get_parameter("layer1.0.conv1.weight").shape[0] >= 6
    one = prunekit.prune(model, {"layers": {"layer2.0.conv1.weight": 0.5}, "inputs": inputs})
    changed = {c.name for c in one.report.layers}
    assert changed == {"layer2.0.conv1.weight", "layer2.0.conv1.bias", "layer2.0.bn1.weight", "layer2.0.bn1.bias",
                       "layer2.0.bn1.running_mean", "layer2.0.bn1.running_var", "layer2.0.conv2.weight"} - {
        n for n in ("layer2.0.conv1.bias",) if n not in dict(model.named_parameters())}
    glob = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs, "global_ranking": True})
    assert glob.report.check["passed"] and glob.report.channels_removed > 0
    for imp in ("l1", "bn_scale", "random"):
        r = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs, "importance": imp})
        assert r.report.check["passed"]
    a = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs, "importance": "random", "seed": 1}).model
    b = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs, "importance": "random", "seed": 1}).model
    assert torch.equal(a.get_parameter("layer1.0.conv1.weight"), b.get_parameter("layer1.0.conv1.weight"))


def test_report_is_json_and_counts_macs(tmp_path):
    import json

    from prunekit.registry import build

    res = prunekit.prune(build("zoo:resnet_mini"), {"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]})
    d = json.loads(res.report.to_json())
    assert 0 < d["macs_after"] < d["macs_before"]
    assert d["params_after"] == sum(p.numel() for p in res.model.parameters())
    assert set(d["timings"]) >= {"load", "capture", "analyse", "rank", "remove", "check"}
    assert d["groups_found"] >= d["groups_pruned"] > 0


def test_safetensors_weights_and_inputs_files(tmp_path):
    """A safetensors state-dict upload plus a safetensors file of example inputs (int token ids)."""
    from safetensors.torch import save_file

    from prunekit.registry import register

    register("test:embedding_bag", example_inputs=[])(EmbeddingBag)
    model = EmbeddingBag().eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    save_file({"input_0": torch.randint(0, 50, (2, 7))}, str(tmp_path / "inputs.safetensors"))
    res = prunekit.prune_to_dir(tmp_path / "w.safetensors", {"ratio": 0.5, "architecture": "test:embedding_bag"},
                                tmp_path / "out", inputs_path=tmp_path / "inputs.safetensors")
    assert res.report.input_format == "state_dict" and res.report.check["passed"]
    rebuilt = prunekit.load_pruned("test:embedding_bag", res.artifacts["state_dict.pt"], res.artifacts["manifest.json"])
    assert rebuilt.emb.embedding_dim < 24
    assert rebuilt(torch.randint(0, 50, (4, 3))).shape == (4, 5)


def test_model_with_a_baked_batch_size_prunes_at_that_size(tmp_path):
    """``x.view(1, -1)`` only works at batch 1: capture falls back to the spec's batch, says so,
    and the pruned model keeps that batch size."""

    class FixedBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8 * 6 * 6, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x)).view(1, -1))

    model = FixedBatch().eval()
    torch.jit.save(torch.jit.trace(model, torch.randn(1, 3, 8, 8)), str(tmp_path / "fixed.pt"))
    for source in (model, tmp_path / "fixed.pt"):
        res = prunekit.prune(source, {"ratio": 0.5, "inputs": [{"shape": [1, 3, 8, 8]}]})
        assert not res.report.dynamic_batch and res.report.check["passed"]
        assert any("batch" in w for w in res.report.warnings)
        assert res.model.get_parameter("c.weight").shape[0] == 4


def test_index_buffers_are_positions_not_channels():
    """Swin-style relative position bias: a table gathered by a buffer of indices.  The index
    buffer must never be sliced (found by the torchvision zoo run: swin_t)."""

    class RelBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.randn(9, 2))
            self.register_buffer("index", torch.randint(0, 9, (16,)))
            self.qkv, self.fc1, self.fc2 = nn.Linear(8, 24), nn.Linear(8, 16), nn.Linear(16, 8)

        def forward(self, x):  # x: (B, 4, 8)
            b, n, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
            bias = self.table[self.index].view(4, 4, -1).permute(2, 0, 1)
            att = (q @ k.transpose(-2, -1) + bias).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(b, n, 8)
            return self.fc2(torch.relu(self.fc1(y)))

    model = RelBias().eval()
    res = prunekit.prune(model, {"ratio": 0.5, "inputs": [{"shape": [1, 4, 8]}]})
    assert res.report.check["passed"]
    assert torch.equal(res.model.get_buffer("index"), model.index)
    assert res.model.get_parameter("fc1.weight").shape[0] == 8


def test_fixed_batch_export_archive_is_made_dynamic_when_possible(tmp_path):
    from prunekit.registry import build

    model = build("zoo:resnet_mini")
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), str(tmp_path / "static.pt2"))
    res = prunekit.prune_to_dir(tmp_path / "static.pt2", {"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]}, tmp_path / "out")
    assert res.report.dynamic_batch and any("made dynamic" in w for w in res.report.warnings)
    pruned = torch.export.load(str(res.artifacts["model.pt2"])).module()
    assert pruned(torch.randn(5, 3, 32, 32)).shape == (5, 10)


def _channel_shuffle(x, groups: int = 2):
    b, c, h, w = x.size()
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNet V2's unit: stride 2 runs two branches, stride 1 halves the input with chunk."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                         nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride == 2 else half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _channel_shuffle(out)


class MiniShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stage = nn.Sequential(ShuffleBlock(16, 32, 2), ShuffleBlock(32, 32, 1), ShuffleBlock(32, 32, 1))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("ratio", [0.4, 0.5, 0.7])  # 0.4 and 0.7 left 11 + 10 before the fix
def test_state_dict_output_keeps_eager_chunks_equal(ratio, tmp_path):
    """Eager ``x.chunk(2)`` splits whatever arrives in two equal halves, so a state-dict output
    must keep equal counts in both halves (the graph alone would accept 11 + 10)."""
    from prunekit.registry import register

    register("test:mini_shufflenet", example_inputs=[{"shape": [1, 3, 32, 32]}])(MiniShuffleNet)
    torch.manual_seed(0)
    torch.save(MiniShuffleNet().eval().state_dict(), tmp_path / "sd.pt")
    spec = {"architecture": "test:mini_shufflenet", "ratio": ratio}
    result = prunekit.prune_to_dir(tmp_path / "sd.pt", spec, tmp_path / "out")  # proves the reload
    rep = result.report
    assert rep.check["passed"] and rep.params_after < (1 - ratio / 2) * rep.params_before
    model = prunekit.load_pruned("test:mini_shufflenet", result.artifacts["state_dict.pt"], result.artifacts["manifest.json"])
    for block in model.stage[1:]:
        x1_width = block.branch2[0].in_channels  # the half that goes through the branch
        assert 2 * x1_width == model.stage[0].branch1[2].out_channels + model.stage[0].branch2[5].out_channels
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 4)


class SwiGLU(nn.Module):
    """Eager code that splits by a fixed size: the split width must survive a state-dict reload."""

    def __init__(self, hidden: int = 24):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Linear(10, 16)
        self.w12 = nn.Linear(16, 2 * hidden)
        self.w3 = nn.Linear(hidden, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = F.relu(self.inp(x))
        a, b = self.w12(h).split(self.hidden, -1)
        return self.out(F.relu(self.w3(F.silu(a) * b)))


def test_state_dict_output_keeps_fixed_size_splits(tmp_path):
    from prunekit.registry import register

    register("test:swiglu", example_inputs=[{"shape": [1, 10]}])(SwiGLU)
    torch.manual_seed(0)
    torch.save(SwiGLU().eval().state_dict(), tmp_path / "sd.pt")
    result = prunekit.prune_to_dir(tmp_path / "sd.pt", {"architecture": "test:swiglu", "ratio": 0.5}, tmp_path / "out")
    model = prunekit.load_pruned("test:swiglu", result.artifacts["state_dict.pt"], result.artifacts["manifest.json"])
    assert model.w12.out_features == 48 and model.w3.in_features == 24  # split by 24: kept
    assert model.inp.out_features < 16  # the rest prunes
    assert "w12.weight" in {k["param"] for k in result.report.kept}
    with torch.no_grad():
        assert model(torch.randn(4, 10)).shape == (4, 3)
