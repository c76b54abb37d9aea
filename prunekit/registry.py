"""Architecture registry: name → factory building an ``nn.Module``.

State-dict uploads carry weights but no code, so the service must build the module itself from a
*name*.  The project's reference zoo registers itself under ``zoo:*``; other packages add theirs
through the entry-point group ``prunekit.architectures`` (``name = "pkg.module:factory"``), so a
deployment can support its own models without touching PruneKit.  Uploaded files never supply
code: only installed factories are ever called.

Names with a provider prefix (``torchvision:resnet50``, ``timm:convnext_atto``, ``hf:`` with
the ``config.json`` uploaded beside the weights) are resolved by the provider of that package
(``providers/``), imported only when such a name is asked for: the engine never depends on
torchvision, timm or transformers, and a server without one says which package is missing.

A renamed architecture keeps its old name as an *alias* for one release: ``get_architecture`` and
``build`` resolve it (with a ``DeprecationWarning``) to the very same entry, while
``list_architectures`` lists each architecture once, under its current name; ``list_aliases``
says which old names still resolve.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable

import torch.nn as nn

from .errors import InvalidSpec, UnknownArchitecture

ENTRY_POINT_GROUP = "prunekit.architectures"


@dataclass(frozen=True)
class Architecture:
    """A registered architecture.

    ``example_inputs`` are spec-style dicts (``{"shape": [...], "dtype": "float32"}``) used when a
    spec gives no inputs of its own.  ``config`` is the validated configuration a provider built
    the architecture from (a Hugging Face ``config.json``), kept so that a pruned state-dict can
    be rebuilt the same way; ``None`` for architectures that need none.
    """

    name: str
    factory: Callable[[], nn.Module]
    example_inputs: list[dict] = field(default_factory=list)
    description: str = ""
    scriptable: bool = True
    config: dict | None = None


_REGISTRY: dict[str, Architecture] = {}
_ALIASES: dict[str, str] = {}  # old name -> current name
_entry_points_loaded = False


def register(
    name: str,
    *,
    example_inputs: list[dict] | None = None,
    description: str = "",
    scriptable: bool = True,
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator registering ``factory`` under ``name`` (later registrations replace earlier ones).

    ``aliases`` are former names that keep resolving to ``name`` (a name registered in its own
    right wins over an alias)."""

    def deco(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        _REGISTRY[name] = Architecture(
            name=name,
            factory=factory,
            example_inputs=list(example_inputs or []),
            description=description or (factory.__doc__ or "").strip().split("\n")[0],
            scriptable=scriptable,
        )
        for old in aliases:
            _ALIASES[old] = name
        return factory

    return deco


def _load_builtin_and_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from . import zoo  # noqa: F401  (registers the reference architectures)

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the registry down
            import warnings

            warnings.warn(f"architecture entry point {ep.name!r} failed to load: {exc}", stacklevel=2)
            continue
        if isinstance(obj, Architecture):
            _REGISTRY[ep.name] = obj
        elif callable(obj):
            _REGISTRY[ep.name] = Architecture(name=ep.name, factory=obj)


def list_architectures() -> list[str]:
    """Every registered architecture once, by its current name (aliases are not listed)."""
    _load_builtin_and_entry_points()
    return sorted(_REGISTRY)


def list_aliases() -> dict[str, str]:
    """Former names that still resolve: ``{old name: current name}``."""
    _load_builtin_and_entry_points()
    return {old: new for old, new in sorted(_ALIASES.items()) if old not in _REGISTRY}


def get_architecture(name: str, config: dict | None = None) -> Architecture:
    """Look ``name`` up; an unknown name lists what is registered and the closest matches.

    ``config`` is for providers that build from one (``hf:``); registered names take none."""
    _load_builtin_and_entry_points()
    if name not in _REGISTRY and name not in _ALIASES:
        from . import providers

        provider = providers.provider_of(name)
        if provider is not None:
            return providers.architecture(provider, name, config)
    if config is not None:
        raise InvalidSpec(f"architecture {name!r} is built without a configuration; only hf: architectures take one")
    if name not in _REGISTRY and name in _ALIASES:
        import warnings

        warnings.warn(
            f"architecture {name!r} is now called {_ALIASES[name]!r}; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        name = _ALIASES[name]
    try:
        return _REGISTRY[name]
    except KeyError:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        from . import providers

        raise UnknownArchitecture(
            f"unknown architecture {name!r}.{hint} Registered: {', '.join(names)}; "
            f"by provider: {providers.summary()}"
        ) from None


def build(name: str, config: dict | None = None) -> nn.Module:
    """Instantiate a registered architecture (random weights) in eval mode."""
    return get_architecture(name, config).factory().eval()
