"""Which ONNX Runtime execution provider runs a model: CUDA, OpenVINO on the CPU, or ONNX Runtime's own CPU kernels.

Order for device="auto": CUDA when a device is present (and onnxruntime-gpu offers it); else the OpenVINO plugin
when it is installed (the `openvino` extra, pip package onnxruntime-ep-openvino) and finds a CPU device; else the
default CPU provider, with one INFO log line per process saying why (only openvino=True makes it an error).
OpenVINO is preferred on CPUs because ONNX Runtime's own provider runs Conv3d as im2col + GEMM, well below the
machine's matmul peak on our 3D ResNets, while OpenVINO's blocked direct 3D convolutions ran several times
faster, near that peak (dated numbers in docs/inference.md; benchmarks/bench_inference.py). Never imports torch.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import os
from typing import Any

from age2hie_hub._threads import usable_cores

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
CPU = "CPUExecutionProvider"
OPENVINO_PACKAGE = "onnxruntime-ep-openvino"


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


def physical_cores() -> int:
    """Cores this process may use (affinity-aware); ONNX Runtime's default can oversubscribe containers."""
    return usable_cores()


@functools.lru_cache(maxsize=1)
def openvino_cpu_device() -> tuple[Any | None, str]:
    """(OpenVINO's CPU `OrtEpDevice`, "") or (None, why not). Registers the plugin library once per process."""
    import onnxruntime as ort

    if not hasattr(ort, "register_execution_provider_library"):
        return None, f"onnxruntime {ort.__version__} cannot load plugin execution providers (needs >= 1.23)"

    def cpu_device() -> Any | None:
        return next((d for d in ort.get_ep_devices()
                     if d.ep_name == OPENVINO and d.ep_metadata.get("ov_device") == "CPU"), None)

    found = cpu_device()  # already registered by the application itself
    if found is not None:
        return found, ""
    try:
        import onnxruntime_ep_openvino
    except ImportError:
        return None, f"{OPENVINO_PACKAGE} is not installed (pip install 'age2hie-hub[openvino]')"
    try:
        ort.register_execution_provider_library("age2hie-openvino", onnxruntime_ep_openvino.get_library_path())
    except Exception as exc:  # a missing or incompatible shared library: ONNX Runtime's untyped error
        return None, f"ONNX Runtime could not load the {OPENVINO_PACKAGE} plugin ({exc})"
    found = cpu_device()
    return (found, "") if found is not None else (None, "the OpenVINO plugin found no CPU device")


def openvino_available() -> bool:
    """Whether the OpenVINO execution provider can run on this machine's CPU (registering it if needed)."""
    return openvino_cpu_device()[0] is not None


def openvino_options(threads: int) -> dict[str, str]:
    """OpenVINO settings for a session: float32 always (on CPUs with bf16/fp16 units its default computes in lower
    precision, which moved the bundled model's probability in the third decimal: docs/inference.md), and ONNX
    Runtime's thread count."""
    config = {"CPU": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads)}}
    return {"load_config": json.dumps(config)}


def choose_providers(device: str, openvino: bool | None = None) -> list[str]:
    """The providers to try, fastest first, for `device` ("auto", "cpu", "cuda").

    openvino: None = use it on CPU when installed, True = require it (error when unavailable), False = never.
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    available = ort.get_available_providers()
    has_cuda = CUDA in available and cuda_device_count() > 0
    if device == "cuda":
        if openvino:
            raise ValueError("openvino=True runs on the CPU; it cannot be combined with device='cuda'")
        if not has_cuda:
            raise ValueError(
                "device='cuda' was requested but ONNX Runtime has no usable CUDA provider "
                f"(providers {available}, CUDA devices {cuda_device_count()}); use device='cpu' or 'auto'"
            )
    if has_cuda and device != "cpu" and not openvino:
        return [CUDA, CPU]
    if openvino is False:
        return [CPU]
    ov_device, why_not = openvino_cpu_device()
    if ov_device is None:
        if openvino:
            raise ValueError(f"openvino=True was requested but {why_not}")
        _say_why_once(why_not)
        return [CPU]
    return [OPENVINO, CPU]


_SAID: set[str] = set()


def _say_why_once(why_not: str) -> None:
    """One INFO line per process for the CPU fallback; later sessions in the same process log it at DEBUG.

    Not a warning: the plugin missing (macOS, an install without the extra) or finding no CPU device
    (onnxruntime-ep-openvino 1.8.1 on an AMD EPYC without AVX-512, seen) costs speed, not correctness: ONNX
    Runtime's own CPU kernels give the same numbers to float32 rounding.
    """
    level = logging.DEBUG if why_not in _SAID else logging.INFO
    _SAID.add(why_not)
    log.log(level, "OpenVINO execution provider not used (%s); running on ONNX Runtime's CPU provider", why_not)
