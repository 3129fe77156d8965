"""The torch backend: an Age2HieNet in eval mode under `torch.inference_mode`.

Optimisation modes (measured with benchmarks/bench_inference.py; the numbers, dated, in docs/inference.md,
"Numbers behind the code's defaults"):
- "none":   the eager module;
- "frozen": traced per batch shape, then `torch.jit.freeze` (BatchNorm folded into the convolutions) and
            `torch.jit.optimize_for_inference` (oneDNN weight pre-packing, conv+ReLU fusion): faster than eager
            on CPU from a batch of a few scans on, but building it costs about as much as a few batches;
- "auto":   eager on CUDA; on CPU eager for the first batch of each shape and the frozen graph from the
            second batch of that shape on, so one-scan runs never pay the build and long runs get the speed.
torch.compile was measured too: up to minutes to compile on a CPU for no gain over "frozen", so it is not used.
"""
from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Any

import numpy as np
import torch

# The same forward -> predict_outputs tuple module the ONNX export traces (its module path is recorded in
# every exported model.onnx, so it stays where it is).
from age2hie_hub.onnx.export import _Outputs

log = logging.getLogger(__name__)

OPTIMIZE = ("auto", "none", "frozen")
DEVICES = ("auto", "cpu", "cuda")


def inference_device(device: str) -> torch.device:
    """The torch device a prediction runs on: "auto" (CUDA when torch sees one, else CPU), "cpu", "cuda[:N]".

    An unknown name or "cuda" without a device is a ValueError (training picks its device in train.loop).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    return torch.device(device)


class TorchBackend:
    """Numpy (N, C, X, Y, Z) float32 in, {output name: numpy (N, ...)} out."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "auto", optimize: str = "auto") -> None:
        if optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {OPTIMIZE}, got {optimize!r}")
        self._device = inference_device(device)
        self.model = model.to(self._device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.optimize = "none" if optimize == "auto" and self._device.type == "cuda" else optimize
        self._frozen: dict[tuple[int, ...], Any] = {}
        self._seen: Counter[tuple[int, ...]] = Counter()
        self._output_keys: tuple[str, ...] | None = None

    @property
    def device(self) -> str:
        return str(self._device)

    def _frozen_for(self, x: torch.Tensor, keys: tuple[str, ...]) -> Any:
        shape = tuple(x.shape)
        if shape not in self._frozen:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript deprecation notices, not the user's concern
                traced = torch.jit.trace(_Outputs(self.model, keys).eval(), x, check_trace=False)
                self._frozen[shape] = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            log.debug("built a frozen graph for input shape %s", shape)
        return self._frozen[shape]

    def _use_frozen(self, shape: tuple[int, ...]) -> bool:
        if self.optimize == "frozen":
            return True
        if self.optimize == "auto":
            self._seen[shape] += 1
            return self._seen[shape] >= 2
        return False

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)
            if self._use_frozen(tuple(x.shape)):
                keys = self._keys(x)
                out = dict(zip(keys, self._frozen_for(x, keys)(x)))
            else:
                out = self.model.predict_outputs(self.model(x))
            return {k: v.detach().float().cpu().numpy() for k, v in out.items()}

    def _keys(self, x: torch.Tensor) -> tuple[str, ...]:
        if self._output_keys is None:
            self._output_keys = tuple(self.model.predict_outputs(self.model(x[:1])))
        return self._output_keys
