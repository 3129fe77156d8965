"""Preprocessing: one frozen config, pure steps (orient, resample, crop, intensity) and ``preprocess``."""
from __future__ import annotations

from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.preprocess.orient import reorient_to_ras
from age2hie_hub.preprocess.pipeline import Preprocessed, preprocess
from age2hie_hub.preprocess.resample import resample_to

__all__ = ["PreprocessConfig", "Preprocessed", "preprocess", "reorient_to_ras", "resample_to"]
