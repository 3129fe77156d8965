"""What is optimised and measured for each head: the loss, the per-case prediction, the metrics.

| head           | target              | loss                                        | prediction         |
|----------------|---------------------|---------------------------------------------|--------------------|
| outcome        | 0/1                 | BCE-with-logits, positive class weighted    | P(class 1)         |
| classification | class id            | cross-entropy, class weighted               | probabilities (K)  |
| age_regression | number              | smooth L1 on (pred - y) / head scale        | value              |
| age_softbin    | number              | KL(soft label || predicted bins)            | expected value     |
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from age2hie_hub.train import metrics as M

__all__ = ["Objective", "class_weights", "head_of"]


def head_of(model: nn.Module) -> nn.Module:
    """The head of an Age2HieNet, through DDP's ``.module`` wrapper if present."""
    return getattr(model, "module", model).head


def class_weights(labels: Sequence[int], n_classes: int) -> list[float]:
    """n / (K * count_k): every class contributes equally to the loss (absent classes get weight 1)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return [float(len(labels) / (n_classes * c)) if c else 1.0 for c in counts]


@dataclass(frozen=True)
class Objective:
    head: str
    weights: tuple[float, ...] = ()  # class weights (outcome: [w0, w1]); empty = unweighted
    softbin_sigma: float = 1.0  # age_softbin: Gaussian label width, in target units

    @classmethod
    def for_head(cls, head: str, train_labels: Sequence[float] | None = None, *, n_classes: int = 2,
                 class_weighted: bool = True, softbin_sigma: float = 1.0) -> "Objective":
        weights: tuple[float, ...] = ()
        if class_weighted and train_labels is not None and head in ("outcome", "classification"):
            weights = tuple(class_weights(np.asarray(train_labels, dtype=np.int64), n_classes))
        return cls(head, weights, softbin_sigma)

    @property
    def is_regression(self) -> bool:
        return self.head in ("age_regression", "age_softbin")

    def loss(self, model: nn.Module, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        head = head_of(model)
        if self.head == "outcome":
            y = target.float()
            per_case = F.binary_cross_entropy_with_logits(raw.float(), y, reduction="none")
            if self.weights:
                w = torch.as_tensor(self.weights, device=raw.device, dtype=torch.float32)
                return (per_case * w[y.long()]).sum() / w[y.long()].sum()
            return per_case.mean()
        if self.head == "classification":
            w = torch.as_tensor(self.weights, device=raw.device, dtype=torch.float32) if self.weights else None
            return F.cross_entropy(raw.float(), target.long(), weight=w)
        if self.head == "age_regression":
            # Divide by the head's scale (the cohort SD) so the loss is unit-free and well conditioned.
            return F.smooth_l1_loss(raw.float() / head.scale, target.float() / head.scale)
        if self.head == "age_softbin":
            soft = head.soft_labels(target.float(), sigma=self.softbin_sigma).to(raw.device)
            return F.kl_div(raw.float(), soft, reduction="batchmean")
        raise ValueError(f"no objective for head {self.head!r}")

    def predict(self, model: nn.Module, raw: torch.Tensor) -> torch.Tensor:
        """Per-case prediction: P(class 1) (N,), probabilities (N, K), or the predicted value (N,)."""
        out = head_of(model).predict_outputs(raw.float())
        if self.head == "outcome":
            return out["probability"]
        if self.head == "classification":
            return out["probabilities"]
        return out["age"]

    def metrics(self, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        if self.head == "outcome":
            return M.binary_metrics(y, pred)
        if self.head == "classification":
            if pred.shape[1] == 2:  # binary via a 2-class head: report the same metrics as the outcome head
                return M.binary_metrics(y, pred[:, 1])
            return M.multiclass_metrics(y, pred)
        return M.regression_metrics(y, pred)
