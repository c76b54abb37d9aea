"""Which members a ``torch.export`` archive may hold: the ones that are data, nothing that is code.

A ``.pt2`` file is a zip that ``torch.export.load`` reads by walking its member names.  Some
names make it do far more than read JSON and tensors: any member under ``data/aotinductor/``
makes it hand the archive to AOTInductor's package loader, which extracts the shared library
stored there and loads it into the server process (``dlopen`` runs the library's constructors:
native code of the uploader's choosing).  Other folders belong to formats this service never
loads (ExecuTorch, MTIA programs).

So the archive's directory is checked against the layout ``torch.export.save`` writes, before
torch opens the file: one root folder, and under it only the archive's own markers, the
program JSON, weights, constants, sample inputs and extra files.  Anything else is refused by
name, so a new member kind in a future torch is refused until someone has read what loads it.
"""

from __future__ import annotations

import re
import zipfile

from ...errors import UnsafeModelFile

# What ``torch.export.save`` writes under the root folder (torch 2.5 .. 2.13), one pattern each.
_DATA_MEMBERS = re.compile(
    r"""(
        archive_format | archive_version | byteorder | version
      | \.data/(version|serialization_id)
      | models/[\w.\-]+\.json
      | data/weights/[\w.\-]+
      | data/constants/[\w.\-]+
      | data/sample_inputs/[\w.\-]+
      | extra/[\w.\-]+
      | serialized_(exported_program|state_dict|constants|example_inputs)\.(json|pt)
    )""",
    re.VERBOSE,
)
# Members that name code: refused with a reason a user can act on.
_CODE_FOLDERS = {
    "data/aotinductor/": "an AOTInductor compiled model (a shared library torch would load into the server)",
    "data/executorch/": "an ExecuTorch program",
    "data/mtia/": "an MTIA program",
}


def check_pt2_layout(infos: "list[zipfile.ZipInfo]") -> None:
    """Raise ``UnsafeModelFile`` unless every member is one ``torch.export.save`` writes as data
    (the layout of this torch, or the flat one of older releases)."""
    flat = all("/" not in info.filename for info in infos)  # torch <= 2.6 wrote no root folder
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if not flat and len(roots) != 1:
        raise UnsafeModelFile(
            f"the export archive has {len(roots)} top-level folders where torch.export.save writes one; "
            "nothing in it was run"
        )
    for info in infos:
        member = info.filename if flat else info.filename.partition("/")[2]
        for folder, what in _CODE_FOLDERS.items():
            if member.startswith(folder):
                raise UnsafeModelFile(
                    f"the export archive holds {what} at {member!r}; compiled code in an upload is never "
                    "loaded (upload the torch.export.save archive of the program instead)"
                )
        if not info.is_dir() and not _DATA_MEMBERS.fullmatch(member):
            shown = member if len(member) <= 80 else member[:77] + "..."
            raise UnsafeModelFile(
                f"the export archive holds {shown!r}, which is not a member torch.export.save writes "
                "(models/*.json, data/weights, data/constants, data/sample_inputs, extra); nothing in it was run"
            )
