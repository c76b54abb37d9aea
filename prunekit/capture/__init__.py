"""Capture: a loaded model becomes one ATen graph, the upload is kept to be checked against.

================== ===============================================================================
module             concern
================== ===============================================================================
``dispatch``       ``capture()``: by format, the example batch, the passes, the result
``upload``         the model as uploaded, as a callable, and the probe that runs it first
``export_program`` eager modules and ``.pt2`` programs through ``torch.export``
``torchscript``    TorchScript through TS2EPConverter
``fused``          open fused transformer kernels into prunable ops
``passes/``        one small graph pass per module (guards, size arithmetic, lifted parameters)
``symbols``        torch's size symbols in messages, named after the user's dims
``quiet``          torch.export's chatter, silenced
================== ===============================================================================

The torch internals capture patches are in ``prunekit/torch_compat.py``.
"""

from .dispatch import CAPTURE_BATCH, Captured, capture
from .symbols import humanize_symbols, symbol_names
from .upload import upload_runner

__all__ = ["CAPTURE_BATCH", "Captured", "capture", "humanize_symbols", "symbol_names", "upload_runner"]
