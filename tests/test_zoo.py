"""The reference zoo: every ``zoo:*`` architecture builds, runs and can be captured every way."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.export import Dim

from prunekit.registry import build, get_architecture, list_architectures

ZOO = [n for n in list_architectures() if n.startswith("zoo:")]

EXPECTED = {
    "zoo:resnet_mini", "zoo:mobilenetv2_mini", "zoo:densenet_mini", "zoo:se_net",
    "zoo:resnext_mini", "zoo:vit_mini", "zoo:mha_transformer", "zoo:unet_mini",
    "zoo:conv1d_net", "zoo:mlp", "zoo:custom_scale_layer", "zoo:conv3d_net",
    "zoo:gru_classifier",
}

TOL = dict(atol=1e-5, rtol=1e-5)


def _input(name: str, batch: int) -> torch.Tensor:
    spec = get_architecture(name).example_inputs[0]
    g = torch.Generator().manual_seed(batch)
    return torch.randn(batch, *spec["shape"][1:], generator=g, dtype=getattr(torch, spec["dtype"]))


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build(name) for name in ZOO}


def test_zoo_is_registered():
    assert EXPECTED <= set(ZOO)
    for name in ZOO:
        arch = get_architecture(name)
        assert arch.example_inputs, name
        assert arch.description, f"{name}: factory needs a one-line docstring"


@pytest.mark.parametrize("name", ZOO)
def test_builds_and_runs(name, models):
    m = models[name]
    assert not m.training
    n_params = sum(p.numel() for p in m.parameters())
    assert 0 < n_params <= 2_000_000, n_params
    spec = get_architecture(name).example_inputs[0]
    with torch.no_grad():
        y = m(_input(name, spec["shape"][0]))
        y2 = m(_input(name, 2))
    assert torch.isfinite(y).all() and torch.isfinite(y2).all()
    assert y.shape[0] == spec["shape"][0] and y2.shape[0] == 2


@pytest.mark.parametrize("name", ZOO)
def test_export_dynamic_batch(name, models):
    m = models[name]
    with warnings.catch_warnings():
        # nn.GRU re-assigns its private _flat_weights list while being exported; harmless here
        warnings.filterwarnings("ignore", message=r".*_flat_weights.*assigned during export")
        ep = torch.export.export(
            m, (_input(name, 2),), dynamic_shapes=({0: Dim("batch", min=1, max=1024)},),
            strict=False,
        )
    exported = ep.module()
    for batch in (1, 7):
        x = _input(name, batch)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), m(x), **TOL)


@pytest.mark.parametrize("name", ZOO)
def test_trace(name, models):
    m = models[name]
    x = _input(name, 2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the GRU's tracer warnings
        traced = torch.jit.trace(m, (x,))
        torch.testing.assert_close(traced(x), m(x), **TOL)


@pytest.mark.parametrize("name", ZOO)
def test_script(name, models):
    if not get_architecture(name).scriptable:
        pytest.skip(f"{name} is registered as not scriptable")
    m = models[name]
    scripted = torch.jit.script(m)
    for batch in (1, 3):
        x = _input(name, batch)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), m(x), **TOL)


def test_mlp_is_exact():
    m = build("zoo:mlp")
    assert sum(p.numel() for p in m.parameters()) == 1_233_500
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "seq.0.weight": (500, 700), "seq.0.bias": (500,),
        "seq.2.weight": (800, 500),
        "seq.4.weight": (600, 800), "seq.4.bias": (600,),
        "linear.weight": (4, 600),
    }


def test_custom_scale_layer_layout():
    m = build("zoo:custom_scale_layer")
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "fc1.weight": (256, 128), "fc1.bias": (256,),
        "customized_layer.scale": (256,), "customized_layer.bias": (256,),
        "customized_layer.fc.weight": (256, 256), "customized_layer.fc.bias": (256,),
        "fc2.weight": (10, 256), "fc2.bias": (10,),
    }


def test_torchvision_like_names():
    params = dict(build("zoo:resnet_mini").named_parameters())
    assert params["layer1.1.conv1.weight"].shape[0] >= 8
    for key in ("conv1.weight", "bn1.weight", "layer1.0.bn2.weight",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "fc.weight"):
        assert key in params, key
    vit = dict(build("zoo:vit_mini").named_parameters())
    assert vit["blocks.0.attn.qkv.weight"].shape == (192, 64)
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "head.weight"} <= set(vit)
