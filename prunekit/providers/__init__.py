"""Standard architectures by name, from the model libraries installed beside PruneKit.

A state-dict of ``resnet50`` should not need a plugin.  Each *provider* turns a prefixed name
into an :class:`~prunekit.registry.Architecture` using one library's own constructors:

=================== =========================== =============================================
prefix              package                     names
=================== =========================== =============================================
``torchvision:``    torchvision (``--no-deps``) ``torchvision.models.list_models()``, e.g.
                                                ``torchvision:resnet50`` (``torchvision_models``)
``timm:``           timm                        ``timm.list_models()``, e.g.
                                                ``timm:convnext_atto`` (``timm_models``)
``hf:``             transformers                ``hf:`` or ``hf:LlamaForCausalLM``: the class and
                                                its sizes come from the ``config.json`` uploaded
                                                with the weights, validated as data
                                                (``transformers_models``)
=================== =========================== =============================================

torchvision and timm names also take ``{"num_classes": N}`` (a model fine-tuned to N classes;
the loader infers it from a state-dict whose classifier alone differs).

The engine never depends on these packages: a provider's module is imported only when one of its
names is asked for, and a server without the package answers with
:class:`~prunekit.errors.ArchitectureUnavailable` naming what to install.  Every architecture is
built with random weights (``weights=None``, ``pretrained=False``: nothing is downloaded) and
nothing from an upload is executed: names pick a constructor the library ships, configuration
values are data checked against the library's own configuration class.

Each provider module offers ``names() -> list[str]``, ``architecture(name, config) ->
Architecture`` (``name`` without the prefix) and ``note() -> str`` (what ``prunekit
architectures`` says about it, e.g. what does not work on this install).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import ArchitectureUnavailable, UnknownArchitecture

if TYPE_CHECKING:
    from ..registry import Architecture


@dataclass(frozen=True)
class Provider:
    prefix: str
    package: str        # the import name the provider needs
    module: str         # the adapter, relative to this package
    install: str        # what a server installs to offer it
    form: str           # how its names look
    description: str


PROVIDERS: dict[str, Provider] = {p.prefix: p for p in (
    Provider("torchvision", "torchvision", ".torchvision_models", "pip install --no-deps torchvision",
             "torchvision:NAME", "torchvision.models (classification, segmentation, video)"),
    Provider("timm", "timm", ".timm_models", "pip install --no-deps torchvision && pip install timm",
             "timm:NAME", "PyTorch Image Models"),
    Provider("hf", "transformers", ".transformers_models", "pip install 'prunekit[hf]'",
             "hf:", "Hugging Face transformers, from the config.json uploaded with the weights"),
)}


def provider_of(name: str) -> Provider | None:
    """The provider a prefixed name belongs to (``None``: not a provider name)."""
    prefix, sep, _ = name.partition(":")
    return PROVIDERS.get(prefix) if sep else None


def installed(provider: Provider) -> bool:
    """Whether the provider's package can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(provider.package) is not None
    except (ImportError, ValueError):
        return False


def adapter(provider: Provider) -> ModuleType:
    """The provider's module, or :class:`ArchitectureUnavailable` saying what to install."""
    if not installed(provider):
        raise ArchitectureUnavailable(
            f"{provider.form} architectures need the {provider.package!r} package, which is not installed on "
            f"this server ({provider.install})"
        )
    return importlib.import_module(provider.module, __name__)


def architecture(provider: Provider, name: str, config: dict | None) -> "Architecture":
    return adapter(provider).architecture(name.partition(":")[2], config)


CLASS_COUNT_PROVIDERS = ("torchvision", "timm")
MAX_CLASSES = 1_000_000


def class_count_config(provider: Provider, name: str, config: dict | None) -> int | None:
    """The one configuration torchvision and timm names take: ``{"num_classes": N}`` (a model
    fine-tuned to N classes); ``None`` for the library's default."""
    if config is None:
        return None
    n = config.get("num_classes") if isinstance(config, dict) else None
    if set(config) != {"num_classes"} or isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CLASSES:
        raise UnknownArchitecture(f"{provider.prefix}:{name} takes no configuration but num_classes (an integer "
                                  f"from 1 to {MAX_CLASSES:,}), not {config!r}")
    return n


def fitted_config(name: str, expected: dict[str, tuple], found: dict[str, tuple]) -> dict | None:
    """For a ``torchvision:``/``timm:`` state-dict that differs from the architecture only in the
    size of the classifier's output (a model fine-tuned to other classes): ``{"num_classes": N}``.
    Same tensor names, every difference in dim 0 alone, one size everywhere; else ``None``."""
    provider = provider_of(name)
    if provider is None or provider.prefix not in CLASS_COUNT_PROVIDERS or set(expected) != set(found):
        return None
    sizes = set()
    for k, e in expected.items():
        f = found[k]
        if e == f:
            continue
        if len(e) != len(f) or e[1:] != f[1:]:
            return None
        sizes.add((e[0], f[0]))
    if len(sizes) != 1:
        return None
    (_, n), = sizes
    return {"num_classes": int(n)} if 1 <= n <= MAX_CLASSES else None


def names(prefix: str) -> list[str]:
    """Every name the provider offers, with its prefix."""
    provider = PROVIDERS[prefix]
    return [f"{prefix}:{n}" for n in adapter(provider).names()]


def status() -> list[dict]:
    """One entry per provider: prefix, form, package, installed, description, note."""
    out = []
    for p in PROVIDERS.values():
        entry = {"prefix": p.prefix, "form": p.form, "package": p.package, "installed": installed(p),
                 "description": p.description, "install": p.install, "note": ""}
        if entry["installed"]:
            try:
                entry["note"] = adapter(p).note()
            except Exception as exc:  # a broken install is reported, not raised
                entry["installed"], entry["note"] = False, f"installed but unusable: {type(exc).__name__}: {exc}"
        out.append(entry)
    return out


def summary() -> str:
    """One line for error messages: which provider forms this server offers."""
    parts = []
    for p in PROVIDERS.values():
        parts.append(p.form if installed(p) else f"{p.form} (not installed: {p.install})")
    return ", ".join(parts)
