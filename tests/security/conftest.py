"""The security suite builds its hostile files itself (``crafted.py``); service tests reuse the
service suite's process helpers."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent / "service"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
