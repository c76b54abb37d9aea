"""The names of the files a prune writes, defined once for everyone who reads or writes them.

The engine writes them (:mod:`prunekit.io.export`, the pipeline's ``report.json``), the CLI
renames them for the user, the worker lists and orders them as a job's artifacts, the service
names its downloads after them, and the HTTP client picks the model out of a job's artifacts by
them.  The apps import these names from here (they sit above the engine); nothing here imports
anything, so the client stays light.
"""

from __future__ import annotations

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
