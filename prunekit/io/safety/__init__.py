"""Treat every uploaded byte as hostile: what is checked before torch reads a model file.

torch's loaders were written for files their users made themselves; an upload is a file a
stranger made.  Each module here covers one way a file could make the server do more than
compute on tensors, and each check runs before the loader it protects:

============== ==================================================================================
module         what it keeps out
============== ==================================================================================
zip_limits     archives that inflate past the memory limits (member count, total, ratio)
archives       checkpoint archives (zip, tar): names that leave the folder, links, devices, bombs
pt2_layout     ``.pt2`` members that are code (AOTInductor shared libraries torch would load)
pt2_payloads   ``.pt2`` weights/constants declared larger than their stored bytes (huge zero tensors)
sym_grammar    the grammars of symbolic sizes and shape guards (torch ``eval``s / ``exec``s them)
op_policy      operators outside the tensor world (file, network, host-code ops)
pt2_audit      every parsed string of a ``torch.export`` archive's JSON
ts_audit       TorchScript sources that call denied ops (``torch.jit.load`` compiles and may run
               them: ``__setstate__`` runs at load) and, after loading, every compiled graph
============== ==================================================================================

``docs/service.md`` ("Threat model") says what is trusted, what is parsed and what is never run.
"""

from .pt2_audit import audit_export_archive
from .ts_audit import audit_torchscript_archive, audit_torchscript_module
from .zip_limits import check_zip

__all__ = ["audit_export_archive", "audit_torchscript_archive", "audit_torchscript_module", "check_zip"]
