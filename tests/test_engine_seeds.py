"""The worked examples of the seed documents, reproduced through the public API."""

from __future__ import annotations

import torch

import prunekit
from prunekit.registry import build, get_architecture

from helpers import example, save_model


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_seed001_mlp_layers_half_each(tmp_path):
    """torch.ao's example: 0.5 on all four weights gives 1,233,500 -> 396,150 parameters."""
    spec = {
        "layers": {"seq.0.weight": 0.5, "seq.2.weight": 0.5, "seq.4.weight": 0.5, "linear.weight": 0.5},
        "inputs": [{"shape": [1, 700]}],
        "architecture": "zoo:mlp",
    }
    path = save_model(build("zoo:mlp"), "state_dict", spec["inputs"], tmp_path / "mlp.pt")
    res = prunekit.prune_to_dir(path, spec, tmp_path / "out")
    assert res.report.params_before == 1_233_500
    assert res.report.params_after == 396_150
    shapes = {c.name: c.shape_after for c in res.report.layers}
    assert shapes["seq.0.weight"] == [250, 700] and shapes["seq.2.weight"] == [400, 250]
    assert shapes["seq.4.weight"] == [300, 400] and shapes["linear.weight"] == [2, 300]
    model = prunekit.load_pruned("zoo:mlp", res.artifacts["state_dict.pt"], res.artifacts["manifest.json"])
    assert _params(model) == 396_150
    assert model(torch.randn(5, 700)).shape == (5, 2)


def test_seed002_custom_layer_needs_no_custom_code():
    """Torch-Pruning needed a hand-written pruner for CustomizedLayer; the graph rules find the
    coupling themselves: fc1's outputs, the layer's scale and bias, and its fc's inputs."""
    model = build("zoo:custom_scale_layer")
    spec = {"channels": [{"param": "fc1.weight", "channels": [0, 1, 6]}], "inputs": [{"shape": [1, 128]}]}
    res = prunekit.prune(model, spec)
    m = res.model
    assert m.fc1.weight.shape == (253, 128) and m.fc1.bias.shape == (253,)
    assert m.customized_layer.scale.shape == (253,) and m.customized_layer.bias.shape == (253,)
    assert m.customized_layer.fc.weight.shape == (256, 253)  # its outputs are a separate group
    assert m.fc2.weight.shape == (10, 256)
    # the kept channels are exactly the others, in order
    kept = [i for i in range(256) if i not in (0, 1, 6)]
    assert torch.equal(m.customized_layer.scale, model.customized_layer.scale[kept])


def test_seed002_reproduces_torch_pruning_widths():
    """The seed's hand-written pruner also removed the same indices from the custom fc's outputs,
    which feed fc2; naming both gives the seed's result: width 253 up to fc2's input."""
    model = build("zoo:custom_scale_layer")
    spec = {
        "channels": [
            {"param": "fc1.weight", "channels": [0, 1, 6]},
            {"param": "customized_layer.fc.weight", "channels": [0, 1, 6]},
        ],
        "inputs": [{"shape": [1, 128]}],
    }
    m = prunekit.prune(model, spec).model
    assert m.fc1.weight.shape[0] == 253 and m.customized_layer.scale.shape[0] == 253
    assert m.fc2.weight.shape == (10, 253)
    assert m(torch.randn(1, 128)).shape == (1, 10)


def test_seed003_resnet_single_channel_matches_masked_original(tmp_path):
    """Removing channel 5 of layer1.1.conv1 equals the original with that channel's consumer
    weights zeroed (an independent mask, built here by hand)."""
    torch.manual_seed(0)
    model = build("zoo:resnet_mini")
    inputs = get_architecture("zoo:resnet_mini").example_inputs
    path = save_model(model, "traced", inputs, tmp_path / "resnet.pt")
    spec = {"channels": [{"param": "layer1.1.conv1.weight", "channels": [5]}], "inputs": inputs}
    res = prunekit.prune_to_dir(path, spec, tmp_path / "out")
    pruned = torch.jit.load(str(res.artifacts["model.pt"]))
    assert pruned.state_dict()["layer1.1.conv1.weight"].shape[0] == model.layer1[1].conv1.weight.shape[0] - 1
    masked = build("zoo:resnet_mini")
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        masked.layer1[1].conv2.weight[:, 5] = 0
        for batch in (1, 4):
            x = example(inputs, batch, seed=batch)[0]
            assert torch.allclose(pruned(x), masked(x), rtol=1e-4, atol=1e-5)
    assert res.report.channels_removed == 1 and res.report.check["max_rel"] < 1e-5
