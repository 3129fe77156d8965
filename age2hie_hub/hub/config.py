"""config.json of a checkpoint folder: everything needed to rebuild the model and feed it right."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from age2hie_hub._config import check_keys, to_plain
from age2hie_hub.models.config import ModelConfig
from age2hie_hub.preprocess.config import PreprocessConfig

FORMAT_VERSION = 1
# hie_outcome: binary, output is P(adverse); brain_age: output is age in `age_unit`;
# classification / regression: any other manifest target (YouTube-to-brain phenotypes).
TASKS = ("hie_outcome", "brain_age", "classification", "regression")


@dataclass(frozen=True)
class CheckpointConfig:
    model: ModelConfig
    preprocess: PreprocessConfig
    task: str = "hie_outcome"
    labels: tuple[str, ...] = ("favourable", "adverse")  # class names, index = class id
    age_unit: str = "years"  # brain_age only: "years" or "weeks"
    threshold: float = 0.5  # hie_outcome: P(adverse) >= threshold -> "adverse"
    input_modalities: tuple[str, ...] = ("ADC",)  # one per channel, e.g. ("ADC", "Z-ADC") or ("T1w",)
    # Values the model saw in training (for input checks): {"spacing_mm": [lo, hi], "adc_mm2s": [lo, hi], ...}
    training_range: dict[str, Any] = field(default_factory=dict)
    # library_version, git_commit, seed, training_data, data_manifest_sha256, parent, synthetic (bool), ...
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # measured evaluation, as written by the run
    # Uncertainty fitted on held-out predictions, applied to every prediction (inference/uncertainty.py):
    # {"regression": split-conformal interval} or {"binary": calibration map, reliability, conformal set};
    # {} = none recorded (predictions then say they have no interval).
    uncertainty: dict[str, Any] = field(default_factory=dict)
    # Summaries of the training inputs that input QC compares each scan with (inference/qc.py); {} = none.
    input_qc: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "input_modalities", tuple(self.input_modalities))
        if len(self.input_modalities) != self.preprocess.channels:
            raise ValueError(
                f"input_modalities {self.input_modalities} must name one modality per channel "
                f"(preprocess.channels = {self.preprocess.channels})"
            )

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckpointConfig":
        check_keys(cls, data)
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"config.json has format_version {version}, newer than this library understands "
                f"({FORMAT_VERSION}); upgrade age2hie-hub"
            )
        data = dict(data)
        data["model"] = ModelConfig.from_dict(data["model"])
        data["preprocess"] = PreprocessConfig.from_saved(data["preprocess"])
        return cls(**data)
