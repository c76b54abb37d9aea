"""Helpers the zoo's modules share."""

from __future__ import annotations


def img_inputs(c: int = 3, h: int = 32, w: int = 32) -> list[dict]:
    """One image batch ``[1, c, h, w]`` in float32, as spec-style example inputs."""
    return [{"shape": [1, c, h, w], "dtype": "float32"}]
