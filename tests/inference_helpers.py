"""Builders shared by the inference, ONNX and predict-CLI tests: tiny checkpoints and small ADC scans.

A helper module, not a test module (like hub_server.py and numerics.py): pytest collects nothing here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (24, 24, 16)  # model input grid, voxels
SPACING = (4.0, 4.0, 4.0)  # mm: a 96 x 96 x 64 mm field of view holds a neonatal brain


def make_checkpoint(
    folder: Path,
    *,
    head: str = "outcome",
    channels: int = 1,
    synthetic: bool = True,
    training_range: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A small random-weight checkpoint folder written by hub.save_pretrained."""
    import torch

    from age2hie_hub.hub import CheckpointConfig, save_pretrained
    from age2hie_hub.models import ModelConfig, build_model
    from age2hie_hub.preprocess import PreprocessConfig

    head_args = {"bins": 8, "age_range": [0.0, 16.0], "unit": "weeks"} if head == "age_softbin" else {}
    task = {"outcome": "hie_outcome", "age_softbin": "brain_age", "age_regression": "brain_age",
            "classification": "classification"}[head]
    torch.manual_seed(seed)
    model_config = ModelConfig("resnet3d_10", {"in_channels": channels, "width": 0.125}, head, head_args)
    model = build_model(model_config).eval()
    config = CheckpointConfig(
        model=model_config,
        preprocess=PreprocessConfig(
            spacing=SPACING, shape=SHAPE, crop="foreground", intensity="adc_fixed" if channels == 1 else "zscore",
            clip=(0.0, 4.0) if channels == 1 else None, channels=channels,
        ),
        task=task,
        labels=("favourable", "adverse") if task == "hie_outcome" else ("a", "b") if task == "classification" else (),
        age_unit="weeks",
        input_modalities=("ADC", "Z-ADC")[:channels],
        training_range=training_range or {},
        provenance={"synthetic": synthetic, "training_data": "test"},
    )
    return save_pretrained(model, folder, config)


def adc_array(shape: tuple[int, int, int] = (40, 48, 20), seed: int = 0, scale: float = 1e6) -> np.ndarray:
    """A neonatal-like ADC map: an ellipsoid brain (~1.4e-3 mm^2/s), a low-ADC lesion, CSF rim, 0 outside.

    `scale` 1e6 stores it as scanners do (integers in 1e-6 mm^2/s); 1.0 stores mm^2/s.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    adc = np.where(r < 0.85, 1.4e-3, 0.0) + np.where((r >= 0.85) & (r < 0.95), 3.0e-3, 0.0)
    lesion = np.sqrt(((grid - np.array([0.3, 0.2, 0.0])[:, None, None, None]) ** 2).sum(0)) < 0.25
    adc = np.where(lesion & (r < 0.85), 0.7e-3, adc)
    adc = adc * (1 + 0.05 * rng.standard_normal(shape)) * (adc > 0)
    return (adc * scale).astype(np.float32)


def adc_affine(spacing: tuple[float, float, float] = (1.8, 1.8, 3.0), lps: bool = False) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-36.0, -43.0, -30.0]
    if lps:  # x and y run the other way (as DICOM-derived files often do)
        affine[0, 0], affine[1, 1] = -spacing[0], -spacing[1]
        affine[:3, 3] = [36.0, 43.0, -30.0]
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def write_mha(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    from age2hie_hub.io import Volume, write_volume

    return write_volume(Volume(data, affine), path)
