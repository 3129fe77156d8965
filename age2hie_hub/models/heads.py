"""Task heads: pooled backbone features (N, F) -> raw output, and raw output -> named predictions.

Every head is a `Linear` called `fc` (plus parameter-free dropout), so a head's state-dict keys are
always `head.fc.weight` / `head.fc.bias` and swapping heads for transfer drops exactly those two keys.

| head           | head_args (defaults)                                  | raw output         | predict_outputs        |
|----------------|-------------------------------------------------------|--------------------|------------------------|
| outcome        | dropout=0                                             | logit (N,)         | probability (adverse)  |
| age_regression | unit="years", offset=0, scale=1, dropout=0            | age (N,)           | age                    |
| age_softbin    | bins=40, age_range=[42, 82], unit="years", dropout=0  | log-probs (N, B)   | age, age_sd            |
| classification | num_classes=2, dropout=0                              | logits (N, K)      | probabilities (N, K)   |

`age_regression` returns `offset + scale * fc(x)`: raw output is the age itself, in `unit`, and offset/scale
(e.g. the training cohort's mean and SD) only make the start of training well conditioned.
`age_softbin` follows Peng et al. 2021 (SFCN): `bins` equal bins over `age_range`, centres at
`lo + (i + 0.5) * (hi - lo) / bins`; the defaults are those of the UK Biobank SFCN brain-age model.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

AGE_UNITS = ("years", "weeks")

# head name -> its head_args and their defaults (the one place that lists them)
HEAD_ARGS: dict[str, dict[str, Any]] = {
    "outcome": {"dropout": 0.0},
    "age_regression": {"unit": "years", "offset": 0.0, "scale": 1.0, "dropout": 0.0},
    "age_softbin": {"bins": 40, "age_range": [42.0, 82.0], "unit": "years", "dropout": 0.0},
    "classification": {"num_classes": 2, "dropout": 0.0},
}


def resolve_head_args(head: str, head_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in and values checked; unknown names and bad values raise ValueError."""
    if head not in HEAD_ARGS:
        raise ValueError(f"unknown head {head!r}; valid heads are {sorted(HEAD_ARGS)}")
    given = dict(head_args or {})
    unknown = sorted(set(given) - set(HEAD_ARGS[head]))
    if unknown:
        raise ValueError(f"head {head!r}: unknown head_args {unknown}; valid are {sorted(HEAD_ARGS[head])}")
    args = {**HEAD_ARGS[head], **given}
    dropout = args["dropout"]
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"head {head!r}: dropout must be a number in [0, 1), got {dropout!r}")
    if "unit" in args and args["unit"] not in AGE_UNITS:
        raise ValueError(f"head {head!r}: unit must be one of {AGE_UNITS}, got {args['unit']!r}")
    if head == "age_regression":
        for name in ("offset", "scale"):
            if not isinstance(args[name], (int, float)) or not math.isfinite(args[name]):
                raise ValueError(f"head 'age_regression': {name} must be a finite number, got {args[name]!r}")
        if args["scale"] == 0:
            raise ValueError("head 'age_regression': scale must not be 0")
    if head == "age_softbin":
        bins, rng = args["bins"], args["age_range"]
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
            raise ValueError(f"head 'age_softbin': bins must be an integer >= 2, got {bins!r}")
        if (
            not isinstance(rng, (list, tuple))
            or len(rng) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in rng)
            or not rng[0] < rng[1]
        ):
            raise ValueError(f"head 'age_softbin': age_range must be [low, high] with low < high, got {rng!r}")
        args["age_range"] = [float(rng[0]), float(rng[1])]
    if head == "classification":
        k = args["num_classes"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 2:
            raise ValueError(f"head 'classification': num_classes must be an integer >= 2, got {k!r}")
    return args


class _Head(nn.Module):
    """Dropout + one Linear layer named `fc`."""

    def __init__(self, num_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, out_features)

    def predict_outputs(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class OutcomeHead(_Head):
    """Binary outcome: a logit per case; `probability` = sigmoid(logit) = P(adverse outcome)."""

    def __init__(self, num_features: int, *, dropout: float = 0.0) -> None:
        super().__init__(num_features, 1, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features)).squeeze(-1)

    def predict_outputs(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probability": torch.sigmoid(raw)}


class AgeRegressionHead(_Head):
    """Age as one number, in `unit` (years, or weeks for neonates): `offset + scale * fc(x)`."""

    def __init__(
        self, num_features: int, *, unit: str = "years", offset: float = 0.0, scale: float = 1.0, dropout: float = 0.0
    ) -> None:
        super().__init__(num_features, 1, dropout)
        self.unit = unit
        self.offset = float(offset)
        self.scale = float(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features)).squeeze(-1) * self.scale + self.offset

    def predict_outputs(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"age": raw}


class AgeSoftBinHead(_Head):
    """Age as a distribution over equal bins (Peng et al. 2021); raw output is log-probabilities (N, bins)."""

    centers: torch.Tensor

    def __init__(
        self,
        num_features: int,
        *,
        bins: int = 40,
        age_range: tuple[float, float] | list[float] = (42.0, 82.0),
        unit: str = "years",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_features, bins, dropout)
        self.unit = unit
        self.age_range = (float(age_range[0]), float(age_range[1]))
        self.bin_width = (self.age_range[1] - self.age_range[0]) / bins
        centers = self.age_range[0] + self.bin_width * (torch.arange(bins, dtype=torch.float32) + 0.5)
        # not persistent: the centres follow from head_args, so they are not weights to store or match
        self.register_buffer("centers", centers, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(self.dropout(features)), dim=-1)

    def predict_outputs(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        prob = raw.exp()
        centers = self.centers.to(prob.dtype)
        age = (prob * centers).sum(-1)
        var = (prob * (centers - age.unsqueeze(-1)) ** 2).sum(-1)
        return {"age": age, "age_sd": var.clamp_min(0).sqrt()}

    def soft_labels(self, age: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
        """Training targets (N, bins): a Gaussian N(age, sigma) integrated over each bin, renormalised.

        Mass outside `age_range` is dropped before renormalising, as in Peng et al.'s `num_to_bin`.
        """
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        age = torch.as_tensor(age, dtype=torch.float32, device=self.centers.device).reshape(-1, 1)
        half = self.bin_width / 2
        cdf_hi = torch.special.ndtr((self.centers + half - age) / sigma)
        cdf_lo = torch.special.ndtr((self.centers - half - age) / sigma)
        mass = (cdf_hi - cdf_lo).clamp_min(0)
        total = mass.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError(f"an age lies too far outside the head's age_range {list(self.age_range)}")
        return mass / total


class ClassificationHead(_Head):
    """K-class logits (N, K); `probabilities` = softmax."""

    def __init__(self, num_features: int, *, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__(num_features, num_classes, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))

    def predict_outputs(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probabilities": torch.softmax(raw, dim=-1)}


_HEADS: dict[str, type[_Head]] = {
    "outcome": OutcomeHead,
    "age_regression": AgeRegressionHead,
    "age_softbin": AgeSoftBinHead,
    "classification": ClassificationHead,
}


def build_head(head: str, num_features: int, head_args: Mapping[str, Any] | None = None) -> _Head:
    """A fresh head of type `head` on `num_features` pooled features."""
    args = resolve_head_args(head, head_args)
    return _HEADS[head](num_features, **args)


def predict_outputs(head: nn.Module, raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named predictions from a head's raw output (see the table in this module's docstring)."""
    if not isinstance(head, _Head):
        raise TypeError(f"expected an age2hie_hub head, got {type(head).__name__}")
    return head.predict_outputs(raw)
