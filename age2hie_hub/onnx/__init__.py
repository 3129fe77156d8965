"""ONNX export (needs torch + onnx) and the torch-free ONNX Runtime session.

Names are loaded lazily so that `from age2hie_hub.onnx import OnnxSession` never imports torch.
"""
from __future__ import annotations

from age2hie_hub._lazy import lazy_getattr

_LAZY = {
    "OnnxSession": "age2hie_hub.onnx.runtime",
    "export_onnx": "age2hie_hub.onnx.export",
    "ExportReport": "age2hie_hub.onnx.export",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
