"""Turn what a user passes (path, Volume, nibabel image, (array, affine)) into a model-ready array.

Torch-free on purpose: the ONNX backend and the background workers of `predict_many` use it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub._memory import settle_allocator
from age2hie_hub._threads import beside
from age2hie_hub.dwi.units import sampled_median
from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io.volume import Volume

log = logging.getLogger(__name__)

# Used when a checkpoint records no training range. Voxel sizes outside this look like a header error; a
# median ADC of the positive voxels outside this (mm^2/s) is not brain tissue and CSF as scanned (adult
# tissue ~0.8e-3, neonatal white matter ~1.6e-3, CSF ~3e-3): a wrong unit, a non-ADC image, or no skull strip.
DEFAULT_SPACING_MM = (0.2, 8.0)
DEFAULT_ADC_MM2S = (4e-4, 3.5e-3)
ADC_MODALITIES = ("ADC",)


@dataclass(frozen=True)
class PreparedInput:
    """One scan after reading, ADC/unit handling and the checkpoint's preprocessing."""

    array: np.ndarray  # float32 (C, X, Y, Z), what the model takes
    source: str | None
    input_shape: tuple[int, ...]
    input_spacing_mm: tuple[float, ...]
    input_orientation: str
    orientation_changed: bool
    input_unit: str | None = None
    unit_guessed: bool = False
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    affine: np.ndarray | None = field(default=None, repr=False)  # 4x4 of `array`'s grid (Preprocessed.affine)


def describe(x: Any) -> str:
    """A short name for an input, for messages and result tables."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, Volume):
        return x.source or "<Volume>"
    filename = getattr(x, "get_filename", lambda: None)()
    if filename:
        return str(filename)
    return f"<{type(x).__name__}>"


def to_volume(x: Any, what: str = "input") -> Volume:
    """Accept a path, a Volume, a nibabel image or an (array, affine) pair."""
    if isinstance(x, (str, os.PathLike)):
        from age2hie_hub.io import read_volume  # io's readers pull in SimpleITK; only load them when needed

        return read_volume(Path(x))
    if isinstance(x, Volume):
        return x
    if hasattr(x, "affine") and hasattr(x, "dataobj"):  # nibabel SpatialImage, without importing nibabel
        filename = x.get_filename() if hasattr(x, "get_filename") else None
        data = np.asarray(x.dataobj, dtype=np.float32)
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        return Volume(data, np.asarray(x.affine), {"source": filename} if filename else {})
    if isinstance(x, (tuple, list)) and len(x) == 2:
        data, affine = x
        return Volume(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    if isinstance(x, np.ndarray):
        raise TypeError(
            f"{what}: a bare array has no geometry; pass (array, affine) with the 4x4 voxel-to-RAS-mm affine"
        )
    raise TypeError(
        f"{what}: expected a path, a Volume, a nibabel image or (array, affine), got {type(x).__name__}"
    )


def _in_range(value: float, bounds: Any) -> bool:
    lo, hi = (float(b) for b in bounds)
    return lo <= value <= hi


def check_volume(volume: Volume, modality: str, training_range: dict[str, Any], name: str,
                 median: float | None = None) -> list[str]:
    """Warnings about a channel that the model may not have seen the like of in training.

    ``median``: the channel's median (positive voxels for ADC, non-zero ones otherwise) when already measured.
    """
    warnings: list[str] = []
    spacing = volume.spacing
    bounds = training_range.get("spacing_mm", DEFAULT_SPACING_MM)
    if not all(_in_range(s, bounds) for s in spacing):
        warnings.append(
            f"{name}: unusual voxel size {tuple(round(s, 3) for s in spacing)} mm "
            f"(expected {bounds[0]}-{bounds[1]} mm); check the header"
        )
    key = "adc_mm2s" if modality in ADC_MODALITIES else f"{modality.lower().replace('-', '_')}_values"
    if key in training_range:
        bounds, what = training_range[key], "the training range"
    elif modality in ADC_MODALITIES:
        bounds, what = DEFAULT_ADC_MM2S, "the range of brain ADC"
    else:
        return warnings
    if median is None:
        median = sampled_median(volume.data, "positive" if modality in ADC_MODALITIES else "nonzero")
    if median is None:
        warnings.append(f"{name}: no non-zero voxels; the scan looks empty")
        return warnings
    if not _in_range(median, bounds):
        lo, hi = bounds
        warnings.append(
            f"{name}: median {modality} {median:.4g} is outside {what} [{lo:.4g}, {hi:.4g}]; "
            "the prediction may be unreliable"
        )
    return warnings


def _as_channel(volume: Volume, modality: str,
                name: str) -> tuple[Volume, str | None, bool, list[str], float | None]:
    """DWI -> ADC, ADC units -> mm^2/s. Returns (volume, unit found, unit guessed, notes, median of the positive
    voxels in mm^2/s as the unit check measured it; None for other modalities).

    Warnings (from the reader, ADC computation and unit detection) accumulate in metadata["warnings"].
    """
    notes: list[str] = []
    if volume.data.ndim == 4:
        if modality not in ADC_MODALITIES:
            raise VolumeReadError(
                f"{name}: is 4D (shape {volume.shape}) but the model takes a 3D {modality} volume"
            )
        from age2hie_hub.dwi import compute_adc

        bvals = volume.metadata.get("bvals")
        volume = compute_adc(volume)
        notes.append(f"{name}: ADC computed from a {len(bvals) if bvals else '?'}-volume DWI series")
    if modality not in ADC_MODALITIES:
        return volume, None, False, notes, None
    from age2hie_hub.dwi import ADC_UNITS
    from age2hie_hub.dwi.units import adc_to_mm2s_with_median

    guessed = volume.metadata.get("units") not in ADC_UNITS
    volume, unit, _, median = adc_to_mm2s_with_median(volume)
    if unit != "mm2/s":
        notes.append(f"{name}: ADC converted from {unit} to mm2/s{' (unit detected from values)' * guessed}")
    return volume, unit, guessed, notes, median


def _source(x: Any, volume: Volume) -> str | None:
    """The path a channel came from: as the user gave it, else what the reader recorded."""
    return str(x) if isinstance(x, (str, os.PathLike)) else volume.source


def prepare(x: Any, second_channel: Any, config: Any) -> PreparedInput:
    """Read, check and preprocess one scan for a checkpoint (`config`: its CheckpointConfig)."""
    from age2hie_hub.preprocess import preprocess
    from age2hie_hub.preprocess.orient import orientation_codes

    settle_allocator()  # once per process: scan-sized temporaries reused, not faulted in again for each scan
    modalities = tuple(config.input_modalities)
    training_range = dict(config.training_range or {})
    first = to_volume(x, "input")
    source = _source(x, first)
    name = Path(source).name if source else "input"
    input_shape, input_spacing = first.shape, first.spacing
    orientation = orientation_codes(first.affine)

    volume, unit, guessed, notes, median = _as_channel(first, modalities[0], name)
    warnings = list(volume.metadata.get("warnings") or ()) + check_volume(volume, modalities[0], training_range, name,
                                                                          median)
    channels = [volume]
    qc_inputs, qc_names = [(volume, unit)], [name]  # input QC against the training inputs' record
    if len(modalities) > 1:
        if second_channel is None:
            raise ValueError(
                f"{name}: this model takes {len(modalities)} channels {modalities}; pass the "
                f"{modalities[1]} volume as second_channel= (CLI: --second-channel)"
            )
        second = to_volume(second_channel, "second_channel")
        second_source = _source(second_channel, second)
        second_name = Path(second_source).name if second_source else "second channel"
        second, second_unit, _, second_notes, second_median = _as_channel(second, modalities[1], second_name)
        qc_inputs.append((second, second_unit))
        qc_names.append(second_name)
        warnings += list(second.metadata.get("warnings") or ()) + check_volume(
            second, modalities[1], training_range, second_name, second_median
        )
        notes += second_notes
        channels.append(second)
    elif second_channel is not None:
        warnings.append(f"{name}: the model takes one channel ({modalities[0]}); the second channel was ignored")

    qc = None
    if getattr(config, "input_qc", None):
        from age2hie_hub.inference.qc import qc_warnings

        # The QC reads the channels, the preprocessing reads them too: under scan_threads they run side by side,
        # the QC from where the preprocessing's own parallel part (a whole-volume Gaussian) is over.
        qc = beside(qc_warnings, qc_inputs, config.input_qc, modalities, qc_names, at_cue=True)
    # Volumes read from files are finite (read_volume sets non-finite voxels to 0, with a warning), and so they stay
    # through the ADC conversion (a factor of at most 1): preprocessing need not check every voxel again.
    read = all(isinstance(v, (str, os.PathLike)) for v in (x, second_channel) if v is not None)
    try:
        pre = preprocess(channels, config.preprocess, assume_finite=read)
    finally:
        if qc is not None:  # a QC error comes first, as it would run first on one thread
            warnings += qc.result()
    array = np.ascontiguousarray(pre.array, dtype=np.float32)
    return PreparedInput(
        array=array,
        source=source,
        input_shape=tuple(int(s) for s in input_shape),
        input_spacing_mm=tuple(round(float(s), 4) for s in input_spacing),
        input_orientation=orientation,
        orientation_changed=orientation != "RAS",
        input_unit=unit,
        unit_guessed=guessed,
        # Preprocessing's warnings (foreground cut off by the box, ...) change what the model sees: warnings too.
        warnings=tuple(dict.fromkeys(warnings + [f"{name}: {w}" for w in pre.warnings])),  # unique, in order
        notes=tuple(notes) + tuple(pre.notes),
        affine=pre.affine,
    )
