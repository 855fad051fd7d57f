"""Fused Triton kernels with plain-torch references (imports neither triton nor a device)."""
from .lincomb import lincomb, lincomb_reference, triton_available

__all__ = ["lincomb", "lincomb_reference", "triton_available"]
