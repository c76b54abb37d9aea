"""Architectures by name from installed libraries: torchvision:NAME, timm:NAME (and what happens
without them), built without random weights, pruned as state-dicts, rebuilt by the same name."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import prunekit
from prunekit.errors import ArchitectureUnavailable, StateDictMismatch, UnknownArchitecture
from prunekit.io import empty
from prunekit.io.loading import build_from_state_dict, load_model
from prunekit.registry import build, get_architecture

SMALL = [{"shape": [1, 3, 64, 64], "dtype": "float32"}]


def _prunekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunekit.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("name, ratio", [("torchvision:resnet50", 0.3), ("timm:convnext_atto", 0.5)])
def test_state_dict_by_name_prunes_through_the_cli_and_rebuilds_by_the_same_name(tmp_path, name, ratio):
    torch.manual_seed(0)
    original = build(name)
    weights = tmp_path / "weights.pt"
    torch.save(original.state_dict(), weights)
    out = _prunekit("prune", str(weights), "--arch", name, "--ratio", str(ratio), "--input-shape", "1,3,64,64",
                    "-q", "-o", str(tmp_path / "small.pt"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "small.report.json").read_text())
    assert report["architecture"] == name and report["output_format"] == "state_dict"
    assert report["check"]["passed"] and report["params_after"] < 0.9 * report["params_before"]
    manifest = json.loads((tmp_path / "small.manifest.json").read_text())
    assert manifest["architecture"] == name
    rebuilt = prunekit.load_pruned(name, tmp_path / "small.pt", tmp_path / "small.manifest.json")
    assert sum(p.numel() for p in rebuilt.parameters()) == report["params_after"]
    # the rebuilt model is the checked one: the same outputs as the engine's own result
    result = prunekit.prune(weights, {"architecture": name, "ratio": ratio, "inputs": SMALL})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), result.model(x), atol=1e-4, rtol=1e-4)


def test_loading_assigns_the_uploaded_tensors_without_a_random_copy(tmp_path):
    torch.manual_seed(0)
    model = build("torchvision:resnet18")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    module, built_empty = empty.build(get_architecture("torchvision:resnet18").factory)
    assert built_empty and all(p.device.type == "meta" for p in module.parameters())
    loaded = build_from_state_dict("torchvision:resnet18", state)
    # the file's tensors became the parameters (no copy), and nothing is left without storage
    assert loaded.conv1.weight.data_ptr() == state["conv1.weight"].data_ptr()
    assert not empty.has_meta(loaded)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_meta_parameters_are_only_for_the_building_thread():
    import threading

    seen = {}
    with empty.parameters_on_meta():
        inside = torch.nn.Linear(3, 4)

        def other():
            seen["device"] = torch.nn.Linear(3, 4).weight.device.type

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert inside.weight.device.type == "meta" and seen["device"] == "cpu"
    assert torch.nn.Linear(3, 4).weight.device.type == "cpu"


def test_a_state_dict_of_another_model_is_refused_naming_the_tensors(tmp_path):
    sd = build("torchvision:resnet18").state_dict()
    path = tmp_path / "r18.pt"
    torch.save(sd, path)
    with pytest.raises(StateDictMismatch, match="torchvision:resnet50.*(missing|shape)"):
        load_model(path, architecture="torchvision:resnet50")


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownArchitecture, match="torchvision:resnet50"):
        get_architecture("torchvision:resnet5")
    with pytest.raises(UnknownArchitecture, match="timm:convnext_atto"):
        get_architecture("timm:convnext_ato")
    with pytest.raises(UnknownArchitecture) as err:
        get_architecture("zoo:nothing")
    assert "torchvision:NAME" in str(err.value)  # the message says which provider forms exist


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what an uninstalled package looks like to find_spec
    with pytest.raises(ArchitectureUnavailable, match="'timm' package, which is not installed.*pip install"):
        get_architecture("timm:convnext_atto")


def test_the_engine_never_imports_the_providers_packages():
    code = textwrap.dedent("""
        import sys, torch, prunekit
        from prunekit.registry import build, list_architectures
        list_architectures(); build("zoo:resnet_mini")
        prunekit.prune(build("zoo:mlp"), {"ratio": 0.5, "inputs": [{"shape": [1, 700]}]})
        print(sorted(m for m in ("torchvision", "timm", "transformers") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_torchvision_imports_without_its_compiled_ops_and_says_what_that_costs():
    """torchvision's model code is pure Python; where its compiled ops do not load (a CPU torch
    with the CUDA torchvision wheel), the provider imports it anyway and refuses, by name, the
    models that need the ops.  Where they load, those models build."""
    code = textwrap.dedent("""
        import json
        from prunekit.providers import torchvision_models as tv
        from prunekit.errors import ArchitectureUnavailable
        tv.import_torchvision()
        try:
            tv.architecture("fasterrcnn_mobilenet_v3_large_320_fpn", None)
            refused = None
        except ArchitectureUnavailable as exc:
            refused = str(exc)
        print(json.dumps({"ops": tv._compiled_ops, "note": tv.note(), "refused": refused,
                          "resnet": "resnet50" in tv.names(), "quantized": any(n.startswith("quantized_") for n in tv.names())}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["resnet"] and not info["quantized"]
    if info["ops"]:
        assert info["refused"] is None and info["note"] == ""
    else:
        assert "compiled ops" in info["refused"] and "detection" in info["note"]


def test_architectures_command_lists_the_providers():
    out = _prunekit("architectures")
    assert out.returncode == 0, out.stderr
    assert "zoo:resnet_mini" in out.stdout
    for form in ("torchvision:NAME", "timm:NAME", "hf:"):
        assert form in out.stdout
    listed = _prunekit("architectures", "torchvision")
    assert listed.returncode == 0 and "torchvision:resnet50" in listed.stdout.splitlines()
    bad = _prunekit("architectures", "nope")
    assert bad.returncode == 2 and "providers: torchvision, timm, hf" in bad.stderr


def test_provider_defaults_come_from_the_library():
    assert get_architecture("torchvision:inception_v3").example_inputs[0]["shape"] == [1, 3, 299, 299]
    assert get_architecture("torchvision:r3d_18").example_inputs[0]["shape"] == [1, 3, 16, 112, 112]
    assert get_architecture("timm:convnext_atto").example_inputs[0]["shape"] == [1, 3, 224, 224]


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:convnext_atto"])
def test_a_model_fine_tuned_to_other_classes_is_built_for_them(tmp_path, name):
    """A state-dict whose classifier has 10 outputs (a fine-tuned model) loads into the same
    architecture built for 10 classes; the manifest says so and load_pruned rebuilds it."""
    from prunekit.providers import PROVIDERS

    prefix, _, model_name = name.partition(":")
    torch.manual_seed(0)
    arch = get_architecture(name, {"num_classes": 10})
    weights = tmp_path / "ten.pt"
    torch.save(arch.factory().state_dict(), weights)
    res = prunekit.prune_to_dir(weights, {"architecture": name, "ratio": 0.3, "inputs": SMALL}, tmp_path / "out")
    assert res.report.check["passed"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"] == {"num_classes": 10}
    rebuilt = prunekit.load_pruned(name, tmp_path / "out" / "state_dict.pt", manifest)
    with torch.no_grad():
        assert rebuilt(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    with pytest.raises(UnknownArchitecture, match="num_classes"):
        get_architecture(name, {"num_classes": 10, "pretrained": True})
    assert PROVIDERS[prefix].prefix == prefix and model_name


def test_other_shape_differences_are_not_explained_away(tmp_path):
    sd = build("torchvision:resnet18").state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)  # a width, not the class count
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    path = tmp_path / "odd.pt"
    torch.save(sd, path)
    with pytest.raises(StateDictMismatch, match="layer1.0.conv1.weight"):
        load_model(path, architecture="torchvision:resnet18")
