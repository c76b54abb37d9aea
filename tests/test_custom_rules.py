"""Rules users add: a custom op is a barrier until a rule for it is given, then it prunes and checks.

The op is a real ``torch.library`` custom op with a fake kernel (so ``torch.export`` traces it),
the kind a user's own library defines.  A rule given through ``prune(..., rules=...)``, through
``prune_to_dir`` or through the ``prunekit.rules`` entry-point group (a real ``dist-info`` on
``sys.path``, in a fresh interpreter) must be found; the masked-vs-pruned check proves it right,
and rejects a wrong one.  Malformed rules are refused with a message saying what was expected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit import registry
from prunekit.analysis import ruleset
from prunekit.errors import CheckFailed, InvalidRule, PruneKitError


@torch.library.custom_op("prunekit_test::scale_channels", mutates_args=())
def scale_channels(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``x * s`` with ``s`` one factor per channel (dim 1)."""
    return x * s.view(1, -1, *([1] * (x.dim() - 2)))


@scale_channels.register_fake
def _(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


OP = torch.ops.prunekit_test.scale_channels
OP_NAME = "prunekit_test.scale_channels.default"  # how the report names it


class ScaleNet(nn.Module):
    """conv → custom per-channel scale → conv → conv: c1's channels only prune through the op."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.s = nn.Parameter(torch.rand(16) + 0.5)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(OP(self.c1(x), self.s))
        return self.c3(F.relu(self.c2(y)))


SPEC = {"ratio": 0.5, "inputs": [{"shape": [1, 3, 8, 8]}]}

EXTRA = prunekit.RuleSet(name="test")


@EXTRA.rule(OP)
def scale_rule(ctx, node):
    """Channel c of the output is channel c of ``x`` times ``s[c]``: the three go together."""
    x, s = ctx.lab(ctx.args["x"]), ctx.lab(ctx.args["s"])
    return (x[0], ctx.unify(x[1], s[0]), *x[2:])


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


@pytest.fixture
def no_plugins(monkeypatch):
    """An empty entry-point table for the test, whatever is installed; undone afterwards."""
    monkeypatch.setattr(ruleset, "_plugins", ruleset.RuleSet(name="none"))


# ------------------------------------------------------------------------------------------
# prune(..., rules=...)
# ------------------------------------------------------------------------------------------
def test_custom_op_without_a_rule_is_a_barrier(no_plugins):
    res = prunekit.prune(ScaleNet().eval(), SPEC)
    assert {b["op"] for b in res.report.barriers} == {OP_NAME}
    assert any(OP_NAME in w for w in res.report.warnings)
    shapes = _shapes(res.model)
    assert shapes["c1.weight"][0] == 16 and shapes["s"] == (16,)  # kept through the barrier
    assert shapes["c2.weight"][0] == 4                              # the rest still prunes


@pytest.mark.parametrize("rules", [EXTRA, {OP: EXTRA[OP]}, [EXTRA], {OP.default: prunekit.Rule(scale_rule)}],
                         ids=["RuleSet", "dict-packet", "list", "dict-overload"])
def test_custom_op_prunes_with_its_rule(no_plugins, rules):
    model = ScaleNet().eval()
    res = prunekit.prune(model, SPEC, rules=rules)
    assert res.report.barriers == []
    assert res.report.check["passed"] and res.report.check["max_rel"] <= SPEC.get("tolerance", 1e-4)
    shapes = _shapes(res.model)
    assert shapes["c1.weight"][0] == 8 and shapes["s"] == (8,) and shapes["c2.weight"][1] == 8
    # the kept factors are the original ones at the kept channels
    kept = [i for i in range(16) if any(torch.equal(res.model.c1.weight[j], model.c1.weight[i]) for j in range(8))]
    assert torch.equal(res.model.s.detach(), model.s.detach()[kept])
    x = torch.randn(5, 3, 8, 8)  # the batch stays dynamic through the custom op
    assert res.model(x).shape == (5, 4, 8, 8)


def test_a_wrong_custom_rule_is_caught_by_the_check(no_plugins):
    """Forgetting to couple ``s`` lets its channels go on their own: the check refuses the prune."""
    wrong = {OP: prunekit.Rule(lambda ctx, node: ctx.lab(ctx.args["x"]))}
    with pytest.raises(CheckFailed, match="deviates from the masked original"):
        prunekit.prune(ScaleNet().eval(), SPEC, rules=wrong)


def test_extra_rules_win_over_builtin_ones(no_plugins):
    """An extra rule for an ATen op replaces the built-in one: a spy that defers to the built-in
    rule sees every relu, and a rule that stops channels there leaves nothing to prune."""
    from prunekit.analysis.rules.elementwise import elementwise

    seen: list[str] = []

    def spy(ctx, node):
        seen.append(node.name)
        return elementwise(ctx, node)

    res = prunekit.prune(ScaleNet().eval(), SPEC, rules=[EXTRA, {torch.ops.aten.relu: prunekit.Rule(spy)}])
    assert seen == ["relu", "relu_1"] and res.report.check["passed"] and _shapes(res.model)["s"] == (8,)
    stop = {torch.ops.aten.relu: prunekit.Rule(lambda ctx, node: ctx.barrier("the user says stop"))}
    with pytest.raises(prunekit.errors.InvalidSpec, match="nothing to prune"):
        prunekit.prune(ScaleNet().eval(), SPEC, rules=[EXTRA, stop])


def test_prune_to_dir_takes_rules(no_plugins, tmp_path, monkeypatch):
    arch = registry.Architecture(name="test:scale_net", factory=ScaleNet, example_inputs=SPEC["inputs"])
    registry.list_architectures()  # the built-in registrations happen first, ours is undone after
    monkeypatch.setitem(registry._REGISTRY, arch.name, arch)
    model = ScaleNet().eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    spec = {"ratio": 0.5, "architecture": arch.name}
    res = prunekit.prune_to_dir(tmp_path / "sd.pt", spec, tmp_path / "out", rules=EXTRA)
    assert res.report.barriers == [] and res.report.check["passed"]
    assert sorted(res.artifacts) == ["manifest.json", "report.json", "state_dict.pt"]
    back = prunekit.load_pruned(arch.name, tmp_path / "out" / "state_dict.pt", tmp_path / "out" / "manifest.json")
    assert _shapes(back)["s"] == (8,) and _shapes(back)["c1.weight"][0] == 8
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(back(x), res.model(x), atol=1e-6)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["barriers"] == []


# ------------------------------------------------------------------------------------------
# Malformed rules: refused where they are made, with what was expected
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rules, message", [
    ("mylib::scale_channels", "takes a prunekit.RuleSet, a dict"),
    (3, "takes a prunekit.RuleSet, a dict"),
    ({"prunekit_test::scale_channels": EXTRA[OP]}, "keyed by the op itself, not its name"),
    ({OP: scale_rule}, r"must be a prunekit.Rule, not function .*wrap the function: prunekit.Rule\(scale_rule\)"),
    ({OP: "scale_rule"}, "must be a prunekit.Rule, not str"),
    ({42: EXTRA[OP]}, "must be an op"),
    ([EXTRA, None], r"rules=\[...\] item 1 is NoneType"),
], ids=["str", "int", "op-name", "bare-function", "str-value", "int-key", "list-item"])
def test_malformed_rules_are_refused_before_any_work(rules, message):
    with pytest.raises(InvalidRule, match=message) as err:
        prunekit.prune(Path("/nonexistent/model.pt"), SPEC, rules=rules)  # refused before the file is read
    assert isinstance(err.value, TypeError) and isinstance(err.value, PruneKitError)
    assert err.value.code == "invalid_rule"


def test_rule_and_ruleset_check_what_they_hold():
    with pytest.raises(InvalidRule, match="propagate must be a function"):
        prunekit.Rule("not a function")
    with pytest.raises(InvalidRule, match="rewrite must be None or a function"):
        prunekit.Rule(scale_rule, rewrite=1)
    table = prunekit.RuleSet()
    with pytest.raises(InvalidRule, match="at least one op"):
        table.rule()
    with pytest.raises(InvalidRule, match="not its name"):
        table.rule("aten::relu")
    with pytest.raises(InvalidRule, match="a mapping"):
        prunekit.RuleSet([OP])
    table[OP] = EXTRA[OP]
    assert table.lookup(OP.default) is EXTRA[OP] and table.lookup(torch.ops.aten.relu.default) is None
    assert OP in table and len(table) == 1


# ------------------------------------------------------------------------------------------
# The entry-point group ``prunekit.rules``
# ------------------------------------------------------------------------------------------
PLUGIN = '''\
"""A plugin module: importing it gives PruneKit rules for the test's custom op."""
import prunekit
import torch

OP = torch.ops.prunekit_test.scale_channels
RULES = prunekit.RuleSet(name="good")


@RULES.rule(OP)
def scale(ctx, node):
    x, s = ctx.lab(ctx.args["x"]), ctx.lab(ctx.args["s"])
    return (x[0], ctx.unify(x[1], s[0]), *x[2:])


AS_DICT = {OP: prunekit.Rule(lambda ctx, node: ctx.lab(ctx.args["x"]))}
NOT_A_TABLE = [scale]
'''


def _eps(*pairs: tuple[str, str]) -> list[metadata.EntryPoint]:
    return [metadata.EntryPoint(name, value, ruleset.ENTRY_POINT_GROUP) for name, value in pairs]


def test_entry_points_load_and_broken_ones_are_skipped(tmp_path, monkeypatch):
    (tmp_path / "pk_test_rules_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    source = lambda: _eps(("b_dict", "pk_test_rules_plugin:AS_DICT"), ("a_good", "pk_test_rules_plugin:RULES"),
                          ("c_missing", "pk_test_no_such_module:RULES"), ("d_list", "pk_test_rules_plugin:NOT_A_TABLE"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        table = ruleset.load_entry_points(source)
    import pk_test_rules_plugin as plugin

    assert list(table) == [OP] and table[OP] is plugin.RULES[OP]  # the first by name wins a conflict
    text = "\n".join(str(w.message) for w in seen)
    assert "'b_dict' and 'a_good' both give a rule for prunekit_test.scale_channels; 'a_good'" in text
    assert "'c_missing' (pk_test_no_such_module:RULES) is skipped: No module named" in text
    assert "'d_list' (pk_test_rules_plugin:NOT_A_TABLE) is skipped: a rule table is a mapping" in text

    # found by prune without rules=, and a call's rules= still wins over the plugin's
    monkeypatch.setattr(ruleset, "_plugins", table)
    res = prunekit.prune(ScaleNet().eval(), SPEC)
    assert res.report.barriers == [] and _shapes(res.model)["s"] == (8,)
    stop = {OP: prunekit.Rule(lambda ctx, node: ctx.barrier("not today"))}
    res = prunekit.prune(ScaleNet().eval(), SPEC, rules=stop)
    assert [b["reason"] for b in res.report.barriers] == ["not today"] and _shapes(res.model)["s"] == (16,)


SUBPROCESS = '''\
import json, sys
import prunekit
from prunekit.analysis import ruleset

lazy = ruleset._plugins is None and "pk_scale_ext" not in sys.modules  # nothing read at import
first = ruleset.plugin_rules()                # reads the group, importing the plugin (and its op)
once = ruleset.plugin_rules() is first
from pk_scale_ext import ScaleNet
res = prunekit.prune(ScaleNet().eval(), {"ratio": 0.5, "inputs": [{"shape": [1, 3, 8, 8]}]})
print(json.dumps({"lazy": lazy, "once": once, "ops": [str(op) for op in first],
                  "barriers": res.report.barriers, "check": res.report.check["passed"],
                  "s": list(res.model.get_parameter("s").shape)}))
'''

EXT = '''\
"""An installed extension: a custom op, and the PruneKit rule for it."""
import prunekit
import torch
import torch.nn as nn


@torch.library.custom_op("pk_scale_ext::scale_channels", mutates_args=())
def scale_channels(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return x * s.view(1, -1, *([1] * (x.dim() - 2)))


@scale_channels.register_fake
def _(x, s):
    return torch.empty_like(x)


RULES = prunekit.RuleSet(name="pk_scale_ext")


@RULES.rule(torch.ops.pk_scale_ext.scale_channels)
def scale(ctx, node):
    x, s = ctx.lab(ctx.args["x"]), ctx.lab(ctx.args["s"])
    return (x[0], ctx.unify(x[1], s[0]), *x[2:])


class ScaleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.s = nn.Parameter(torch.rand(16) + 0.5)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.relu(torch.ops.pk_scale_ext.scale_channels(self.c1(x), self.s))
        return self.c3(torch.relu(self.c2(y)))
'''


def test_an_installed_entry_point_is_found(tmp_path):
    """A real distribution on ``sys.path`` declares its rules; a fresh interpreter finds them."""
    site = tmp_path / "site"
    (site / "pk_scale_ext-0.1.dist-info").mkdir(parents=True)
    (site / "pk_scale_ext.py").write_text(EXT)
    (site / "pk_scale_ext-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pk-scale-ext\nVersion: 0.1\n")
    (site / "pk_scale_ext-0.1.dist-info" / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [prunekit.rules]
            scale_channels = pk_scale_ext:RULES
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(prunekit.__file__).parents[1])])}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", SUBPROCESS], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"lazy": True, "once": True, "ops": ["pk_scale_ext.scale_channels"], "barriers": [],
                   "check": True, "s": [8]}
