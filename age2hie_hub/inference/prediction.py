"""`Prediction`: one scan's result as a frozen, JSON-serialisable value."""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from typing import Any

from age2hie_hub._config import check_keys, to_plain

# Output key of the deprecated name of `model_file_sha256`: still written by to_dict (JSON and CSV output) and
# read by from_dict in this release, removed in the next (docs/inference.md).
DEPRECATED_SHA256_KEY = "weights_sha256"


@dataclass(frozen=True)
class Prediction:
    """What a model said about one scan, which model said it, and what was checked on the way.

    Exactly one of ``probability`` (hie_outcome: P(adverse outcome)), ``age`` (brain_age),
    ``probabilities`` (classification) or ``value`` (regression) is set, following ``task``.
    """

    source: str | None  # the input's path, or None for in-memory arrays
    task: str
    label: str | None  # hie_outcome / classification: the class name; None for age / regression
    threshold: float | None  # hie_outcome: P(adverse) >= threshold -> labels[1]
    probability: float | None = None
    age: float | None = None
    age_sd: float | None = None  # soft-bin age heads: spread of the predicted age distribution
    age_unit: str | None = None
    probabilities: tuple[float, ...] | None = None
    value: float | None = None
    # Uncertainty from the checkpoint's record (config.json `uncertainty`); None when it records none.
    interval: tuple[float, float] | None = None  # brain age / regression: prediction interval (low, high)
    interval_level: float | None = None  # e.g. 0.9: the interval holds the truth with probability >= 0.9
    calibrated_probability: float | None = None  # hie_outcome: P(adverse) after the recorded calibration map
    prediction_set: tuple[str, ...] | None = None  # hie_outcome: conformal set of labels at set_level
    set_level: float | None = None
    # Which model ran: the name as given, the Hub repo and revision when it came from there,
    # and the file that ran with its SHA-256 (model.safetensors on torch, model.onnx on onnx).
    model: str = ""
    repo_id: str | None = None
    revision: str | None = None
    model_file: str | None = None
    model_file_sha256: str | None = None
    synthetic_model: bool = False  # the weights were trained on synthetic data only (provenance)
    backend: str = "torch"  # "torch" or "onnx"
    device: str = "cpu"  # torch device ("cpu", "cuda:0") or ONNX Runtime provider that ran
    # Input checks.
    input_shape: tuple[int, ...] = ()
    input_spacing_mm: tuple[float, ...] = ()
    input_orientation: str = ""  # axis codes of the file, e.g. "LPS"; preprocessing makes it RAS
    orientation_changed: bool = False
    input_unit: str | None = None  # ADC unit found (or guessed), before conversion to mm^2/s
    unit_guessed: bool = False
    warnings: tuple[str, ...] = ()  # things a reader of the result should know (unusual spacing, ...)
    notes: tuple[str, ...] = ()  # what preprocessing changed

    def __post_init__(self) -> None:
        for name in ("input_shape", "input_spacing_mm", "warnings", "notes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.probabilities is not None:
            object.__setattr__(self, "probabilities", tuple(float(p) for p in self.probabilities))
        if self.interval is not None:
            object.__setattr__(self, "interval", tuple(float(v) for v in self.interval))
        if self.prediction_set is not None:
            object.__setattr__(self, "prediction_set", tuple(self.prediction_set))

    @property
    def score(self) -> float | None:
        """The main number: P(adverse), age, top-class probability or regression value."""
        if self.probability is not None:
            return self.probability
        if self.age is not None:
            return self.age
        if self.probabilities is not None:
            return max(self.probabilities)
        return self.value

    @property
    def weights_sha256(self) -> str | None:
        """Deprecated: `model_file_sha256` (on the ONNX backend this was always model.onnx's hash, not the weights')."""
        warnings.warn("Prediction.weights_sha256 is now model_file_sha256 (the SHA-256 of model_file, the file that "
                      "ran); the old name will be removed", DeprecationWarning, stacklevel=2)
        return self.model_file_sha256

    def to_dict(self) -> dict[str, Any]:
        plain = to_plain(self)
        out: dict[str, Any] = {}
        for key, value in plain.items():  # the deprecated key beside its new name, for one release
            out[key] = value
            if key == "model_file_sha256":
                out[DEPRECATED_SHA256_KEY] = value
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Prediction":
        data = dict(data)
        if DEPRECATED_SHA256_KEY in data:  # what to_dict wrote (always beside model_file_sha256 from this release on)
            old = data.pop(DEPRECATED_SHA256_KEY)
            data.setdefault("model_file_sha256", old)
        check_keys(cls, data)
        for name, f in ((f.name, f) for f in dataclasses.fields(cls)):
            if name in data and isinstance(data[name], list):
                data[name] = tuple(data[name])
        return cls(**data)
