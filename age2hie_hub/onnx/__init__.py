"""ONNX export (needs torch + onnx) and the torch-free ONNX Runtime session.

Names are loaded lazily so that `from age2hie_hub.onnx import OnnxBackend` never imports torch.
`OnnxSession` is OnnxBackend's former name, still importable with a DeprecationWarning.
"""
from __future__ import annotations

from age2hie_hub._lazy import lazy_getattr

_LAZY = {
    "OnnxBackend": "age2hie_hub.onnx.runtime",
    "export_onnx": "age2hie_hub.onnx.export",
    "ExportReport": "age2hie_hub.onnx.export",
}

__all__ = list(_LAZY)

# Deprecated names: resolved (and warned about) by the defining module's own __getattr__, not listed in __all__.
__getattr__ = lazy_getattr(__name__, {**_LAZY, "OnnxSession": "age2hie_hub.onnx.runtime"})
