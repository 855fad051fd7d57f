"""Make torchvision importable next to a CPU-only torch (compute-stack.md section 3).

The torchvision wheel resolved for torch 2.13.0 is a CUDA build whose ``_C.so`` cannot load here, so
``import torchvision`` dies registering fake kernels for ``torchvision::nms``. Defining the two op
schemas first lets the pure-Python parts (models, transforms) import; the C ops stay unavailable.
Call ``apply()`` before the first import of torchvision, cleanfid, torch_fidelity or pytorch_fid.
"""

from __future__ import annotations

import sys

_LIB = None


def apply() -> None:
    """Define torchvision::nms/qnms schemas once, unless torchvision is already imported or loads natively."""
    global _LIB
    if _LIB is not None or "torchvision" in sys.modules:
        return
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018  (a working native torchvision already defined it)
        return
    except (AttributeError, RuntimeError):
        pass
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold, float scale, int zero_point) -> Tensor")
    except RuntimeError:  # schemas already defined elsewhere
        return
    _LIB = lib
