"""PruneKit: structured pruning for PyTorch models."""
from .errors import PruneKitError
from .spec import Spec, parse_spec
from .api import PruneResult, prune, prune_to_dir
from .analysis.ruleset import Rule, RuleSet
from .prune.importance import Importance, register as register_importance

__all__ = ["PruneKitError", "Spec", "parse_spec", "PruneResult", "prune", "prune_to_dir", "Rule", "RuleSet",
           "Importance", "register_importance"]
__version__ = "0.1.0"
from .io.rebuild import load_pruned  # noqa: E402

__all__ += ["load_pruned", "Client", "ServiceError"]


def __getattr__(name: str):
    """The HTTP client is imported on first use, so ``import prunekit`` stays light."""
    if name in ("Client", "ServiceError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
