"""ONNX Runtime session for an exported checkpoint. Never imports torch.

Providers: CUDA when a CUDA device is present (and onnxruntime-gpu offers it), else CPU. The provider that
actually runs is read back from the session, because ONNX Runtime silently falls back to CPU when the CUDA
libraries cannot be loaded.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from pathlib import Path

import numpy as np

from age2hie_hub.errors import CheckpointError

log = logging.getLogger(__name__)

INPUT_NAME = "volume"
WEIGHTS_KEY = "age2hie.weights_sha256"  # metadata: sha256 of the model.safetensors the graph was exported from
DEVICES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA devices the driver sees (0 without a driver), without torch."""
    names = ["nvcuda.dll"] if os.name == "nt" else ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def choose_providers(device: str) -> list[str]:
    """The provider list for `device` ("auto", "cpu", "cuda")."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available and cuda_device_count() > 0
    if device == "cuda" and not has_cuda:
        raise ValueError(
            "device='cuda' was requested but ONNX Runtime has no usable CUDA provider "
            f"(providers {available}, CUDA devices {cuda_device_count()}); use device='cpu' or 'auto'"
        )
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def physical_cores() -> int:
    """Cores this process may use (affinity-aware); ONNX Runtime's default can oversubscribe containers."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxSession:
    """A loaded model.onnx: float32 (N, C, X, Y, Z) in, named numpy outputs out."""

    backend = "onnx"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(
                f"{self.path}: no ONNX model file; export one with `age2hie-export onnx --model NAME -o {self.path}`"
            )
        # Measured on CPU (benchmarks/bench_inference.py --ort-options, docs/inference.md): one intra-op thread
        # per usable core is what pays; an inter-op pool halves the speed, and the graph level, spinning,
        # denormals-as-zero, memory pattern and arena change nothing beyond noise for our 3D ResNets.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or physical_cores()
        options.log_severity_level = 3  # errors only: the CPU fallback is reported through `provider`
        providers = choose_providers(device)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors on corrupt or foreign files
            raise CheckpointError(f"{self.path}: ONNX Runtime cannot load this file ({exc})") from exc
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != "CUDAExecutionProvider":
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
