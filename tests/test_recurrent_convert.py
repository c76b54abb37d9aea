"""GRU/LSTM <-> explicit prunable form: exact equivalence, structural changes, clear errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from prunekit.interop.recurrent import (
    PrunableGRU,
    PrunableLSTM,
    StackedRNN,
    prune_hidden_units,
    prune_input_features,
    to_native,
    to_prunable,
)

IN, HID = 4, 6
ATOL = 1e-6


def _make(mode: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    cls = nn.GRU if mode == "GRU" else nn.LSTM
    return cls(kw.pop("input_size", IN), kw.pop("hidden_size", HID), **kw).eval()


def _h0(mode: str, k: int, n: int | None, h: int, dtype=torch.float32):
    shape = (k, h) if n is None else (k, n, h)
    if mode == "GRU":
        return torch.randn(shape, dtype=dtype)
    return torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)


def _states(mode: str, result):
    """Split a result into (output, [h parts], [c parts]) with states as per-(layer, dir) lists."""
    out, state = result

    def split(s):
        return list(s.unbind(0)) if isinstance(s, torch.Tensor) else list(s)

    if mode == "LSTM":
        return out, split(state[0]), split(state[1])
    return out, split(state), []


def _assert_same(mode: str, a, b, atol: float = ATOL) -> None:
    oa, ha, ca = _states(mode, a)
    ob, hb, cb = _states(mode, b)
    assert oa.shape == ob.shape
    torch.testing.assert_close(oa, ob, atol=atol, rtol=0)
    assert len(ha) == len(hb) and len(ca) == len(cb)
    for x, y in zip(ha + ca, hb + cb):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------------
# Exact equivalence, unpruned
# ------------------------------------------------------------------------------------------------

GRID = list(itertools.product(["GRU", "LSTM"], [False, True], [1, 2], [False, True], [False, True]))


@pytest.mark.parametrize("mode,bidirectional,num_layers,batch_first,bias", GRID)
def test_prunable_and_round_trip_match_native(mode, bidirectional, num_layers, batch_first, bias):
    native = _make(mode, num_layers=num_layers, bidirectional=bidirectional,
                   batch_first=batch_first, bias=bias)
    prunable = to_prunable(native)
    back = to_native(prunable)
    assert isinstance(prunable, PrunableGRU if mode == "GRU" else PrunableLSTM)
    assert type(back) is type(native)
    for key, value in native.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    d = 2 if bidirectional else 1
    torch.manual_seed(1)
    for n, t, with_h0 in itertools.product([1, 3], [1, 5, 17], [False, True]):
        x = torch.randn((n, t, IN) if batch_first else (t, n, IN))
        hx = _h0(mode, num_layers * d, n, HID) if with_h0 else None
        want = native(x, hx)
        assert want[0].shape == ((n, t, d * HID) if batch_first else (t, n, d * HID))
        got = prunable(x, hx)
        h_n = got[1][0] if mode == "LSTM" else got[1]
        assert isinstance(h_n, torch.Tensor) and h_n.shape == (num_layers * d, n, HID)
        _assert_same(mode, want, got)
        _assert_same(mode, want, back(x, hx))


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_float64_matches_native_tightly(mode):
    native = _make(mode, num_layers=2, bidirectional=True, batch_first=True).double()
    prunable = to_prunable(native)
    assert prunable.layers[1].bwd.hh.weight.dtype == torch.float64
    x = torch.randn(3, 17, IN, dtype=torch.float64)
    _assert_same(mode, native(x), prunable(x), atol=1e-12)
    hx = _h0(mode, 4, 3, HID, torch.float64)
    _assert_same(mode, native(x, hx), prunable(x, hx), atol=1e-12)


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_like_native(mode, batch_first):
    native = _make(mode, num_layers=2, bidirectional=True, batch_first=batch_first)
    prunable = to_prunable(native)
    x = torch.randn(5, IN)
    for hx in (None, _h0(mode, 4, None, HID)):
        want = native(x, hx)
        got = prunable(x, hx)
        assert got[0].shape == (5, 2 * HID)
        _assert_same(mode, want, got)
        _assert_same(mode, want, to_native(prunable)(x, hx))


def test_explicit_structure_and_identity_hidden_map():
    native = _make("LSTM", num_layers=2, bidirectional=True, bias=False)
    p = to_prunable(native)
    assert p.num_layers == 2 and p.hidden_sizes == [HID] * 4 and p.input_size == IN
    cell = p.layers[1].bwd
    assert (cell.ih.in_features, cell.ih.out_features) == (2 * HID, 4 * HID)
    assert (cell.hh.in_features, cell.hh.out_features) == (HID, 4 * HID)
    assert cell.ih.bias is None and cell.hh.bias is None
    assert torch.equal(cell.ih.weight, native.weight_ih_l1_reverse)
    assert torch.equal(cell.hidden_map.weight, torch.eye(HID))
    assert torch.equal(cell.hidden_map.bias, torch.zeros(HID))
    gru = to_prunable(_make("GRU"))
    assert gru.layers[0].bwd is None and gru.layers[0].fwd.ih.out_features == 3 * HID


def test_to_prunable_copies_nested_modules_and_leaves_input_alone():
    shared = nn.GRU(IN, HID)
    model = nn.Sequential(nn.Linear(3, IN), nn.ModuleList([shared, shared]),
                          nn.ModuleDict({"lstm": nn.LSTM(IN, HID)}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = to_prunable(model)
    assert isinstance(model[1][0], nn.GRU) and isinstance(model[2]["lstm"], nn.LSTM)
    assert isinstance(converted[1][0], PrunableGRU) and converted[1][0] is converted[1][1]
    assert isinstance(converted[2]["lstm"], PrunableLSTM)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    back = to_native(converted)
    assert isinstance(back[1][0], nn.GRU) and isinstance(converted[1][0], PrunableGRU)


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_dropout_only_between_layers_in_training_like_native(mode):
    native = _make(mode, num_layers=3, dropout=0.5, bidirectional=True).train()
    p = to_prunable(native)
    back = to_native(p)
    assert p.training and back.training
    x = torch.randn(6, 2, IN)
    torch.manual_seed(7)
    want = native(x)
    torch.manual_seed(7)
    got = p(x)
    torch.manual_seed(7)
    got_back = back(x)
    _assert_same(mode, want, got)
    _assert_same(mode, want, got_back)
    torch.manual_seed(8)
    assert not torch.allclose(p(x)[0], want[0], atol=1e-3)      # training: dropout is live
    p.eval()
    native.eval()
    _assert_same(mode, native(x), p(x))                         # eval: no dropout


# ------------------------------------------------------------------------------------------------
# Structural changes survive to_native
# ------------------------------------------------------------------------------------------------


def _masked_reference(p, layer: int, direction: int, removed: list[int]):
    """Unpruned explicit module in which the removed units influence nothing downstream."""
    ref = to_prunable(to_native(p))
    cell = ref.layers[layer].directions()[direction]
    offset = sum(c.state_size for c in ref.layers[layer].directions()[:direction])
    with torch.no_grad():
        cell.hh.weight[:, removed] = 0
        if layer + 1 < ref.num_layers:
            for nxt in ref.layers[layer + 1].directions():
                nxt.ih.weight[:, [offset + j for j in removed]] = 0
    return ref


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_prune_hidden_units_of_layer0_survives_to_native(mode, bidirectional):
    native = _make(mode, num_layers=2, bidirectional=bidirectional, batch_first=True)
    p = to_prunable(native)
    keep, removed = [0, 2, 3, 5], [1, 4]
    ref = _masked_reference(p, 0, 0, removed)
    kept = prune_hidden_units(p, 0, "fwd", keep)
    d = 2 if bidirectional else 1
    assert kept.tolist() == keep + list(range(HID, d * HID))
    assert p.hidden_sizes == [4] + [HID] * (2 * d - 1)
    assert p.layers[0].fwd.ih.out_features == len(keep) * (3 if mode == "GRU" else 4)
    assert p.layers[1].fwd.ih.in_features == 4 + (d - 1) * HID

    x = torch.randn(3, 9, IN)
    pruned = p(x)
    # the pruned form equals the unpruned one with the removed units cut off
    reference = ref(x)
    torch.testing.assert_close(pruned[0], reference[0], atol=ATOL, rtol=0)
    _, h_p, _ = _states(mode, pruned)
    _, h_r, _ = _states(mode, reference)
    torch.testing.assert_close(h_p[0], h_r[0][:, keep], atol=ATOL, rtol=0)

    back = to_native(p)
    assert isinstance(back, StackedRNN)
    assert back.hidden_sizes == p.hidden_sizes
    first = back.layers[0][0] if bidirectional else back.layers[0]
    assert isinstance(first, nn.GRU if mode == "GRU" else nn.LSTM) and first.hidden_size == 4
    assert all(isinstance(m, (nn.GRU, nn.LSTM)) for m in back.modules()
               if not isinstance(m, (StackedRNN, nn.ModuleList)))
    _assert_same(mode, pruned, back(x))
    # h0 passed per (layer, direction) works on both forms and agrees
    hx = [torch.randn(3, s) for s in p.hidden_sizes]
    hx = hx if mode == "GRU" else (hx, [torch.randn(3, s) for s in p.hidden_sizes])
    _assert_same(mode, p(x, hx), back(x, hx))
    # sizes differ, so a single stacked h0 is refused with a clear message
    with pytest.raises(ValueError, match="cannot be one stacked tensor"):
        back(x, _h0(mode, 2 * d, 3, HID))


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_equal_prune_of_every_layer_gives_one_native_module(mode):
    p = to_prunable(_make(mode, num_layers=2, bidirectional=True))
    for layer, direction in itertools.product(range(2), ("fwd", "bwd")):
        prune_hidden_units(p, layer, direction, [5, 0, 3])      # any consistent order works
    prune_input_features(p, [0, 1, 3])
    back = to_native(p)
    assert type(back) is (nn.GRU if mode == "GRU" else nn.LSTM)
    assert (back.input_size, back.hidden_size, back.num_layers, back.bidirectional) == (3, 3, 2, True)
    x = torch.randn(11, 2, 3)
    _assert_same(mode, p(x), back(x))
    hx = _h0(mode, 4, 2, 3)
    _assert_same(mode, p(x, hx), back(x, hx))


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_directions_pruned_differently_become_a_forward_backward_pair(mode):
    p = to_prunable(_make(mode, num_layers=2, bidirectional=True))
    prune_hidden_units(p, 0, 1, [1, 2])
    prune_hidden_units(p, 1, 0, [0, 1, 2, 4])
    assert p.hidden_sizes == [HID, 2, 4, HID]
    back = to_native(p)
    assert isinstance(back, StackedRNN) and isinstance(back.layers[0], nn.ModuleList)
    assert [m.hidden_size for m in back.layers[0]] == [HID, 2]
    for n, t in ((1, 1), (3, 8)):
        x = torch.randn(t, n, IN)
        got = back(x)
        assert got[0].shape == (t, n, 4 + HID)
        _assert_same(mode, p(x), got)
    x = torch.randn(7, IN)                                       # unbatched
    _assert_same(mode, p(x), back(x))
    assert _states(mode, back(x))[1][1].shape == (2,)


def _slice(lin: nn.Linear, rows=None, cols=None) -> nn.Linear:
    """What a structural pruning tool does to a Linear: a new, smaller layer."""
    w = lin.weight.detach()
    w = w[rows] if rows is not None else w
    w = w[:, cols] if cols is not None else w
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach()[rows] if rows is not None else lin.bias.detach())
    return new


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_manual_linear_slicing_survives_to_native(mode):
    native = _make(mode, num_layers=1, batch_first=True)
    p = to_prunable(native)
    g = 3 if mode == "GRU" else 4
    keep = torch.tensor([0, 1, 4])
    rows = torch.cat([keep + k * HID for k in range(g)])
    cell = p.layers[0].fwd
    cell.ih = _slice(cell.ih, rows=rows, cols=torch.tensor([0, 2, 3]))
    cell.hh = _slice(cell.hh, rows=rows, cols=keep)
    cell.hidden_map = _slice(cell.hidden_map, rows=keep, cols=keep)

    back = to_native(p)
    assert type(back) is type(native)
    assert (back.input_size, back.hidden_size) == (3, 3)
    assert back.weight_hh_l0.shape == (g * 3, 3)
    x = torch.randn(2, 13, 3)
    _assert_same(mode, p(x), back(x))
    hx = _h0(mode, 1, 2, 3)
    _assert_same(mode, p(x, hx), back(x, hx))


def test_missing_bias_on_one_side_is_written_as_zero():
    p = to_prunable(_make("GRU", num_layers=2))
    p.layers[1].fwd.hh.bias = None
    back = to_native(p)
    assert back.bias and torch.equal(back.bias_hh_l1, torch.zeros(3 * HID))
    x = torch.randn(5, 2, IN)
    _assert_same("GRU", p(x), back(x))


class Seed000Net(nn.Module):
    """Linear 16->32, ReLU, GRU(32, 48, batch_first), Linear 48->10 on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.fc_in = nn.Linear(16, 32)
        self.gru = nn.GRU(32, 48, batch_first=True)
        self.fc_out = nn.Linear(48, 10)

    def forward(self, x):
        out, _ = self.gru(torch.relu(self.fc_in(x)))
        return self.fc_out(out[:, -1])


def test_seed000_network_gets_smaller_and_still_runs():
    torch.manual_seed(0)
    model = Seed000Net().eval()
    explicit = to_prunable(model)
    assert isinstance(explicit.gru, PrunableGRU) and isinstance(model.gru, nn.GRU)
    x = torch.randn(4, 12, 16)
    torch.testing.assert_close(explicit(x), model(x), atol=ATOL, rtol=0)

    keep_in = list(range(0, 32, 2)) + [1, 3, 5, 7]                        # 20 of 32 features
    keep_hidden = [j for j in range(48) if j % 3]                         # 32 of 48 units
    # masked reference: removed features / units feed nothing
    masked = to_prunable(model)
    with torch.no_grad():
        cell = masked.gru.layers[0].fwd
        cell.ih.weight[:, [j for j in range(32) if j not in keep_in]] = 0
        gone = [j for j in range(48) if j not in keep_hidden]
        cell.hh.weight[:, gone] = 0
        masked.fc_out.weight[:, gone] = 0
    want = masked(x)

    explicit.fc_in = _slice(explicit.fc_in, rows=torch.tensor(keep_in))
    prune_input_features(explicit.gru, keep_in)
    kept = prune_hidden_units(explicit.gru, 0, 0, keep_hidden)
    explicit.fc_out = _slice(explicit.fc_out, cols=kept)
    torch.testing.assert_close(explicit(x), want, atol=ATOL, rtol=0)

    small = to_native(explicit)
    assert isinstance(small.gru, nn.GRU)
    assert (small.gru.input_size, small.gru.hidden_size) == (20, 32)
    assert small.gru.batch_first
    n_params = lambda m: sum(t.numel() for t in m.parameters())  # noqa: E731
    assert n_params(small) < n_params(model)
    with torch.inference_mode():
        y = small(torch.randn(2, 30, 16))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    torch.testing.assert_close(small(x), want, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------
# Clear errors
# ------------------------------------------------------------------------------------------------


def test_lstm_with_proj_size_is_refused():
    model = nn.Sequential(nn.LSTM(IN, HID, proj_size=3))
    with pytest.raises(ValueError, match="proj_size=3"):
        to_prunable(model)


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_inconsistent_gate_shapes_are_refused(mode):
    p = to_prunable(_make(mode))
    cell = p.layers[0].fwd
    cell.ih = _slice(cell.ih, rows=torch.arange(cell.ih.out_features - 1))   # one gate row gone
    cell.hh = _slice(cell.hh, rows=torch.arange(cell.hh.out_features - 1))
    with pytest.raises(ValueError, match="not a multiple of"):
        to_native(p)
    with pytest.raises(ValueError, match="not a multiple of"):
        p(torch.randn(3, 1, IN))


def test_ih_hh_disagreement_is_refused():
    p = to_prunable(_make("GRU"))
    g_rows = torch.cat([torch.arange(5) + k * HID for k in range(3)])
    p.layers[0].fwd.ih = _slice(p.layers[0].fwd.ih, rows=g_rows)
    with pytest.raises(ValueError, match="ih has 15 gate rows but hh has 18"):
        to_native(p)


def test_hidden_map_pruned_differently_on_rows_and_columns_is_refused():
    p = to_prunable(_make("GRU"))
    cell = p.layers[0].fwd
    cell.hidden_map = _slice(cell.hidden_map, rows=torch.tensor([0, 1, 2, 3, 5]),
                             cols=torch.tensor([0, 1, 2, 3, 4]))
    cell.ih = _slice(cell.ih, rows=torch.cat([torch.arange(5) + k * HID for k in range(3)]))
    cell.hh = _slice(cell.hh, rows=torch.cat([torch.arange(5) + k * HID for k in range(3)]),
                     cols=torch.tensor([0, 1, 2, 3, 5]))
    with pytest.raises(ValueError, match="not the identity on the kept hidden units"):
        to_native(p)


def test_non_square_hidden_map_is_refused():
    p = to_prunable(_make("LSTM"))
    cell = p.layers[0].fwd
    cell.hidden_map = _slice(cell.hidden_map, rows=torch.tensor([0, 1, 2]))
    cell.hh = _slice(cell.hh, cols=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="maps the 6 hidden units the gates produce to 3"):
        to_native(p)


def test_trained_hidden_map_is_refused_but_tolerance_is_adjustable():
    p = to_prunable(_make("GRU"))
    with torch.no_grad():
        p.layers[0].fwd.hidden_map.weight[2, 2] += 1e-3
    with pytest.raises(ValueError, match="max \\|W - I\\| = 0.001"):
        to_native(p)
    assert isinstance(to_native(p, atol=1e-2), nn.GRU)


def test_next_layer_input_must_match_previous_output():
    p = to_prunable(_make("GRU", num_layers=2))
    cell = p.layers[0].fwd
    keep = torch.tensor([0, 1, 2])
    rows = torch.cat([keep + k * HID for k in range(3)])
    cell.ih, cell.hh = _slice(cell.ih, rows=rows), _slice(cell.hh, rows=rows, cols=keep)
    cell.hidden_map = _slice(cell.hidden_map, rows=keep, cols=keep)       # layer 1 left at 6 inputs
    with pytest.raises(ValueError, match="takes 6 input features but the previous layer emits 3"):
        to_native(p)


def test_bad_inputs_give_clear_errors():
    p = to_prunable(_make("LSTM"))
    x = torch.randn(4, 2, IN)
    packed = pack_padded_sequence(x, torch.tensor([4, 3]))
    with pytest.raises(TypeError, match="PackedSequence"):
        p(packed)
    with pytest.raises(TypeError, match="hx=\\(h0, c0\\)"):
        p(x, torch.zeros(1, 2, HID))
    with pytest.raises(ValueError, match="expected shape \\(1, 2, 6\\)"):
        p(x, (torch.zeros(1, 3, HID), torch.zeros(1, 3, HID)))
    with pytest.raises(ValueError, match="out of range"):
        prune_hidden_units(p, 0, "fwd", [0, HID])
    with pytest.raises(ValueError, match="direction 'bwd' does not exist"):
        prune_hidden_units(p, 0, "bwd", [0])
