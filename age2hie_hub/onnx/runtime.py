"""The ONNX backend: an ONNX Runtime session for an exported checkpoint. Never imports torch.

Which execution provider runs is chosen in `providers.py` (CUDA, OpenVINO on CPU, or ONNX Runtime's CPU kernels).
The provider that actually runs is read back from the session, because ONNX Runtime silently falls back to CPU
when the CUDA libraries cannot be loaded.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.errors import CheckpointError
from age2hie_hub.onnx.providers import (
    CPU, CUDA, OPENVINO, choose_providers, openvino_cpu_device, openvino_options, physical_cores,
)

log = logging.getLogger(__name__)

INPUT_NAME = "volume"
WEIGHTS_KEY = "age2hie.weights_sha256"  # metadata: sha256 of the model.safetensors the graph was exported from

class OnnxBackend:
    """A loaded model.onnx: float32 (N, C, X, Y, Z) in, named numpy outputs out (the counterpart of
    `inference.torch_backend.TorchBackend`; `Predictor` runs either)."""

    backend = "onnx"

    def __init__(
        self, path: str | Path, device: str = "auto", threads: int | None = None, openvino: bool | None = None,
    ) -> None:
        """openvino: None = OpenVINO on CPU when installed, True = require it, False = ONNX Runtime's CPU kernels."""
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(
                f"{self.path}: no ONNX model file; export one with `age2hie-export onnx --model NAME -o {self.path}`"
            )
        self.threads = threads or physical_cores()
        provider = choose_providers(device, openvino)[0]
        session = None
        if provider == OPENVINO:
            try:
                session = self._create(OPENVINO)
            except CheckpointError as exc:
                if openvino:
                    raise
                log.warning("%s; running on ONNX Runtime's CPU provider instead", exc)
                provider = CPU
        self.session = session or self._create(provider)
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise ValueError(f"{self.path}: CUDA was requested but ONNX Runtime fell back to {self.provider}")
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise CheckpointError(
                f"{self.path}: expected one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}; "
                "re-export it with `age2hie-export onnx`"
            )
        self.input_shape = tuple(inputs[0].shape)  # e.g. ('batch', 1, 64, 64, 48)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        log.info("ONNX Runtime session on %s for %s", self.provider, self.path)

    def _create(self, provider: str):
        import onnxruntime as ort

        # Measured on CPU (benchmarks/bench_inference.py --ort-options, docs/inference.md): one intra-op thread
        # per usable core is what pays; an inter-op pool halves the speed, and the graph level, spinning during
        # a run, denormals-as-zero, memory pattern and arena change nothing beyond noise for our 3D ResNets.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        # Its threads spin during a run but stop when it ends: left spinning, they held the cores that the next
        # scan's reading and preprocessing (on two threads in predict()) needed. A warm T1 predict on 2 cores
        # 35.0 -> 30.3-32.1 ms, the forward itself ~0.5 ms slower (docs/inference.md).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.log_severity_level = 3  # errors only: the CPU fallback is reported through `provider`
        providers: list[str] | None = [provider] if provider == CPU else [provider, CPU]
        if provider == OPENVINO:
            options.log_severity_level = 4  # a refusal is raised below with ONNX Runtime's reason, not logged twice
            # OpenVINO takes the whole graph or nothing: a graph split between two providers would be reported
            # as OpenVINO while part of it ran elsewhere.
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            options.add_provider_for_devices([openvino_cpu_device()[0]], openvino_options(self.threads))
            providers = None
        try:
            return ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors on corrupt or foreign files
            where = f" with {provider}" if provider != CPU else ""
            raise CheckpointError(f"{self.path}: ONNX Runtime cannot load this file{where} ({exc})") from exc

    @property
    def device(self) -> str:
        return self.provider

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Forward one batch (N, C, X, Y, Z) float32; returns {output name: array with N rows}."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        expected = self.input_shape[1:]
        if batch.ndim != 5 or any(isinstance(e, int) and e != s for e, s in zip(expected, batch.shape[1:])):
            raise ValueError(f"{self.path}: input batch has shape {batch.shape}, the model takes (N, *{expected})")
        outputs = self.session.run(self.output_names, {INPUT_NAME: batch})
        return dict(zip(self.output_names, outputs))


def __getattr__(name: str) -> Any:
    """`OnnxSession`, OnnxBackend's former name: still importable, with a DeprecationWarning."""
    if name == "OnnxSession":
        warnings.warn("age2hie_hub.onnx.runtime.OnnxSession is now OnnxBackend; the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return OnnxBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
