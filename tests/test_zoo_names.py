"""The zoo's names: one per model, saying what it is; the renamed ones keep their old names as
aliases for one release (same entry, a DeprecationWarning, not listed twice)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import prunekit.zoo as zoo
from prunekit import registry
from prunekit.registry import Architecture, build, get_architecture, list_aliases, list_architectures

RENAMED = {
    "zoo:mlp_seed001": "zoo:mlp",
    "zoo:custom_layer_seed002": "zoo:custom_scale_layer",
    "zoo:gru_seed000": "zoo:gru_classifier",
}
OLD_FACTORIES = {"mlp_seed001": "mlp", "custom_layer_seed002": "custom_scale_layer", "gru_seed000": "gru_classifier"}


def test_aliases_are_the_renamed_models():
    assert {k: v for k, v in list_aliases().items() if k.startswith("zoo:")} == RENAMED


@pytest.mark.parametrize("old, new", sorted(RENAMED.items()))
def test_old_name_resolves_to_the_same_architecture(old, new):
    with pytest.warns(DeprecationWarning, match=new):
        arch = get_architecture(old)
    assert arch is get_architecture(new)
    assert arch.name == new
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning):
        m_old = build(old)
    torch.manual_seed(0)
    m_new = build(new)
    assert type(m_old) is type(m_new) and not m_old.training
    sd_old, sd_new = m_old.state_dict(), m_new.state_dict()
    assert list(sd_old) == list(sd_new)
    assert all(torch.equal(sd_old[k], sd_new[k]) for k in sd_old)


def test_current_names_raise_no_warning(recwarn):
    for new in RENAMED.values():
        get_architecture(new)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_listing_has_each_model_once():
    names = list_architectures()
    assert len(names) == len(set(names))
    assert not set(RENAMED) & set(names), "aliases are not listed"
    assert set(RENAMED.values()) <= set(names)
    zoo_factories = [get_architecture(n).factory for n in names if n.startswith("zoo:")]
    assert len(zoo_factories) == len(set(zoo_factories)), "one registered name per model"


def test_cli_lists_each_model_once():
    out = subprocess.run([sys.executable, "-m", "prunekit.cli", "architectures"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("zoo:")]
    assert sorted(listed) == sorted(n for n in list_architectures() if n.startswith("zoo:"))
    assert len(listed) == len(set(listed))
    assert not set(RENAMED) & set(listed)


def test_no_history_in_public_names():
    for name in list_architectures():
        if name.startswith("zoo:"):
            assert "seed" not in name, name


def test_a_real_registration_wins_over_an_alias(monkeypatch):
    own = Architecture(name="zoo:mlp_seed001", factory=lambda: torch.nn.Linear(1, 1))
    monkeypatch.setitem(registry._REGISTRY, "zoo:mlp_seed001", own)
    assert get_architecture("zoo:mlp_seed001") is own
    assert "zoo:mlp_seed001" not in list_aliases()


def test_old_factory_and_class_names_stay_importable():
    for old, new in OLD_FACTORIES.items():
        assert getattr(zoo, old) is getattr(zoo, new)
    assert zoo.MLPSeed001 is zoo.MLPNet
    from prunekit.zoo import MLPSeed001, custom_layer_seed002, gru_seed000, mlp_seed001, resnet_mini

    assert (mlp_seed001, custom_layer_seed002, gru_seed000) == (zoo.mlp, zoo.custom_scale_layer, zoo.gru_classifier)
    assert MLPSeed001 is zoo.MLPNet and resnet_mini is zoo.resnets.resnet_mini


def test_one_module_per_family():
    """Every zoo factory lives in a family module of ``prunekit.zoo`` and is re-exported there."""
    for name in list_architectures():
        if not name.startswith("zoo:"):
            continue
        factory = get_architecture(name).factory
        assert factory.__module__.startswith("prunekit.zoo.") and factory.__module__ != "prunekit.zoo._common"
        assert getattr(zoo, factory.__name__) is factory
        assert factory.__name__ in zoo.__all__
