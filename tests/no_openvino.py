"""Make this process see ONNX Runtime's OpenVINO plugin as not installed, or as installed but finding no CPU device.

The second is what onnxruntime-ep-openvino 1.8.1 does on an AMD EPYC without AVX-512: the plugin library registers
and `ort.get_ep_devices()` lists only the CPU provider. Here the package imports, registration succeeds and the
device list holds no OpenVINO entry, so `age2hie_hub.onnx.providers.openvino_cpu_device` runs its own code and
reaches that state on any machine. Call `simulate` before anything asks for the OpenVINO device (the answer is
cached per process). conftest.py calls it when AGE2HIE_TEST_OPENVINO names a mode (tests/test_portability.py);
subprocess tests of the CPU fallback call it first thing.
"""
from __future__ import annotations

import sys
import types

MODES = ("absent", "no-device")
ENV = "AGE2HIE_TEST_OPENVINO"


def simulate(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{ENV} must be one of {MODES}, got {mode!r}")
    if mode == "absent":
        sys.modules["onnxruntime_ep_openvino"] = None  # `import onnxruntime_ep_openvino` raises ImportError
        return
    import onnxruntime as ort

    plugin = types.ModuleType("onnxruntime_ep_openvino")
    plugin.get_library_path = lambda: "libonnxruntime_providers_openvino_plugin.so"
    sys.modules["onnxruntime_ep_openvino"] = plugin
    devices = ort.get_ep_devices
    ort.register_execution_provider_library = lambda name, path: None
    ort.get_ep_devices = lambda: [d for d in devices() if d.ep_name != "OpenVINOExecutionProvider"]
