"""Preprocessing: one frozen config, pure steps (orient, resample, crop, intensity) and ``preprocess``.

The config is plain data that checkpoint configs import, so it loads eagerly; the steps (nibabel,
SimpleITK) load on first use, so importing the config stays light (docs/preprocessing.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from age2hie_hub._lazy import lazy_getattr
from age2hie_hub.preprocess.config import PreprocessConfig

if TYPE_CHECKING:
    from age2hie_hub.preprocess.orient import reorient_to_ras
    from age2hie_hub.preprocess.pipeline import Preprocessed, brain_offset_from_labels, fit_brain_offset, preprocess
    from age2hie_hub.preprocess.resample import resample_to

_LAZY = {
    "Preprocessed": "age2hie_hub.preprocess.pipeline",
    "brain_offset_from_labels": "age2hie_hub.preprocess.pipeline",
    "fit_brain_offset": "age2hie_hub.preprocess.pipeline",
    "preprocess": "age2hie_hub.preprocess.pipeline",
    "reorient_to_ras": "age2hie_hub.preprocess.orient",
    "resample_to": "age2hie_hub.preprocess.resample",
}

__all__ = [
    "PreprocessConfig",
    "Preprocessed",
    "brain_offset_from_labels",
    "fit_brain_offset",
    "preprocess",
    "reorient_to_ras",
    "resample_to",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
