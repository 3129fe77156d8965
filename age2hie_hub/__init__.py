"""age2hie-hub: train, publish and run 3D brain-MRI models (brain age, AGE2HIE HIE outcome).

Heavy submodules (torch, SimpleITK) are imported lazily so that `import age2hie_hub` and the
CLIs' `--help` stay fast.
"""
from __future__ import annotations

from age2hie_hub._lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Volume": "age2hie_hub.io",
    "read_volume": "age2hie_hub.io",
    "write_volume": "age2hie_hub.io",
    "PreprocessConfig": "age2hie_hub.preprocess",
    "list_models": "age2hie_hub.models",
    "build_model": "age2hie_hub.models",
    "from_pretrained": "age2hie_hub.hub",
    "save_pretrained": "age2hie_hub.hub",
    "push_to_hub": "age2hie_hub.hub",
    "list_pretrained": "age2hie_hub.hub",
    "Predictor": "age2hie_hub.inference",
    "Prediction": "age2hie_hub.inference",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
