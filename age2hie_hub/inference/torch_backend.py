"""The torch backend: an Age2HieNet in eval mode under `torch.inference_mode`.

Optimisation modes (measured in benchmarks/bench_inference.py and docs/inference.md):
- "none":   eager module;
- "freeze": trace once at the first batch shape, then `torch.jit.freeze` (BatchNorm folded into the
            convolutions, weights turned into constants); re-traced for each new batch shape.
The default ("auto") is the mode the benchmark measured fastest on CPU; on CUDA eager is used with TF32 off.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

OPTIMIZE = ("auto", "none", "freeze")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")
    return torch.device(device)


class _Outputs(torch.nn.Module):
    """forward -> predict_outputs as one traceable module returning a tuple in a fixed key order."""

    def __init__(self, model: torch.nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.predict_outputs(self.model(x))
        return tuple(out[k] for k in self.keys)


class TorchBackend:
    """Numpy (N, C, X, Y, Z) float32 in, {output name: numpy (N, ...)} out."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "auto", optimize: str = "auto") -> None:
        if optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {OPTIMIZE}, got {optimize!r}")
        self._device = resolve_device(device)
        self.model = model.to(self._device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if optimize == "auto":
            optimize = "none" if self._device.type == "cuda" else DEFAULT_CPU_OPTIMIZE
        self.optimize = optimize
        self._traced: dict[tuple[int, ...], Any] = {}
        self._keys: tuple[str, ...] | None = None

    @property
    def device(self) -> str:
        return str(self._device)

    def _compiled(self, x: torch.Tensor) -> Any:
        shape = tuple(x.shape)
        if shape not in self._traced:
            assert self._keys is not None  # set by run() before the first call
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript deprecation notices, not the user's concern
                traced = torch.jit.trace(_Outputs(self.model, self._keys).eval(), x, check_trace=False)
                self._traced[shape] = torch.jit.freeze(traced)
            log.debug("traced and froze the model for input shape %s", shape)
        return self._traced[shape]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)
            if self.optimize == "freeze":
                if self._keys is None:
                    self._keys = tuple(self.model.predict_outputs(self.model(x[:1])))
                values = self._compiled(x)(x)
                out = dict(zip(self._keys, values))
            else:
                out = self.model.predict_outputs(self.model(x))
            return {k: v.detach().float().cpu().numpy() for k, v in out.items()}


# Set from the benchmark on a 2-core CPU (docs/inference.md); "none" until measured otherwise.
DEFAULT_CPU_OPTIMIZE = "none"
