"""Shared test set-up: silence torch's export chatter so failures stay readable, and undo what a
test registers (architectures, importance criteria) so no test sees another's leftovers."""

import warnings

import pytest

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(autouse=True)
def restore_registries():
    """Every registry as it was before the test (module-level registrations stay: they ran first)."""
    from prunekit import registry
    from prunekit.prune import importance

    registry._load_builtin_and_entry_points()  # the built-ins are loaded lazily: load them before the snapshot
    importance._load()
    tables = (registry._REGISTRY, importance.CRITERIA)
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)
