"""Graph passes applied to a captured graph, one small pass per module, each from graph to graph.

=========================== ====================================================================
pass                        what it fixes
=========================== ====================================================================
``strip_runtime_guards``    export's input guards and size assertions, which pin the captured
                            widths and would fire once channels are removed
``fold_scalar_arithmetic``  TS2EP's tensorised size arithmetic (``scalar_tensor(size) * c``,
                            ``.item()``), back to integer arithmetic on sizes
``scalar_ops_to_python``   TorchScript's integer size ops (``aten.mul.int``), which fix the
                            batch and sequence length in the retrace, as ``operator`` calls
``promote_parameters``      TS2EP's parameters lifted as buffers, back to parameters
``map_lifted_constants``    TS2EP's anonymous lifted constants, back to their parameter names
``inline_grad_mode``        ``@torch.no_grad()`` regions kept by export (a rotary embedding's),
                            which are barriers; inference does not need them
``join_ties``               one tensor under several names (tied embeddings), read under one
=========================== ====================================================================
"""

from .fold_scalar_arithmetic import fold_scalar_arithmetic
from .inline_grad_mode import inline_grad_mode
from .join_ties import join_ties
from .map_lifted_constants import map_lifted_constants
from .promote_parameters import owner_of, promote_to_parameters
from .scalar_ops_to_python import scalar_ops_to_python
from .strip_runtime_guards import strip_runtime_guards

__all__ = ["fold_scalar_arithmetic", "inline_grad_mode", "join_ties", "map_lifted_constants", "owner_of", "promote_to_parameters", "scalar_ops_to_python",
           "strip_runtime_guards"]
