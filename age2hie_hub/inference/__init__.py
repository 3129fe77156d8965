"""Inference: `Predictor` (torch or ONNX Runtime backend) and its `Prediction` results.

`Predictor` is loaded lazily and itself imports torch only for the torch backend.
"""
from __future__ import annotations

from age2hie_hub.inference.examples import example_scan
from age2hie_hub.inference.prediction import Prediction
from age2hie_hub.inference.predictor import Predictor

__all__ = ["Predictor", "Prediction", "example_scan"]
