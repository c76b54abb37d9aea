"""Import torchvision against the CPU-only torch wheel (bench-only; prunekit never imports this).

torchvision 0.28.0's compiled ops do not load against this torch build, and ``import torchvision``
fails inside ``torchvision/_meta_registrations.py`` (it registers meta kernels for ``torchvision::``
ops that were never loaded).  The model definitions do not need those ops (only detection's
``nms``/``roi_align`` do, at run time), so an empty module is put in its place before import.
"""

from __future__ import annotations

import sys
import types


def import_torchvision():
    if "torchvision" not in sys.modules:
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision  # noqa: E402

    return torchvision


torchvision = import_torchvision()


_NMS_INSTALLED = False


def _ops_present() -> None:
    """Stands in for torchvision's _assert_has_ops (scriptable: batched_nms is scripted when tracing)."""
    return None


def install_python_nms() -> None:
    """Register a pure-PyTorch ``torchvision::nms`` so detection models run without the C++ ops.

    Only the zoo's detection rows use this (SSDlite, RetinaNet, FCOS need nothing else of the
    compiled ops; Faster/Mask R-CNN also need ``roi_align`` and still fail).  The fake kernel gives
    the result an unbacked (data-dependent) length, as the real op has.
    """
    global _NMS_INSTALLED
    if _NMS_INSTALLED:
        return
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

    def nms_cpu(dets, scores, iou_threshold):
        if dets.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        order = scores.argsort(descending=True)
        boxes = dets[order]
        x1, y1, x2, y2 = boxes.unbind(1)
        area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
        keep = torch.ones(len(order), dtype=torch.bool)
        for i in range(len(order)):
            if not keep[i]:
                continue
            xx1, yy1 = torch.maximum(x1[i], x1[i + 1:]), torch.maximum(y1[i], y1[i + 1:])
            xx2, yy2 = torch.minimum(x2[i], x2[i + 1:]), torch.minimum(y2[i], y2[i + 1:])
            inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
            iou = inter / (area[i] + area[i + 1:] - inter)
            keep[i + 1:] &= iou <= iou_threshold
        return order[keep]

    def nms_fake(dets, scores, iou_threshold):
        ctx = torch.library.get_ctx()
        n = ctx.new_dynamic_size()
        return dets.new_empty((n,), dtype=torch.long)

    lib.impl("nms", nms_cpu, "CPU")
    torch.library.register_fake("torchvision::nms", nms_fake, lib=lib)
    install_python_nms._lib = lib  # keep the registration alive

    import torchvision.ops.boxes as boxes

    boxes._assert_has_ops = _ops_present
    _NMS_INSTALLED = True
