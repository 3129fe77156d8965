"""`Predictor`: a checkpoint plus a backend (torch or ONNX Runtime); volumes in, `Prediction`s out."""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from age2hie_hub._threads import scan_threads
from age2hie_hub.errors import Age2HieError, CheckpointError
from age2hie_hub.inference.inputs import PreparedInput, describe, prepare
from age2hie_hub.inference.prediction import Prediction

if TYPE_CHECKING:
    from age2hie_hub.hub.config import CheckpointConfig
    from age2hie_hub.hub.resolve import ResolvedCheckpoint

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
BACKEND_CHOICES = ("auto", *BACKENDS)
OPENVINO_NEEDS_ONNX = "openvino=True is an ONNX Runtime execution provider: use backend='onnx'"
EXECUTORS = ("thread", "process")
# Per-scan failures that predict_many reports and moves past; anything else is a bug and propagates.
INPUT_ERRORS = (Age2HieError, OSError, ValueError, TypeError)
# Threads one scan's reading and preprocessing may spread over in predict()/prepare() (predict_many spreads
# scans over its workers instead). Beyond a few, a 1-10 M voxel scan leaves too little to share out.
SCAN_THREADS = 4


class Backend(Protocol):
    backend: str

    @property
    def device(self) -> str: ...

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class ModelInfo:
    """Which weights run, for the provenance fields of every Prediction."""

    name: str
    repo_id: str | None = None
    revision: str | None = None
    model_file: str | None = None  # the file that runs: model.safetensors (torch) or the ONNX file (onnx)
    model_file_sha256: str | None = None
    synthetic: bool = False

    @property
    def weights_sha256(self) -> str | None:
        """Deprecated: `model_file_sha256`."""
        warnings.warn("ModelInfo.weights_sha256 is now model_file_sha256; the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return self.model_file_sha256


@dataclass
class RunStats:
    """Where the time of the last predict_many went (seconds), for benchmarks and logs."""

    scans: int = 0
    failed: int = 0
    wall_s: float = 0.0
    forward_s: float = 0.0  # time inside the backend's forward
    wait_s: float = 0.0  # time the forward loop waited on reading/preprocessing
    startup_s: float = 0.0  # until the first batch was ready: the pipeline's unavoidable fill time
    forward_threads: int = 0  # torch intra-op threads during the run (0: not set by predict_many)

    @property
    def forward_busy(self) -> float:
        """Share of the wall time spent in the forward pass."""
        return self.forward_s / self.wall_s if self.wall_s else 0.0

    @property
    def steady_busy(self) -> float:
        """Share of the wall time after the first batch was ready that was spent in the forward pass."""
        steady = self.wall_s - self.startup_s
        return self.forward_s / steady if steady > 0 else 0.0


def is_synthetic(provenance: dict[str, Any]) -> bool:
    return bool(provenance.get("synthetic", False))


def choose_backend(folder: Path, onnx_file: str | os.PathLike[str] | None = None) -> str:
    """backend="auto": "onnx" when an ONNX file is given or the checkpoint folder holds model.onnx, else "torch".

    ONNX Runtime starts without importing torch, and every model.onnx the package writes was checked against
    torch when it was exported (docs/inference.md); a checkpoint without an export runs on torch.
    """
    from age2hie_hub.hub.checkpoint import ONNX_NAME

    return "onnx" if onnx_file or (Path(folder) / ONNX_NAME).is_file() else "torch"


class Predictor:
    """Run one checkpoint on scans. Build with `Predictor.from_pretrained(name, backend=..., device=...)`.

    `predict(x)` takes a path (NIfTI, MHA/NRRD, DICOM folder or zip, 4D DWI with b-values), a `Volume`,
    a nibabel image or an (array, affine) pair; the checkpoint's own preprocessing is applied.
    """

    def __init__(self, backend: Backend, config: CheckpointConfig, model: ModelInfo) -> None:
        if config.uncertainty or config.input_qc:
            from age2hie_hub.inference import qc, uncertainty

            try:
                uncertainty.check_record(config.uncertainty, config.task)
                qc.check_record(config.input_qc, config.preprocess.channels)
            except ValueError as exc:
                raise CheckpointError(f"model {model.name!r}: config.json: {exc}") from None
        self.backend = backend
        self.config = config
        self.model_info = model
        self.last_stats = RunStats()

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name: str | os.PathLike[str] = "age2hie",
        *,
        backend: str = "torch",
        device: str = "auto",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | None = None,
        onnx_file: str | os.PathLike[str] | None = None,
        optimize: str = "auto",
        openvino: bool | None = None,
    ) -> "Predictor":
        """Load a checkpoint by alias, `hf-hub:org/name[@revision]` or folder; the name is resolved once.

        backend="onnx" reads config.json and model.onnx (or `onnx_file`) and never imports torch. On CPU it runs
        on ONNX Runtime's OpenVINO execution provider when that is installed (`openvino=None`), always
        (`openvino=True`, an error without it) or never (`openvino=False`). backend="auto" (what age2hie-predict
        uses) is "onnx" when `onnx_file` is given or the checkpoint holds a model.onnx, else "torch".
        """
        if backend not in BACKEND_CHOICES:
            raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
        if openvino and backend == "torch":
            raise ValueError(OPENVINO_NEEDS_ONNX)
        # hub's resolver, never its loader here: the ONNX path must not import torch.
        from age2hie_hub.hub.resolve import resolve_checkpoint

        name = str(name)
        resolved = resolve_checkpoint(
            name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
            include_onnx=backend != "torch" and onnx_file is None,
        )
        if backend == "auto":
            backend = choose_backend(resolved.folder, onnx_file)
            log.info("backend %s for %s (auto)", backend, name)
        if backend == "onnx":
            return cls._from_onnx(name, resolved, device, onnx_file, openvino)
        if openvino:
            raise ValueError(OPENVINO_NEEDS_ONNX)
        from age2hie_hub.hub.checkpoint import WEIGHTS_NAME
        from age2hie_hub.hub.resolve import load_resolved
        from age2hie_hub.inference.torch_backend import TorchBackend, inference_device

        model = load_resolved(resolved, device=str(inference_device(device)))
        config, source = model.checkpoint_config, model.checkpoint_source
        info = ModelInfo(
            name=name,
            repo_id=source.repo_id,
            revision=source.commit or source.revision,  # the exact commit when the Hub told us one
            model_file=WEIGHTS_NAME,
            model_file_sha256=source.sha256,
            synthetic=is_synthetic(config.provenance),
        )
        return cls(TorchBackend(model, device=device, optimize=optimize), config, info)

    @classmethod
    def _from_onnx(
        cls, name: str, resolved: ResolvedCheckpoint, device: str, onnx_file: Any, openvino: bool | None = None,
    ) -> "Predictor":
        from age2hie_hub.hub.checkpoint import ONNX_NAME, WEIGHTS_NAME, file_sha256, read_config
        from age2hie_hub.onnx.runtime import OnnxBackend

        folder, parsed = resolved.folder, resolved.parsed
        config = read_config(folder)
        path = Path(onnx_file) if onnx_file else folder / ONNX_NAME
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no ONNX export for model {name!r}; create it with "
                f"`age2hie-export onnx --model {name} -o {path}` or use --backend torch"
            )
        onnx_backend = OnnxBackend(path, device=device, openvino=openvino)
        _check_onnx_matches_weights(onnx_backend, folder / WEIGHTS_NAME, name)
        info = ModelInfo(
            name=name,
            repo_id=parsed.repo_id,
            revision=resolved.commit or ((parsed.revision or "main") if parsed.repo_id else None),
            model_file=path.name,
            model_file_sha256=file_sha256(path),
            synthetic=is_synthetic(config.provenance),
        )
        return cls(onnx_backend, config, info)

    # -- prediction -----------------------------------------------------------------------------------
    @property
    def synthetic(self) -> bool:
        """True when the weights were trained on synthetic data only: say so wherever results appear."""
        return self.model_info.synthetic

    def prepare(self, x: Any, second_channel: Any = None) -> PreparedInput:
        """Read, check and preprocess one input exactly as predict() does (torch-free), its larger pieces spread
        over up to SCAN_THREADS of the cores (same values)."""
        with scan_threads(SCAN_THREADS):
            return prepare(x, second_channel, self.config)

    def predict(self, x: Any, *, second_channel: Any = None) -> Prediction:
        """Predict one scan; `second_channel` is the Z-ADC (or other) volume of a 2-channel model."""
        item = self.prepare(x, second_channel)
        return self._predict_prepared([item])[0]

    def predict_many(
        self,
        inputs: Iterable[Any],
        *,
        second_channels: Sequence[Any] | None = None,
        batch_size: int = 4,
        workers: int | None = None,
        executor: str = "thread",
        progress: bool = True,
        errors: str = "raise",
    ) -> list[Prediction | Exception]:
        """Predict many scans, reading/preprocessing upcoming ones in background workers.

        executor="thread" (default: the heavy steps release the GIL, so threads keep up with processes
        without their start-up cost; docs/inference.md) or "process". errors="raise" stops at the first unreadable
        scan; errors="return" puts the exception in its place in the result list and goes on.
        The torch backend on CPU runs its forward on the cores the workers leave (at least one thread) for the
        duration of the run, see `forward_threads`.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        items = list(inputs)
        results: list[Prediction | Exception | None] = [None] * len(items)
        for index, result in self.iter_predictions(
            items, second_channels=second_channels, batch_size=batch_size, workers=workers, executor=executor,
            progress=progress,
        ):
            if isinstance(result, Exception) and errors == "raise":
                raise result
            results[index] = result
        return results  # type: ignore[return-value]

    def iter_predictions(
        self,
        inputs: Sequence[Any],
        *,
        second_channels: Sequence[Any] | None = None,
        batch_size: int = 4,
        workers: int | None = None,
        executor: str = "thread",
        progress: bool = True,
        on_prepared: Callable[[int, PreparedInput], None] | None = None,
    ) -> Iterator[tuple[int, Prediction | Exception]]:
        """Yield (input index, Prediction or the exception that scan raised), in completion order.

        `on_prepared(index, item)` is called with each scan's preprocessed input before it is predicted (the
        visual report keeps them, to draw what the model saw without preprocessing the scan again).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        items = list(inputs)
        seconds = list(second_channels) if second_channels is not None else [None] * len(items)
        if len(seconds) != len(items):
            raise ValueError(f"{len(items)} inputs but {len(seconds)} second channels; give one per input")
        workers = workers or default_workers()
        stats = self.last_stats = RunStats()
        start = time.perf_counter()
        # Keep a bounded number of scans in flight: enough to fill the next batch while this one runs,
        # few enough that memory stays at about two batches of preprocessed volumes.
        lookahead = batch_size + workers
        with _pool(executor, workers) as pool, _progress_bar(len(items), progress) as bar, \
                forward_threads(self.backend, workers) as threads:
            stats.forward_threads = threads
            pending: deque[tuple[int, Future[PreparedInput]]] = deque()
            next_index = 0

            def fill() -> None:
                nonlocal next_index
                while next_index < len(items) and len(pending) < lookahead:
                    pending.append((next_index, pool.submit(prepare, items[next_index], seconds[next_index], self.config)))
                    next_index += 1

            fill()
            batch: list[tuple[int, PreparedInput]] = []
            while pending:
                index, future = pending.popleft()
                waited = time.perf_counter()
                try:
                    item = future.result()
                except INPUT_ERRORS as exc:
                    stats.wait_s += time.perf_counter() - waited
                    stats.failed += 1
                    log.info("scan %s failed: %s", describe(items[index]), exc)
                    bar.update(1)
                    fill()
                    yield index, exc
                    continue
                stats.wait_s += time.perf_counter() - waited
                fill()
                if on_prepared is not None:
                    on_prepared(index, item)
                batch.append((index, item))
                if not stats.startup_s and (len(batch) == batch_size or not pending):
                    stats.startup_s = time.perf_counter() - start
                if len(batch) == batch_size or not pending:
                    yield from self._run_batch(batch, stats, bar)
                    batch = []
            if batch:  # the last scans, when a failure came after them
                yield from self._run_batch(batch, stats, bar)
        stats.wall_s = time.perf_counter() - start

    def _run_batch(
        self, batch: list[tuple[int, PreparedInput]], stats: RunStats, bar: Any
    ) -> Iterator[tuple[int, Prediction]]:
        predictions = self._predict_prepared([item for _, item in batch], stats)
        stats.scans += len(batch)
        bar.update(len(batch))
        for (index, _), prediction in zip(batch, predictions):
            yield index, prediction

    def _predict_prepared(self, items: list[PreparedInput], stats: RunStats | None = None) -> list[Prediction]:
        batch = np.stack([item.array for item in items])
        started = time.perf_counter()
        outputs = self.backend.run(batch)
        if stats is not None:
            stats.forward_s += time.perf_counter() - started
        return [self._prediction(item, {k: v[i] for k, v in outputs.items()}) for i, item in enumerate(items)]

    def _prediction(self, item: PreparedInput, out: dict[str, np.ndarray]) -> Prediction:
        cfg, info = self.config, self.model_info
        fields: dict[str, Any] = {"label": None, "threshold": None}
        extra_warnings: list[str] = []
        if cfg.task == "hie_outcome":
            p = float(out["probability"])
            fields.update(probability=p, threshold=float(cfg.threshold),
                          label=cfg.labels[1] if p >= cfg.threshold else cfg.labels[0])
        elif cfg.task == "brain_age":
            fields.update(age=float(out["age"]), age_unit=cfg.age_unit)
            if "age_sd" in out:
                fields["age_sd"] = float(out["age_sd"])
            if "age" in cfg.training_range:
                lo, hi = (float(v) for v in cfg.training_range["age"])
                if not lo <= fields["age"] <= hi:
                    extra_warnings.append(
                        f"predicted age {fields['age']:.1f} {cfg.age_unit} is outside the training ages "
                        f"[{lo:g}, {hi:g}]: extrapolation"
                    )
        elif cfg.task == "classification":
            probs = np.asarray(out["probabilities"], dtype=float).ravel()
            fields.update(probabilities=tuple(probs.tolist()), label=cfg.labels[int(np.argmax(probs))])
        else:  # regression: the head's single number
            key = "value" if "value" in out else "age"
            fields["value"] = float(out[key])
        if cfg.uncertainty:
            from age2hie_hub.inference.uncertainty import apply

            fields.update(vars(apply(cfg.uncertainty, value=fields.get("age", fields.get("value")),
                                     p_positive=fields.get("probability"), labels=cfg.labels)))
        return Prediction(
            source=item.source,
            task=cfg.task,
            model=info.name,
            repo_id=info.repo_id,
            revision=info.revision,
            model_file=info.model_file,
            model_file_sha256=info.model_file_sha256,
            synthetic_model=info.synthetic,
            backend=self.backend.backend,
            device=self.backend.device,
            input_shape=item.input_shape,
            input_spacing_mm=item.input_spacing_mm,
            input_orientation=item.input_orientation,
            orientation_changed=item.orientation_changed,
            input_unit=item.input_unit,
            unit_guessed=item.unit_guessed,
            warnings=item.warnings + tuple(extra_warnings),
            notes=item.notes,
            **fields,
        )


@contextmanager
def forward_threads(backend: Any, workers: int) -> Iterator[int]:
    """While predict_many runs: torch's intra-op threads on CPU = the cores its `workers` leave, at least 1, never
    more than were set; restored afterwards. Yields that number (0 for other backends and devices: untouched).

    With as many torch threads as cores, the forward's OpenMP threads spin-wait for the cores the readers hold,
    and the forward took about four times as long, at twice the CPU per scan, as on the threads left over
    (benchmarks/bench_vs_monai.py's throughput set-up; dated numbers in docs/inference.md).
    """
    if getattr(backend, "backend", None) != "torch" or not str(backend.device).startswith("cpu"):
        yield 0
        return
    import torch  # already imported by the torch backend

    from age2hie_hub.onnx.providers import physical_cores

    before = torch.get_num_threads()
    threads = max(1, min(before, physical_cores() - workers))
    if threads == before:
        yield threads
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def _pool(executor: str, workers: int) -> Executor:
    if executor == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="age2hie-prep")
    # forkserver, not fork: forking a process that runs torch/ONNX Runtime thread pools can deadlock.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))


def _check_onnx_matches_weights(onnx_backend: Any, weights: Path, name: str) -> None:
    """Refuse a model.onnx exported from other weights than the checkpoint's model.safetensors."""
    from age2hie_hub.hub.checkpoint import file_sha256
    from age2hie_hub.onnx.runtime import WEIGHTS_KEY

    exported_from = onnx_backend.metadata.get(WEIGHTS_KEY)
    if exported_from is None or not weights.is_file():
        log.info("%s: cannot check that it matches %s (no record of its source weights)",
                 onnx_backend.path, weights)
        return
    if file_sha256(weights) != exported_from:
        raise CheckpointError(
            f"{onnx_backend.path} was exported from other weights than {weights}; re-export it with "
            f"`age2hie-export onnx --model {name} -o {onnx_backend.path}`"
        )


class _NoBar:
    """Stands in for tqdm when no bar is wanted (tqdm's import is a visible part of a cold one-scan run)."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="scan", desc="predict")


def default_workers() -> int:
    """Background preprocessing threads: one per core, at most 4.

    On 2 cores two reader threads beat one for every backend (bench_inference.py; docs/inference.md): the heavy
    reading steps release the GIL and the forward cannot use both cores all the time anyway.
    """
    from age2hie_hub.onnx.providers import physical_cores

    return min(4, physical_cores())

