"""The one training loop: AdamW, cosine/step schedule, clipping, AMP on CUDA, early stopping, resumable.

After every epoch ``last.pt`` is rewritten atomically with everything needed to continue: weights, optimizer,
scheduler, grad-scaler, RNG state, history and early-stopping state (plain tensors and dicts only; loaded with
``weights_only=True``). Shuffling and augmentation are functions of (seed, epoch), so a run killed at any point
and resumed from its last completed epoch ends bit-identical (on CPU) to a run that was never interrupted.

Under ``torchrun`` (``torch.distributed`` initialised by ``distributed.setup()``), the model is wrapped in
DistributedDataParallel, batches come from a DistributedSampler, and only rank 0 writes files.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from age2hie_hub._atomic import atomic_path
from age2hie_hub._config import check_keys, to_plain
from age2hie_hub.train import distributed as D
from age2hie_hub.train.data import ArrayDataset, hash_seed, make_loader
from age2hie_hub.train.objective import Objective

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "step", "constant")
CHECKPOINT_FORMAT = 1

__all__ = ["LoopConfig", "FitResult", "fit", "predict", "resolve_device"]


@dataclass(frozen=True)
class LoopConfig:
    """One training stage's optimisation settings. Every field has a default."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    schedule: str = "cosine"  # cosine (to 0 after warm-up), step (x gamma every step_epochs), constant
    warmup_epochs: float = 0.0
    step_epochs: int = 10
    gamma: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    amp: bool = True  # mixed precision, CUDA only (bf16 where supported, else fp16 + grad scaling)
    patience: int = 0  # early stopping: epochs without val-loss improvement; 0 = off
    restore_best: bool = True  # with a validation set: end with the best-val-loss weights
    train_only: str = "all"  # "all" or "head" (body frozen, its BatchNorm statistics too)
    workers: int = 0  # DataLoader worker processes
    threads: int = 0  # torch CPU threads for this process; 0 = torch's default (1 is fastest on a busy CPU)
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.train_only not in ("all", "head"):
            raise ValueError(f"train_only must be 'all' or 'head', got {self.train_only!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoopConfig":
        check_keys(cls, data)
        return cls(**data)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int = -1
    best_val_loss: float = float("nan")
    stopped_early: bool = False
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", D.local_rank() if D.is_distributed() else 0)
        return torch.device("cpu")
    return torch.device(name)


def _lr_lambda(cfg: LoopConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if cfg.schedule == "step":
            return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
        return 1.0

    return factor


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())  # on disk before the rename: --resume must find a whole file after a crash


def _fingerprint(cfg: LoopConfig, seed: int, n_train: int, n_val: int) -> str:
    """What must match for a resume to be meaningful (device, workers and progress may change)."""
    d = cfg.to_dict()
    for k in ("workers", "device", "progress", "threads"):
        d.pop(k)
    return json.dumps({"loop": d, "seed": seed, "n_train": n_train, "n_val": n_val}, sort_keys=True)


def _set_train_mode(model: nn.Module, cfg: LoopConfig) -> None:
    model.train()
    if cfg.train_only == "head":
        getattr(model, "module", model).backbone.eval()  # frozen body: BN running stats stay as loaded


@torch.no_grad()
def predict(model: nn.Module, objective: Objective, dataset: ArrayDataset, *, batch_size: int = 8,
            workers: int = 0, device: torch.device | str = "cpu", amp: bool = False) -> tuple[float, np.ndarray]:
    """(mean loss, predictions) over a dataset in order, model in eval mode."""
    device = torch.device(device)
    net = getattr(model, "module", model)
    net.eval()
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, workers=workers)
    preds, total, n = [], 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            raw = net(x)
        total += float(objective.loss(net, raw.float(), y)) * len(y)
        n += len(y)
        preds.append(objective.predict(net, raw.float()).cpu().numpy())
    return (total / n if n else float("nan")), (np.concatenate(preds) if preds else np.empty(0))


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def fit(model: nn.Module, objective: Objective, train_set: ArrayDataset, val_set: ArrayDataset | None,
        cfg: LoopConfig, run_dir: str | Path | None = None, *, seed: int = 0, resume: bool = False,
        desc: str = "train") -> FitResult:
    """Train ``model`` in place; returns the history. ``run_dir`` receives last.pt (+ best.pt) each epoch."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    distributed = D.is_distributed()
    is_main = D.rank() == 0
    model.to(device)
    if cfg.train_only == "head":
        for p in getattr(model, "module", model).backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (is everything frozen?)")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    world = D.world_size()
    per_rank = math.ceil(len(train_set) / world) if distributed else len(train_set)
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())

    result = FitResult()
    bad_epochs, start_epoch = 0, 0
    fingerprint = _fingerprint(cfg, seed, len(train_set), len(val_set) if val_set is not None else 0)
    run_dir = Path(run_dir) if run_dir is not None else None
    last = run_dir / "last.pt" if run_dir else None
    best_path = run_dir / "best.pt" if run_dir else None
    best_state: dict[str, torch.Tensor] | None = None

    if resume and last is not None and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"{last}: cannot resume, the run's settings or data differ from this one; "
                             "use a new run folder or drop --resume")
        getattr(model, "module", model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        if torch.cuda.is_available() and state.get("rng_cuda"):
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        result.history = list(state["history"])
        result.best_epoch, result.best_val_loss = int(state["best_epoch"]), float(state["best_val_loss"])
        bad_epochs, start_epoch = int(state["bad_epochs"]), int(state["epoch"]) + 1
        if best_path is not None and best_path.is_file():
            best_state = torch.load(best_path, map_location="cpu", weights_only=True)
        log.info("%s: resumed from %s after epoch %d", desc, last, start_epoch)
        if state.get("stopped_early") or start_epoch >= cfg.epochs:
            result.stopped_early = bool(state.get("stopped_early"))
            start_epoch = cfg.epochs  # already finished: fall through to the end-of-run handling
    else:
        torch.manual_seed(hash_seed(seed, 1234))  # dropout etc.: a fixed start independent of what ran before

    ddp_model: nn.Module = model
    if distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    for epoch in range(start_epoch, cfg.epochs):
        te = time.perf_counter()
        loader = make_loader(train_set, batch_size=cfg.batch_size, shuffle=True, epoch=epoch, seed=seed,
                             workers=cfg.workers, distributed=distributed)
        _set_train_mode(ddp_model, cfg)
        total, n, wait, steps = 0.0, 0, 0.0, 0
        tw = time.perf_counter()
        bar = tqdm(loader, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=not (cfg.progress and is_main))
        for x, y in bar:
            wait += time.perf_counter() - tw
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, use_amp):
                raw = ddp_model(x)
            loss = objective.loss(model, raw.float(), y)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
            steps += 1
            bar.set_postfix(loss=f"{total / n:.4f}")
            tw = time.perf_counter()
        train_loss = D.mean_over_ranks(total, n, device)
        row: dict[str, float] = {"epoch": epoch, "train_loss": train_loss, "steps": steps, "lr": optimizer.param_groups[0]["lr"],
                                 "seconds": time.perf_counter() - te, "data_wait_share": wait / max(1e-9, time.perf_counter() - te)}
        improved = False
        if val_set is not None and len(val_set):
            # Every rank evaluates the whole (small) validation set: identical numbers, no gathering needed.
            val_loss, val_pred = predict(model, objective, val_set, batch_size=cfg.batch_size, device=device, amp=use_amp)
            row["val_loss"] = val_loss
            for k, v in objective.metrics(val_set.targets, val_pred).items():
                row[f"val_{k}"] = v
            if not (val_loss >= result.best_val_loss):  # also true when best is nan (first epoch)
                improved = True
                result.best_epoch, result.best_val_loss, bad_epochs = epoch, val_loss, 0
                best_state = {k: v.detach().cpu().clone() for k, v in getattr(model, "module", model).state_dict().items()}
            else:
                bad_epochs += 1
        result.history.append(row)
        log.info("%s epoch %d/%d: %s", desc, epoch + 1, cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        stop = cfg.patience > 0 and bad_epochs >= cfg.patience
        if run_dir is not None and is_main:
            if improved and best_state is not None:
                _atomic_save(best_state, best_path)
            _atomic_save({
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "fingerprint": fingerprint,
                "model": getattr(model, "module", model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "history": result.history, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                "bad_epochs": bad_epochs, "stopped_early": stop,
            }, last)
        D.barrier()
        if stop:
            log.info("%s: early stop after epoch %d (no val-loss improvement for %d epochs)", desc, epoch + 1, bad_epochs)
            result.stopped_early = True
            break

    if cfg.restore_best and best_state is not None:
        getattr(model, "module", model).load_state_dict(best_state)
    if cfg.train_only == "head":
        for p in getattr(model, "module", model).backbone.parameters():
            p.requires_grad_(True)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result
