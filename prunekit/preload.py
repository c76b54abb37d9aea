"""Import, ahead of the first job, the parts of torch a prune loads lazily.

A job's first capture imports torch.export's tracing stack, the TorchScript converter (which
pulls in torch.ao's quantization passes), inductor's decomposition tables and sympy's
combinatorics: about 1 s of imports (0.5-0.9 s of a ResNet-18 job on this 2-core machine),
paid once per process.  A worker is a long-lived process, so it pays that at start instead of
inside the first user's job: the Celery pool children call :func:`preload` when they start and
the embedded runner's forkserver imports :data:`MODULES` before it forks job processes.

Only imports: nothing is traced or run here (the forkserver must not start torch's thread pools
before it forks).  A module missing from this torch version is skipped: the job would import
what it needs anyway.
"""

from __future__ import annotations

import importlib
import time

# What a state-dict, TorchScript and .pt2 job imports after ``import prunekit`` (measured with
# sys.modules before/after a job; each entry pulls its own dependencies).
MODULES = (
    "torch.export",
    "torch._export.converter",               # TS2EPConverter (+ torch.ao.quantization.fx)
    "torch._export.non_strict_utils",
    "torch._export.passes.lift_constants_pass",
    "torch._export.passes.replace_set_grad_with_hop_pass",
    "torch._export.passes.replace_autocast_with_hop_pass",
    "torch._export.passes._node_metadata_hook",
    "torch._functorch.aot_autograd",
    "torch._inductor.decomposition",         # export's decomposition table
    "torch._inductor.sizevars",
    "torch._inductor.fx_passes.dedupe_symint_uses",
    "torch._inductor.compiler_bisector",
    "torch._subclasses.schema_check_mode",
    "torch.fx.experimental.proxy_tensor",
    "torch.fx.experimental.validator",
    "torch.fx.passes.utils.fuser_utils",
    "torch.utils.flop_counter",
    "torch.utils.serialization",
    "sympy.combinatorics",
    "sympy.combinatorics.tensor_can",
    "sympy.tensor.tensor",
    "prunekit.api",
    "prunekit.analysis.rules",
    "prunekit.zoo",
    "prunekit.prune.gradprobe",
)


def preload(modules: "tuple[str, ...] | list[str]" = MODULES) -> float:
    """Import ``modules``; return the seconds it took.  Missing modules are skipped."""
    t0 = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    return time.perf_counter() - t0
