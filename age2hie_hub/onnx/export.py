"""Export an Age2HieNet to ONNX and prove the file right away with ONNX Runtime.

The graph takes "volume" (N, C, X, Y, Z) float32 with a dynamic batch axis and returns the model's
`predict_outputs` under their own names ("probability" for outcome models, "age" [+ "age_sd"] for
brain-age models, "probabilities" for classifiers), so the ONNX backend needs no torch-side post-processing.
torch 2.13's default exporter (torch.export + onnxscript, `dynamo=True`) is used; the TorchScript exporter
remains as `exporter="torchscript"` for models that torch.export cannot capture.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from age2hie_hub._atomic import publish, temp_sibling
from age2hie_hub.onnx.providers import openvino_available
from age2hie_hub.onnx.runtime import INPUT_NAME, WEIGHTS_KEY, OnnxBackend

log = logging.getLogger(__name__)

OPSET = 18  # pinned: a new torch must not silently change the file users get
TOLERANCE = 1e-4  # max |ONNX - torch| allowed on probabilities (relative for ages and values)
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class ExportReport:
    path: str
    opset: int
    exporter: str
    outputs: tuple[str, ...]
    input_shape: tuple[int, ...]  # the verification batch
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per output, ONNX Runtime vs torch
    provider: str = ""  # the ONNX Runtime providers checked, comma-separated
    seconds: float = 0.0
    size_bytes: int = 0

    @property
    def ok(self) -> bool:
        return all(d <= TOLERANCE for d in self.max_abs_diff.values())


class _Outputs(torch.nn.Module):
    """Age2HieNet forward + predict_outputs, returning a tuple in a fixed output order."""

    def __init__(self, model: torch.nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, volume: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.predict_outputs(self.model(volume))
        return tuple(out[k] for k in self.keys)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs missing-torchvision notices and deprecation warnings that are not the user's."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            yield
    finally:
        logger.setLevel(level)


def example_input(model: torch.nn.Module, config: object | None, batch: int) -> torch.Tensor:
    """A deterministic input of the checkpoint's preprocessed shape (C, X, Y, Z)."""
    pre = getattr(config, "preprocess", None)
    if pre is None:
        raise ValueError("export needs the checkpoint config (preprocess.shape and channels) to size the input")
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, pre.channels, *pre.shape, generator=generator)


def _relative(diff: np.ndarray, ref: np.ndarray, name: str) -> float:
    # Probabilities live in [0, 1]: absolute error. Ages and values have units: error relative to |ref|.
    if name in ("probability", "probabilities"):
        return float(diff.max(initial=0.0))
    return float((diff / np.maximum(1.0, np.abs(ref))).max(initial=0.0))


def _stamp(proto: object, model: torch.nn.Module, config: object | None) -> None:
    """Record which weights and task the graph holds, so the ONNX backend can refuse a stale file."""
    from age2hie_hub import __version__

    source = getattr(model, "checkpoint_source", None)
    meta = {
        WEIGHTS_KEY: getattr(source, "sha256", None),
        "age2hie.task": getattr(config, "task", None),
        "age2hie.library_version": __version__,
    }
    del proto.metadata_props[:]  # type: ignore[attr-defined]
    for key, value in meta.items():
        if value is not None:
            entry = proto.metadata_props.add()  # type: ignore[attr-defined]
            entry.key, entry.value = key, str(value)


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    config: object | None = None,
    opset: int = OPSET,
    exporter: str = "dynamo",
    verify_batch: int = 2,
) -> ExportReport:
    """Write `model` to `path` as ONNX, check it, run it in ONNX Runtime and compare with torch.

    The file appears at `path` only after the checker and the comparison pass (temp file, then rename),
    so a failed export never leaves a file that the ONNX backend would pick up.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization and friends), got {opset}")
    import onnx

    config = config if config is not None else getattr(model, "checkpoint_config", None)
    started = time.perf_counter()
    path = Path(path)
    model = model.eval().to("cpu")
    x = example_input(model, config, max(1, verify_batch))
    with torch.inference_mode():
        reference = model.predict_outputs(model(x))
    keys = tuple(reference)
    wrapper = _Outputs(model, keys).eval()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with _quiet_exporter(), torch.no_grad():
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.onnx.export(
                    wrapper, (x,), None, input_names=[INPUT_NAME], output_names=list(keys),
                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True,
                    external_data=False, verbose=False,
                )
                program.save(str(tmp), external_data=False)
            else:
                torch.onnx.export(
                    wrapper, (x,), str(tmp), input_names=[INPUT_NAME], output_names=list(keys),
                    dynamic_axes={INPUT_NAME: {0: "batch"}, **{k: {0: "batch"} for k in keys}},
                    opset_version=opset, dynamo=False,
                )
        proto = onnx.load(str(tmp))
        _stamp(proto, model, config)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        found = [o.name for o in proto.graph.output]
        if found != list(keys):
            raise RuntimeError(f"exported outputs {found} differ from the model's {list(keys)}")

        # Verify on a different batch size than the one exported, so the dynamic axis is exercised too.
        check_x = example_input(model, config, max(1, verify_batch) + 1)
        with torch.inference_mode():
            expected = {k: v.float().numpy() for k, v in model.predict_outputs(model(check_x)).items()}
        # Every CPU provider that may run this file here: ONNX Runtime's own kernels, and OpenVINO when installed.
        sessions = [OnnxBackend(tmp, device="cpu", openvino=False)]
        if openvino_available():
            sessions.append(OnnxBackend(tmp, device="cpu", openvino=True))
        diffs = {k: 0.0 for k in keys}
        for session in sessions:
            got = session.run(check_x.numpy())
            for k in keys:
                diffs[k] = max(diffs[k], _relative(np.abs(got[k] - expected[k]), expected[k], k))
        report = ExportReport(
            path=str(path), opset=opset, exporter=exporter, outputs=keys, input_shape=tuple(check_x.shape),
            max_abs_diff=diffs, provider=", ".join(s.provider for s in sessions),
            seconds=time.perf_counter() - started,
            size_bytes=tmp.stat().st_size,
        )
        if not report.ok:
            raise RuntimeError(
                f"{path}: ONNX Runtime differs from torch by {diffs} (> {TOLERANCE}); the file was not written"
            )
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s (opset %d, outputs %s, max diff %s)", path, opset, keys, report.max_abs_diff)
    return report
