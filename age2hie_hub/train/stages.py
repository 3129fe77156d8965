"""The training stages as plain functions: brain-age pretraining, AGE2HIE transfer (refine, finetune), baselines.

``pretrain(config)`` and ``transfer(config)`` run one whole job and write a hub checkpoint folder plus
``metrics.json``; ``fit_split`` trains one method on one train/test split (what evaluation protocols call);
``finetune(checkpoint, manifest, ...)`` is the one-line notebook entry point.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from age2hie_hub._atomic import write_text_atomic
from age2hie_hub.hub import CheckpointConfig, save_pretrained
from age2hie_hub.hub.evaluation import Evaluation
from age2hie_hub.models import (
    Age2HieNet,
    ModelConfig,
    build_model,
    load_imagenet_resnet18,
    load_kinetics_r3d18,
    load_sfcn_ukbiobank,
    replace_head,
)
from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.train import distributed as D
from age2hie_hub.train import metrics as M
from age2hie_hub.train.cache import PreprocessCache
from age2hie_hub.train.config import MethodConfig, PretrainConfig, TransferConfig
from age2hie_hub.train.data import ArrayDataset, hash_seed
from age2hie_hub.train.evaluate import held_out_eval_rows
from age2hie_hub.train.input_stats import checkpoint_records
from age2hie_hub.train.loop import FitResult, LoopConfig, fit, predict
from age2hie_hub.train.manifest import Cohort, read_cohort
from age2hie_hub.train.objective import Objective
from age2hie_hub.train.parent import ParentCheckpoint, resolve_parent, target_preprocess
from age2hie_hub.train.splits import stratified_holdout

log = logging.getLogger(__name__)

__all__ = ["pretrain", "transfer", "finetune", "fit_split", "SplitResult", "cached_arrays", "init_model", "parent_of",
           "write_json", "train_brain_age", "predict_ages"]


@dataclass
class SplitResult:
    model: Age2HieNet
    y_true: np.ndarray
    y_pred: np.ndarray  # P(class 1), (N, K) probabilities, or predicted values
    metrics: dict[str, float]
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # stage -> epochs
    provenance: dict[str, Any] = field(default_factory=dict)  # where the starting weights came from (init_model)


def write_json(data: Any, path: Path) -> None:
    """Atomic JSON write (only rank 0 calls it)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def cached_arrays(cohort: Cohort, preprocess: PreprocessConfig, cache_dir: str | Path, *, dtype: str = "float16",
                  workers: int = 0, progress: bool = True) -> list[Path]:
    """Preprocess every case once (rank 0 first under torchrun, then the others read the cache)."""
    cache = PreprocessCache(cache_dir, preprocess, dtype)
    paths = [c.paths for c in cohort.cases]
    if D.rank() == 0:
        files = cache.warm(paths, workers=workers, progress=progress)
    D.barrier()
    if D.rank() != 0:
        files = cache.warm(paths, workers=0)
    return files


def init_model(method: MethodConfig, head: str, head_args: dict[str, Any], in_channels: int,
               seed: int, parent: ParentCheckpoint | None = None) -> tuple[Age2HieNet, dict[str, Any]]:
    """The starting network of a method, with a fresh target head; plus provenance (parent, weights).

    ``parent``: the method's checkpoint already resolved (``resolve_parent``); resolved here when not given.
    """
    torch.manual_seed(hash_seed(seed, 5))  # the new head's (or scratch network's) initialisation
    if method.init == "checkpoint":
        if not method.weights:
            raise ValueError(f"method {method.name!r}: init 'checkpoint' needs weights (a checkpoint folder or name)")
        parent = parent if parent is not None else resolve_parent(method.weights)
        if parent.model.in_channels != in_channels:
            raise ValueError(f"method {method.name!r}: the parent checkpoint takes {parent.model.in_channels} "
                             f"channel(s), the target data has {in_channels}; use as many input channels as the parent")
        model = replace_head(parent.model, head, head_args)  # copies the parent's body: the parent stays as loaded
        model.train()
        return model, dict(parent.provenance)
    if not method.model:
        raise ValueError(f"method {method.name!r}: init {method.init!r} needs 'model' (arch, arch_args)")
    mc = ModelConfig.from_dict({**method.model, "head": head, "head_args": head_args})
    mc = dataclasses.replace(mc, arch_args={**mc.arch_args, "in_channels": in_channels})
    model = build_model(mc)
    if method.init == "scratch":
        return model, {"parent": None}
    if not method.weights:
        raise ValueError(f"method {method.name!r}: init {method.init!r} needs weights (a weights file)")
    importer = {"imagenet": load_imagenet_resnet18, "kinetics": load_kinetics_r3d18, "sfcn": load_sfcn_ukbiobank}
    importer[method.init](model, method.weights)
    return model, {"parent": f"{method.init}:{Path(method.weights).name}"}


def _loop_for(stage: str, cfg: TransferConfig) -> LoopConfig:
    loop = {"refine": cfg.refine, "finetune": cfg.finetune, "scratch": cfg.scratch}[stage]
    # refine always trains the head only, whatever the config says: that is what the stage means.
    return dataclasses.replace(loop, train_only="head") if stage == "refine" else loop


def fit_split(method: MethodConfig, cohort: Cohort, files: list[Path], train_pos: np.ndarray, test_pos: np.ndarray,
              cfg: TransferConfig, *, seed: int, run_dir: Path | None = None, head_args: dict[str, Any] | None = None,
              progress: bool = False, parent: ParentCheckpoint | None = None) -> SplitResult:
    """Train ``method`` on ``train_pos`` (minus a stratified validation part) and predict ``test_pos``.

    The validation part that early stopping watches is ``cfg.test_fraction`` of ``train_pos`` (none when 0).

    ``parent``: a checkpoint method's parent, resolved once by the caller for all its splits.
    """
    y = cohort.labels
    strata = cohort.strata
    fit_pos, val_pos = stratified_holdout(strata[train_pos], cfg.test_fraction, seed) if cfg.test_fraction > 0 else (
        np.arange(train_pos.size), np.array([], dtype=np.int64))
    fit_pos, val_pos = train_pos[fit_pos], train_pos[val_pos]
    head_args = head_args if head_args is not None else _target_head_args(cfg.head, cohort)
    model, prov = init_model(method, cfg.head, head_args, cohort.n_channels, seed, parent=parent)
    objective = Objective.for_head(cfg.head, y[fit_pos], n_classes=max(2, len(cohort.classes)),
                                   class_weighted=cfg.class_weighted)
    train_set = ArrayDataset([files[i] for i in fit_pos], y[fit_pos], cfg.augment, seed=seed, in_memory=True)
    val_set = ArrayDataset([files[i] for i in val_pos], y[val_pos], in_memory=True) if val_pos.size else None
    history = {}
    for stage in method.stages:
        loop = _loop_for(stage, cfg)
        if not progress:
            loop = dataclasses.replace(loop, progress=False)
        res: FitResult = fit(model, objective, train_set, val_set, loop, run_dir / stage if run_dir else None,
                             seed=hash_seed(seed, len(history)), resume=cfg.resume, desc=f"{method.name}:{stage}")
        history[stage] = res.history
    if test_pos.size == 0:  # trained on every case (transfer with test_fraction 0): nothing to score
        return SplitResult(model.cpu(), y[test_pos], np.empty(0), {}, history, prov)
    test_set = ArrayDataset([files[i] for i in test_pos], y[test_pos], in_memory=True)
    _, pred = predict(model, objective, test_set, batch_size=cfg.finetune.batch_size,
                      device=next(model.parameters()).device)
    return SplitResult(model.cpu(), y[test_pos], pred, objective.metrics(y[test_pos], pred), history, prov)


def _target_head_args(head: str, cohort: Cohort) -> dict[str, Any]:
    if head == "classification":
        return {"num_classes": len(cohort.classes)}
    if head == "outcome" and cohort.task == "classification" and len(cohort.classes) != 2:
        raise ValueError(f"{cohort.source}: the outcome head is binary but target {cohort.target_name!r} has "
                         f"{len(cohort.classes)} classes {list(cohort.classes)}; use head: classification")
    if head == "outcome" and cohort.task != "classification":
        raise ValueError(f"{cohort.source}: target {cohort.target_name!r} is continuous; the outcome head needs 2 classes")
    return {}


def _checkpoint_config(model: Age2HieNet, preprocess: PreprocessConfig, *, task: str, labels: tuple[str, ...],
                       cohort: Cohort, seed: int, parent: str | None, metrics: dict[str, Any], synthetic: bool,
                       age_unit: str = "years", extra: dict[str, Any] | None = None) -> CheckpointConfig:
    mods = tuple(cohort.modalities) if len(cohort.modalities) == preprocess.channels else tuple(
        f"channel{i}" for i in range(preprocess.channels))
    provenance = {"seed": seed, "training_data": cohort.source, "data_manifest_sha256": cohort.sha256,
                  "n_training_cases": len(cohort), "parent": parent, "synthetic": synthetic, **(extra or {})}
    return CheckpointConfig(model=model.config, preprocess=preprocess, task=task, labels=labels, age_unit=age_unit,
                            input_modalities=mods, provenance=provenance, metrics=metrics)


# ---- brain-age pretraining --------------------------------------------------------------------------------

def _brain_age_head(cfg: PretrainConfig, ages: np.ndarray, train_ages: np.ndarray) -> dict[str, Any]:
    """The model config of a brain-age network whose head is set from the training ages."""
    mc = dict(cfg.model)
    head = mc.get("head", "age_regression")
    if head not in ("age_regression", "age_softbin"):
        raise ValueError(f"pretrain: model.head must be age_regression or age_softbin, got {head!r}")
    lo, hi = float(ages.min()), float(ages.max())
    if head == "age_regression":
        auto = {"unit": cfg.age_unit, "offset": float(train_ages.mean()), "scale": float(max(train_ages.std(), 1e-3))}
    else:
        margin = 0.05 * (hi - lo) + cfg.softbin_sigma
        auto = {"unit": cfg.age_unit, "bins": cfg.softbin_bins, "age_range": [lo - margin, hi + margin]}
    mc["head_args"] = {**auto, **mc.get("head_args", {})}
    return mc


def train_brain_age(cfg: PretrainConfig, cohort: Cohort, files: list[Path], train_pos: np.ndarray, *,
                    state_dir: Path | None, desc: str = "pretrain") -> tuple[Age2HieNet, Objective, FitResult, np.ndarray]:
    """Train one brain-age network on ``train_pos`` (minus a stratified ``val_fraction`` for early stopping).

    The one recipe that both the cross-validation folds and the final model run. Returns the model, its
    objective, the fit history and the positions it trained on.
    """
    ages = cohort.labels
    if cfg.val_fraction > 0:
        fit_rel, val_rel = stratified_holdout(cohort.strata[train_pos], cfg.val_fraction, hash_seed(cfg.seed, 1))
    else:
        fit_rel, val_rel = np.arange(train_pos.size), np.array([], dtype=np.int64)
    fit_pos, val_pos = train_pos[fit_rel], train_pos[val_rel]
    mc = _brain_age_head(cfg, ages, ages[fit_pos])
    mc["arch_args"] = {**mc.get("arch_args", {}), "in_channels": cohort.n_channels}
    torch.manual_seed(hash_seed(cfg.seed, 5))
    model = build_model(ModelConfig.from_dict(mc))
    objective = Objective(mc.get("head", "age_regression"), softbin_sigma=cfg.softbin_sigma)
    train_set = ArrayDataset([files[i] for i in fit_pos], ages[fit_pos], cfg.augment, seed=cfg.seed)
    val_set = ArrayDataset([files[i] for i in val_pos], ages[val_pos]) if val_pos.size else None
    if val_set is None and cfg.loop.patience > 0:
        log.warning("%s: val_fraction is 0, so patience %d has nothing to watch; all %d epochs run", desc,
                    cfg.loop.patience, cfg.loop.epochs)
    res = fit(model, objective, train_set, val_set, cfg.loop, state_dir, seed=cfg.seed, resume=cfg.resume, desc=desc)
    return model, objective, res, fit_pos


def predict_ages(model: Age2HieNet, objective: Objective, files: list[Path], ages: np.ndarray, positions: np.ndarray,
                 batch_size: int) -> np.ndarray:
    """The model's brain age for the cases at ``positions`` (eval mode, no augmentation)."""
    test_set = ArrayDataset([files[i] for i in positions], ages[positions])
    _, pred = predict(model, objective, test_set, batch_size=batch_size, device=next(model.parameters()).device)
    return np.asarray(pred, dtype=np.float64)


def pretrain(cfg: PretrainConfig, cohort: Cohort | None = None) -> dict[str, Any]:
    """Train a brain-age model and save a checkpoint.

    With ``cfg.cv``: cross-validate the recipe first (``run_dir/cv``: tables, plots, per-subject predictions,
    baselines on the same folds) and record the estimate, the age-bias line and the out-of-fold residuals in
    the checkpoint. ``test_fraction > 0``: also hold out a stratified test split and report its MAE against
    predicting the training mean; ``test_fraction: 0``: train on every case (the final model after a CV).
    """
    # Age is continuous whatever a small cohort's distinct-value count suggests.
    cohort = cohort if cohort is not None else read_cohort({"task": "regression", **cfg.data})
    if cohort.task != "regression":
        raise ValueError(f"{cohort.source}: brain-age pretraining needs a continuous target; "
                         f"{cohort.target_name!r} looks categorical {list(cohort.classes)[:5]}")
    run_dir = Path(cfg.run_dir)
    prep = PreprocessConfig.from_dict({**cfg.preprocess, "channels": cohort.n_channels})
    files = cached_arrays(cohort, prep, cfg.cache_dir, dtype=cfg.cache_dtype, workers=cfg.preprocess_workers,
                          progress=cfg.loop.progress)
    ages = cohort.labels
    if cfg.test_fraction > 0:
        keep, test = stratified_holdout(cohort.strata, cfg.test_fraction, cfg.seed)
    else:
        keep, test = np.arange(len(cohort)), np.array([], dtype=np.int64)
    cv_out = None
    if cfg.cv is not None:
        from age2hie_hub.train.evaluate import cross_validate_brain_age

        # With several worker processes the final model trains in the same pool as the folds (same recipe,
        # same seed, one thread each: the same weights as training it here, without waiting for the folds).
        beside = cfg.cv.workers > 1 and not D.is_distributed()
        cv_out = cross_validate_brain_age(cfg, cohort, files, run_dir / "cv", final_train=keep if beside else None,
                                          final_state_dir=run_dir / "state")
    if cv_out is not None and "final" in cv_out:
        final = cv_out.pop("final")
        torch.manual_seed(hash_seed(cfg.seed, 5))
        model = build_model(final["model_config"])
        model.load_state_dict({k: torch.from_numpy(v) for k, v in final["state"].items()})
        model.eval()
        objective = Objective(final["model_config"].head, softbin_sigma=cfg.softbin_sigma)
        res = FitResult(history=final["history"], best_epoch=final["best_epoch"], seconds=final["seconds"])
        fit_pos = np.asarray(final["fit_pos"], dtype=np.int64)
    else:
        model, objective, res, fit_pos = train_brain_age(cfg, cohort, files, keep, state_dir=run_dir / "state")
    n_val = int(keep.size - fit_pos.size)
    metrics: dict[str, Any]
    rows = []  # the evaluation record's rows (hub.evaluation), beside the flat keys older readers know
    if test.size:
        pred = predict_ages(model, objective, files, ages, test, cfg.loop.batch_size)
        baseline = np.full(test.size, ages[fit_pos].mean())
        scores = {**M.regression_metrics(ages[test], pred), "baseline_predict_mean_mae": M.mae(ages[test], baseline)}
        ci = {"mae": M.bootstrap_ci(M.mae, ages[test], pred, n_boot=1000, seed=cfg.seed)[1:]}
        metrics = {
            "split": "held_out_test", "n_train": int(fit_pos.size), "n_val": n_val, "n_test": int(test.size),
            **{f"test_{k}": v for k, v in scores.items() if k in M.REGRESSION_METRICS},
            "test_mae_ci95": list(ci["mae"]), "baseline_predict_mean_mae": scores["baseline_predict_mean_mae"],
        }
        rows = held_out_eval_rows("held_out_test", scores, n=int(test.size), task=cohort.target_name, ci=ci)
    else:
        # A score on the training cases themselves would be resubstitution: none is recorded here; the
        # estimate of this recipe is the cross-validation (when run), recorded under "cv".
        metrics = {"split": "none", "n_train": int(fit_pos.size), "n_val": n_val, "n_test": 0,
                   "note": "trained on every case; no held-out score of its own"
                           + (" (see cv: the k-fold cross-validation of this recipe)" if cv_out else "")}
    metrics.update({"best_epoch": res.best_epoch, "epochs_run": len(res.history), "seconds": res.seconds,
                    "synthetic": cfg.synthetic})
    if cv_out is not None:
        metrics.update(cv_out["checkpoint_metrics"])
    out = {"metrics": metrics, "history": res.history, "checkpoint": str(run_dir / "checkpoint")}
    if cv_out is not None:
        # The run's metrics.json carries the cross-validated table, so the release recipe puts it in the card.
        out.update({k: cv_out[k] for k in ("summary", "comparisons", "n_cases", "sites")})
    cv_record = Evaluation.from_dict(cv_out["evaluation"]) if cv_out is not None else Evaluation()
    out["evaluation"] = Evaluation(rows=tuple(rows)).with_cross_validation(cv_record).to_dict()
    if D.rank() == 0:
        ck = _checkpoint_config(model, prep, task="brain_age", labels=(), cohort=cohort, seed=cfg.seed, parent=None,
                                metrics=metrics, synthetic=cfg.synthetic, age_unit=cfg.age_unit,
                                extra={"stage": "pretrain_brain_age"})
        ck = dataclasses.replace(ck, training_range={"age": [float(ages.min()), float(ages.max())]},
                                 **checkpoint_records(cohort, ck.input_modalities, metrics, ck.task,
                                                      workers=max(1, cfg.preprocess_workers), age_unit=cfg.age_unit))
        save_pretrained(model.cpu(), run_dir / "checkpoint", ck)
        write_json(out, run_dir / "metrics.json")
        if test.size:
            _write_predictions(run_dir / "test_predictions.csv", [cohort.subjects[i] for i in test], ages[test], pred)
    D.barrier()
    if test.size:
        log.info("pretrain: test MAE %.3f %s (predict-the-mean %.3f), r=%.3f", metrics["test_mae"], cfg.age_unit,
                 metrics["baseline_predict_mean_mae"], metrics["test_pearson_r"])
    else:
        log.info("pretrain: trained on all %d cases (no held-out score)", len(cohort))
    return out


def _write_predictions(path: Path, subjects: list[str], y: np.ndarray, pred: np.ndarray) -> None:
    lines = ["subject,target,prediction"] + [f"{s},{t},{p}" for s, t, p in zip(subjects, y, np.asarray(pred).tolist(), strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- transfer / baselines on a target cohort ---------------------------------------------------------------

def parent_of(cfg: TransferConfig) -> ParentCheckpoint | None:
    """The parent checkpoint of ``cfg.method``, resolved once (None for methods that start elsewhere)."""
    return resolve_parent(cfg.method.weights) if cfg.method.init == "checkpoint" else None


def _target_preprocess(cfg: TransferConfig, cohort: Cohort, parent: ParentCheckpoint | None = None) -> PreprocessConfig:
    """The parent's preprocessing with the keys ``cfg.preprocess`` writes replaced (``parent.target_preprocess``)."""
    if parent is None:
        parent = parent_of(cfg)
    return target_preprocess(cfg.preprocess, cohort.n_channels, parent)


def _parent_extra(prov: dict[str, Any]) -> dict[str, Any]:
    """What a child's provenance records about its parent besides ``parent`` itself."""
    return {k: v for k, v in prov.items() if k.startswith("parent_") and k != "parent_task"}


def _labels(cfg: TransferConfig, cohort: Cohort) -> tuple[str, ...]:
    if cfg.labels:
        if len(cfg.labels) != len(cohort.classes):
            raise ValueError(f"labels {list(cfg.labels)} must name each of the {len(cohort.classes)} classes "
                             f"{list(cohort.classes)} of {cohort.target_name!r}, in that order")
        return tuple(cfg.labels)
    if cfg.head == "outcome" and tuple(cohort.classes) == ("0", "1"):
        return ("favourable", "adverse")
    return tuple(cohort.classes)


def transfer(cfg: TransferConfig, cohort: Cohort | None = None) -> dict[str, Any]:
    """Train the configured method on the cohort minus a held-out part, test on that part, save the checkpoint.

    ``test_fraction`` of the cases is held out as the test split of the reported metrics, and the same fraction
    of the rest is the validation part for early stopping. ``test_fraction=0`` trains on every case with
    neither a test nor a validation part
    (every epoch runs, ``patience`` has nothing to watch) and records no score: ``"split": "none"``,
    ``"n_test": 0``. For the paper-style cross-validated estimate use ``experiment``.
    """
    cohort = cohort if cohort is not None else read_cohort(cfg.data)
    parent = parent_of(cfg)  # resolved once: the same checkpoint gives the preprocessing and the weights
    prep = _target_preprocess(cfg, cohort, parent)
    files = cached_arrays(cohort, prep, cfg.cache_dir, dtype=cfg.cache_dtype, workers=cfg.preprocess_workers,
                          progress=cfg.refine.progress)
    all_pos = np.arange(len(cohort))
    if cfg.test_fraction > 0:
        fit_rel, test_rel = stratified_holdout(cohort.strata, cfg.test_fraction, cfg.seed)
    else:
        fit_rel, test_rel = all_pos, np.array([], dtype=np.int64)
        _warn_unwatched_patience(cfg)
    # The held-out part is never seen in training nor used for early stopping (fit_split carves its own
    # validation cases out of the training part), so its metrics are an honest, if small, test.
    res = fit_split(cfg.method, cohort, files, all_pos[fit_rel], all_pos[test_rel], cfg, seed=cfg.seed,
                    run_dir=Path(cfg.run_dir) / "state", progress=True, parent=parent)
    run_dir = Path(cfg.run_dir)
    if test_rel.size:
        metrics = {"split": "held_out", **res.metrics, "n_train": int(fit_rel.size), "n_test": int(test_rel.size),
                   "method": cfg.method.name, "synthetic": cfg.synthetic}
        rows = held_out_eval_rows("held_out", res.metrics, n=int(test_rel.size), method=cfg.method.name,
                                  task=cohort.target_name)
    else:
        # No score on the training cases themselves: it would be resubstitution, not an estimate.
        metrics = {"split": "none", "n_train": int(fit_rel.size), "n_val": 0, "n_test": 0,
                   "note": "trained on every case; no held-out score (estimate it with age2hie-train evaluate)",
                   "method": cfg.method.name, "synthetic": cfg.synthetic}
        rows = []
    out = {"metrics": metrics, "history": res.history, "checkpoint": str(run_dir / "checkpoint"),
           "evaluation": Evaluation(rows=tuple(rows)).to_dict()}
    if D.rank() == 0:
        task = "hie_outcome" if cfg.head == "outcome" else "classification"
        ck = _checkpoint_config(res.model, prep, task=task, labels=_labels(cfg, cohort), cohort=cohort, seed=cfg.seed,
                                parent=res.provenance.get("parent"), metrics=metrics, synthetic=cfg.synthetic,
                                extra={"stage": "+".join(cfg.method.stages), "method": cfg.method.name,
                                       **_parent_extra(res.provenance)})
        ck = dataclasses.replace(ck, **checkpoint_records(cohort, ck.input_modalities, metrics, ck.task,
                                                          workers=max(1, cfg.preprocess_workers)))
        save_pretrained(res.model, run_dir / "checkpoint", ck)
        write_json(out, run_dir / "metrics.json")
    D.barrier()
    return out


def _warn_unwatched_patience(cfg: TransferConfig) -> None:
    """test_fraction 0 leaves no validation cases, so early stopping cannot run: say so rather than ignore it."""
    for stage in cfg.method.stages:
        loop = _loop_for(stage, cfg)
        if loop.patience > 0:
            log.warning("transfer: test_fraction is 0 (train on every case), so stage %r has no validation cases; "
                        "its patience %d is ignored and all %d epochs run (set the epochs from a cross-validation)",
                        stage, loop.patience, loop.epochs)


def finetune(checkpoint: str | Path, manifest: str | Path | Cohort, *, target: str = "outcome",
             run_dir: str | Path = "runs/finetune", **overrides: Any) -> dict[str, Any]:
    """Notebook entry point: AGE2HIE transfer of ``checkpoint`` onto a CSV manifest (or a Cohort).

    ``overrides`` are TransferConfig fields, e.g. ``finetune=LoopConfig(epochs=5)``, ``seed=1``.
    """
    cohort = manifest if isinstance(manifest, Cohort) else None
    data = {"format": "csv", "path": str(manifest), "target": target} if cohort is None else {}
    cfg = TransferConfig(data=data, method=MethodConfig("transfer", "checkpoint", str(checkpoint)),
                         run_dir=str(run_dir), **overrides)
    return transfer(cfg, cohort)
