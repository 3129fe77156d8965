"""Input QC that knows what the model was trained on: features of a scan against the training inputs' record.

At training time (``age2hie_hub.train.input_stats``) the features below are computed for every training input,
read exactly as prediction reads it (DWI -> ADC, ADC units -> mm^2/s), and their distribution is recorded in
``config.json`` ``input_qc``. At prediction time the same features of the scan are compared with that record:
a feature outside the training range widened by a margin is a warning with its reason (wrong modality, wrong age
group, not skull-stripped, implausible brain volume). Nothing here is a hard-coded threshold on a feature; the
fixed numbers are how features are measured (FOREGROUND_FRACTION) and the default margin (MARGIN).

The accepted range of a feature is ``[lo - MARGIN * w, hi + MARGIN * w]`` with ``lo``/``hi`` the 1st/99th
percentiles of the training values and ``w = hi - lo``, on a log scale for the positive, scale-like features
(volumes, extents, ratios), so that MARGIN = 0.5 accepts half a training spread beyond its 1st-99th range
(for a log-normal spread, about +-3.5 standard deviations). ``w`` is at least MIN_SPREAD_LOG (log scale) or
MIN_SPREAD, so that a training set of near-identical scans does not give a range of zero width.

Features of one channel (``channel_features``):

- ``foreground_ml``: volume (ml) of the voxels above FOREGROUND_FRACTION of the 99th percentile of the
  absolute values: the head (skull-on) or the brain (skull-stripped);
- ``extent_mm``: the largest side (mm) of the foreground's bounding box (1st-99th percentile of its voxel
  coordinates on each axis, so a stray bright voxel does not count);
- ``zero_fraction``: share of the field of view that is exactly zero (masked / skull-stripped images: most of the
  background; a raw scanner image: little);
- ``background_ratio``: 90th percentile of |value| outside the foreground over the foreground median (raw images
  carry noise and tissue there; skull-stripped ones nearly nothing);
- ``p95_over_median``, ``p05_over_median``, ``skewness``: the shape of the foreground's intensity distribution
  (ADC: bright CSF, a long right tail; T1: dark CSF, a left tail);
- ``median_value``: the foreground median in the channel's unit after unit handling (mm^2/s for ADC; for other
  modalities arbitrary scanner units, so it is recorded but not checked);
- for ADC channels also the unit detection outcome (``unit``, recorded as counts).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from age2hie_hub.io.volume import Volume

log = logging.getLogger(__name__)

QC_VERSION = 1
FOREGROUND_FRACTION = 0.1  # foreground: |value| > this fraction of the 99th percentile of |value|
SAMPLE_MM = 4.0  # features are measured on every k-th voxel along an axis, k = floor(SAMPLE_MM / spacing)
MARGIN = 0.5  # accepted: the training 1st-99th percentile range widened by MARGIN times its width
LOW_PCT, HIGH_PCT = 1.0, 99.0
# The spread w is at least this (a training set of near-identical scans must not make a zero-width range):
MIN_SPREAD_LOG = math.log(1.2)  # log-scale features: 20 %
MIN_SPREAD = 0.05  # linear features (fractions, skewness)
PREFIX = "input QC"  # every QC warning starts with it
# feature -> (log scale?, checked for every modality?, what a value outside the range suggests)
FEATURES: dict[str, tuple[bool, bool, str]] = {
    "foreground_ml": (True, True, "an implausible brain/head volume for this model: another age group, a scan "
                                  "that is (not) skull-stripped unlike the training scans, or a partial field of view"),
    "extent_mm": (True, True, "an object of another size than the training heads/brains: another age group or "
                              "another field of view"),
    "zero_fraction": (False, True, "a background unlike the training scans: skull-stripped/masked vs not"),
    "background_ratio": (False, True, "signal outside the foreground unlike the training scans: not skull-stripped "
                                      "when the model expects it (or the reverse)"),
    "p95_over_median": (True, True, "an intensity distribution unlike the training modality: a wrong modality or "
                                    "contrast"),
    "p05_over_median": (True, True, "an intensity distribution unlike the training modality: a wrong modality or "
                                    "contrast"),
    "skewness": (False, True, "an intensity distribution unlike the training modality: a wrong modality or contrast"),
    "median_value": (True, False, "values unlike the training ADC maps in mm^2/s: a wrong modality, a wrong unit or "
                                  "another age group"),
}
ADC_MODALITIES = ("ADC",)


@dataclass(frozen=True)
class Flag:
    """One feature of one channel outside its accepted range."""

    channel: int
    feature: str
    value: float
    accepted: tuple[float, float]
    training: tuple[float, float]  # the training 1st-99th percentiles
    reason: str

    def message(self, name: str) -> str:
        lo, hi = self.training
        a, b = self.accepted
        return (f"{PREFIX}: {name}: {self.feature} {_fmt(self.value)} is outside what the model was trained on "
                f"(training 1st-99th percentile {_fmt(lo)} - {_fmt(hi)}, accepted {_fmt(a)} - {_fmt(b)}): {self.reason}")


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"


def _stride(spacing: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, int(SAMPLE_MM / max(float(s), 1e-6))) for s in spacing)


def channel_features(volume: Volume, modality: str, unit: str | None = None) -> dict[str, Any]:
    """QC features of one 3D channel, as read for the model (ADC already in mm^2/s). See the module docstring."""
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise ValueError(f"input QC takes a 3D channel, got shape {data.shape}")
    # The features do not depend on the order of the axes: the sample is taken with the axes in memory order
    # (readers hand back transposed arrays), a sequential copy instead of a gather across memory.
    order = sorted(range(3), key=lambda a: -abs(data.strides[a]))
    data = data.transpose(order)
    spacing = [float(volume.spacing[a]) for a in order]
    step = _stride(spacing)
    # Quantiles are sample elements, so float32 data is ranked as float32 (half the memory traffic of float64,
    # same values); the moments below are taken in float64.
    dtype = np.float32 if data.dtype == np.float32 else np.float64
    sub = np.array(data[:: step[0], :: step[1], :: step[2]], dtype=dtype)
    sub[~np.isfinite(sub)] = 0
    voxel_ml = float(np.prod(np.asarray(spacing) * np.asarray(step))) / 1000.0
    out: dict[str, Any] = {}
    if modality in ADC_MODALITIES and unit is not None:
        out["unit"] = unit
    absval = np.abs(sub)
    top = _quantile(absval.ravel(), 0.99) if absval.size else 0.0
    if top <= 0:  # an empty scan: nothing else can be measured
        out.update(foreground_ml=0.0, zero_fraction=float(np.mean(sub == 0)))
        return out
    fg = absval > np.float64(FOREGROUND_FRACTION * top)  # compared in float64, as the level was computed
    values = sub[fg]
    p05, median, p95 = _quantiles(values, (0.05, 0.5, 0.95))
    out["foreground_ml"] = float(fg.sum()) * voxel_ml
    out["extent_mm"] = max(_extent(counts) * step[axis] * spacing[axis] for axis, counts in enumerate(_profiles(fg)))
    out["zero_fraction"] = float(np.mean(sub == 0))
    outside = absval[~fg]
    out["background_ratio"] = float(_quantile(outside, 0.9) / abs(median)) if outside.size and median else 0.0
    if median > 0:
        out["p95_over_median"] = float(p95 / median)
        out["p05_over_median"] = float(max(p05, 0.0) / median) if p05 > 0 else 0.0
    # Central moments in float64 by products and numpy's sums, not a mean of (d/sd)**3 (numpy's power of 3 cost
    # more than the rest of the QC) nor dot products (BLAS's threads would compete with predict_many's workers);
    # the same value to float64 rounding.
    centred = values.astype(np.float64)
    centred -= centred.mean()
    power = centred * centred
    m2 = float(power.sum()) / centred.size
    power *= centred
    out["skewness"] = float(power.sum()) / centred.size / m2**1.5 if m2 > 0 else 0.0
    out["median_value"] = median
    return out


def _quantile(values: np.ndarray, q: float) -> float:
    """The q-quantile of a 1D array by partial sort (the nearest lower rank; enough for QC features)."""
    return _quantiles(values, (q,))[0]


def _quantiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """:func:`_quantile` for several q at once: one partial sort places every rank."""
    ks = [min(values.size - 1, max(0, int(q * (values.size - 1)))) for q in qs]
    n_zero = values.size - int(np.count_nonzero(values))  # values are finite
    if n_zero * 8 < values.size:
        ranked = np.partition(values, ks)
        return [float(ranked[k]) for k in ks]
    # Many equal values (the exact zeros of a masked background) make numpy's selection far slower (docs/preprocessing.md):
    # rank the negative and the positive values apart, with the zeros between them. Same result.
    negative, positive = values[values < 0], values[values > 0]
    out = []
    for k in ks:
        if k < negative.size:
            out.append(float(np.partition(negative, k)[k]))
        elif k < negative.size + n_zero:
            out.append(0.0)
        else:
            rank = k - negative.size - n_zero
            out.append(float(np.partition(positive, rank)[rank]))
    return out


def _profiles(mask: np.ndarray) -> list[np.ndarray]:
    """The number of True voxels of a C-ordered 3D mask at each index of each axis: from one reduction of the
    whole mask to a plane (as bytes, in int32), the others from that plane."""
    planes = np.add.reduce(mask.view(np.uint8), axis=0, dtype=np.int32)  # (axis 1, axis 2), rows added in order
    along_0 = np.count_nonzero(mask.reshape(mask.shape[0], -1), axis=1)
    return [along_0, planes.sum(axis=1, dtype=np.int64), planes.sum(axis=0, dtype=np.int64)]


def _extent(counts: np.ndarray) -> float:
    """Voxels between the 1st and 99th percentile of a mask's coordinates along an axis (inclusive), from its
    voxel counts at each index of that axis."""
    cum = np.cumsum(counts) / max(int(counts.sum()), 1)
    lo = int(np.searchsorted(cum, LOW_PCT / 100.0))
    hi = int(np.searchsorted(cum, HIGH_PCT / 100.0))
    return float(hi - lo + 1)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The record of one channel from its training inputs' features: percentiles, counts of units, n."""
    feats: dict[str, Any] = {}
    for name in FEATURES:
        values = np.asarray([r[name] for r in rows if name in r and r[name] is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        p = np.percentile(values, [0, LOW_PCT, 5, 50, 95, HIGH_PCT, 100])
        feats[name] = {"n": int(values.size), "min": p[0], "p01": p[1], "p05": p[2], "median": p[3], "p95": p[4],
                       "p99": p[5], "max": p[6]}
        feats[name] = {k: (round(float(v), 6) if k != "n" else v) for k, v in feats[name].items()}
    units: dict[str, int] = {}
    for r in rows:
        if r.get("unit") is not None:
            units[str(r["unit"])] = units.get(str(r["unit"]), 0) + 1
    out: dict[str, Any] = {"n": len(rows), "features": feats}
    if units:
        out["units"] = units
    return out


def accepted_range(stats: dict[str, Any], feature: str, margin: float) -> tuple[float, float]:
    """[lo - margin * w, hi + margin * w] around the training 1st-99th percentiles (log scale where positive)."""
    lo, hi = float(stats["p01"]), float(stats["p99"])
    log_scale = FEATURES[feature][0] and lo > 0
    if log_scale:
        a, b = math.log(lo), math.log(hi)
        w = max(b - a, MIN_SPREAD_LOG)
        return math.exp(a - margin * w), math.exp(b + margin * w)
    w = max(hi - lo, MIN_SPREAD)
    return lo - margin * w, hi + margin * w


def check_channel(features: dict[str, Any], record: dict[str, Any], modality: str, channel: int,
                  margin: float) -> list[Flag]:
    """The features of one channel outside the accepted ranges of its training record."""
    flags = []
    for name, stats in record.get("features", {}).items():
        if name not in FEATURES or name not in features:
            continue
        log_scale, every_modality, reason = FEATURES[name]
        if not every_modality and modality not in ADC_MODALITIES:
            continue  # arbitrary scanner units: not comparable between scans
        value = float(features[name])
        lo, hi = accepted_range(stats, name, margin)
        if not lo <= value <= hi:
            flags.append(Flag(channel, name, value, (lo, hi), (float(stats["p01"]), float(stats["p99"])), reason))
    units = record.get("units")
    if units and features.get("unit") is not None and features["unit"] not in units:
        flags.append(Flag(channel, "unit", math.nan, (math.nan, math.nan), (math.nan, math.nan),
                          f"ADC unit detected as {features['unit']}, never seen in training ({', '.join(units)}): "
                          "a wrong modality or a rescaled map"))
    return flags


def check_record(input_qc: dict[str, Any], n_channels: int) -> None:
    """Refuse a malformed ``input_qc`` record when the checkpoint loads (ValueError naming what is wrong)."""
    if not input_qc:
        return
    channels = input_qc.get("channels")
    if not isinstance(channels, list) or not 1 <= len(channels) <= n_channels:
        raise ValueError(f"input_qc needs a 'channels' list of 1-{n_channels} records")
    for i, record in enumerate(channels):
        for name, stats in (record.get("features") or {}).items():
            if name in FEATURES and not all(isinstance(stats.get(k), (int, float)) for k in ("p01", "p99")):
                raise ValueError(f"input_qc channel {i} feature {name!r} lacks numeric p01/p99")


def qc_flags(channels: Sequence[tuple[Volume, str | None]], input_qc: dict[str, Any],
             modalities: Sequence[str]) -> list[Flag]:
    """Flags of every recorded channel; ``channels`` are (volume as read for the model, ADC unit found or None)."""
    if not input_qc:
        return []
    margin = float(input_qc.get("margin", MARGIN))
    flags: list[Flag] = []
    for i, (record, (volume, unit)) in enumerate(zip(input_qc.get("channels", []), channels)):
        if volume.data.ndim != 3:
            continue
        features = channel_features(volume, modalities[i], unit)
        flags += check_channel(features, record, modalities[i], i, margin)
    return flags


def qc_warnings(channels: Sequence[tuple[Volume, str | None]], input_qc: dict[str, Any],
                modalities: Sequence[str], names: Sequence[str]) -> list[str]:
    """QC warnings, one per flagged feature, each naming the channel's file, the value, the range and a reason."""
    out = []
    for flag in qc_flags(channels, input_qc, modalities):
        if flag.feature == "unit":
            out.append(f"{PREFIX}: {names[flag.channel]}: {flag.reason}")
        else:
            out.append(flag.message(names[flag.channel]))
    return out


def read_channels(paths: Sequence[Any], modalities: Sequence[str]) -> list[tuple[Volume, str | None]]:
    """Each channel read exactly as prediction reads it (DWI -> ADC, ADC units -> mm^2/s), with its ADC unit."""
    from age2hie_hub.inference.inputs import _as_channel, to_volume

    out = []
    for path, modality in zip(paths, modalities):
        volume = to_volume(path, str(path))
        volume, unit, _, _, _ = _as_channel(volume, modality, str(path))
        out.append((volume, unit))
    return out


def input_features(paths: Sequence[Any], modalities: Sequence[str]) -> list[dict[str, Any]]:
    """QC features of each channel of one case (``paths``: one file per channel)."""
    return [channel_features(volume, modality, unit)
            for (volume, unit), modality in zip(read_channels(paths, modalities), modalities)]
