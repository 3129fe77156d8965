"""ONNX export (needs torch + onnx) and the torch-free ONNX Runtime session.

Names are loaded lazily so that `from age2hie_hub.onnx import OnnxSession` never imports torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "OnnxSession": "age2hie_hub.onnx.runtime",
    "export_onnx": "age2hie_hub.onnx.export",
    "ExportReport": "age2hie_hub.onnx.export",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'age2hie_hub.onnx' has no attribute {name!r}")
