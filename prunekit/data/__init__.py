"""Calibration data and what the engine learns from it.

| module | concern |
| --- | --- |
| ``calibration`` | read and validate a ``.safetensors`` upload (inputs, targets), split train / holdout |
| ``objective`` | the loss the criteria differentiate; the evaluation every report carries |
| ``evidence`` | gradients per batch, the largest ``|gradient|``, input-activation norms |
| ``batch_norm`` | re-estimate BatchNorm statistics on the calibration inputs |
"""

from .calibration import Calibration, load_calibration

__all__ = ["Calibration", "load_calibration"]
