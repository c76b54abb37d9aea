"""The names of the files a prune writes, defined once for everyone who reads or writes them.

The engine writes them (:mod:`prunekit.io.export`, the pipeline's ``report.json``), the CLI
renames them for the user, the worker lists and orders them as a job's artifacts, the service
names its downloads after them, and the HTTP client picks the model out of a job's artifacts by
them.  How they are named for the user is decided here too, once, for the CLI and the service
alike: the model file is named after the input (``resnet.pt`` → ``resnet-pruned.pt``), and every
other artifact sits beside it as ``<model file stem>.<artifact name>`` (``resnet-pruned.manifest.json``,
``resnet-pruned.report.json``): a state-dict's ``state_dict.pt`` + ``manifest.json`` download as
``w-pruned.pt`` + ``w-pruned.manifest.json``.  The apps import these names from here (they sit above the engine); nothing here imports
anything, so the client stays light.
"""

from __future__ import annotations

import re
from pathlib import PurePath

# Output format → the file the pruned model is written to.
ARTIFACT_NAMES: dict[str, str] = {"torchscript": "model.pt", "export": "model.pt2", "state_dict": "state_dict.pt",
                                  "checkpoint": "model.safetensors"}
# The pruned model's file name → its output format.
MODEL_FORMATS: dict[str, str] = {name: fmt for fmt, name in ARTIFACT_NAMES.items()}
# The shapes a state-dict output is rebuilt from (:func:`prunekit.load_pruned`).
MANIFEST_NAME = "manifest.json"
# A checkpoint output's configuration, as uploaded (Hugging Face's file name).
CONFIG_NAME = "config.json"
# The engine's JSON report, written beside every pruned model.
REPORT_NAME = "report.json"
# How a job's artifacts are listed: the model first, then the manifest and config, then the report.
ARTIFACT_ORDER: tuple[str, ...] = (*ARTIFACT_NAMES.values(), MANIFEST_NAME, CONFIG_NAME, REPORT_NAME)

# Suffixes stripped from an input's name to get its stem (longest first where they overlap).
_INPUT_SUFFIXES = (".safetensors", ".tar.gz", ".tgz", ".tar", ".pt2", ".pth", ".pt", ".bin", ".zip", ".ckpt")


def companion_name(model_file: str, artifact: str) -> str:
    """The file name of ``artifact`` beside the pruned model file ``model_file``:
    ``resnet-pruned.pt`` + ``manifest.json`` → ``resnet-pruned.manifest.json``; the model itself
    keeps ``model_file``."""
    if artifact in MODEL_FORMATS:
        return model_file
    return f"{PurePath(model_file).stem}.{artifact}"


def input_stem(filename: str | None) -> str:
    """An input's name without directory and model suffix, safe for a Content-Disposition header."""
    stem = PurePath((filename or "model").replace("\\", "/")).name
    for suffix in _INPUT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r'[\x00-\x1f\x7f/\\"]', "_", stem).strip() or "model"
    return stem[:200]


def download_name(input_filename: str | None, artifact: str) -> str:
    """What a job's ``artifact`` is called once downloaded, for an input called ``input_filename``:
    ``resnet.pt`` → ``resnet-pruned.pt``, ``resnet-pruned.report.json``; a state-dict
    (``state_dict.pt``) → ``w-pruned.pt``, ``w-pruned.manifest.json``."""
    suffix = PurePath(artifact).suffix if artifact in MODEL_FORMATS else ".pt"
    return companion_name(f"{input_stem(input_filename)}-pruned{suffix}", artifact)
