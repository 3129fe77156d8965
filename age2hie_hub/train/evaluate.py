"""Evaluation protocols: methods x protocols x seeds (and learning curves) -> one result row per split.

Every method sees exactly the same splits, so comparisons are paired. Rows are appended to ``results.jsonl``
as they finish; a re-run with the same folder skips the rows already there (the grid resumes after a crash).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.hub.evaluation import Comparison, EvalRow, Evaluation
from age2hie_hub.train import distributed as D
from age2hie_hub.train import metrics as M
from age2hie_hub.train.config import LearningCurveConfig, MethodConfig, TransferConfig
from age2hie_hub.train.manifest import Cohort
from age2hie_hub.train.splits import Split, learning_curve_subsets, make_splits

log = logging.getLogger(__name__)


def metric_keys(task: str) -> tuple[str, ...]:
    """The metrics reported per method x protocol for a "classification" or "regression" task: metrics.py's
    (read at call time, so a metric added there needs no edit here), the first ones leading the Markdown table."""
    return tuple(M.BINARY_METRICS if task == "classification" else M.REGRESSION_METRICS)


def _row_id(method: str, split: Split, size: int | None) -> str:
    return f"{method}|{split.protocol}|seed{split.seed}|{split.name}|n={size if size is not None else 'all'}"


def _done(results: Path) -> dict[str, dict[str, Any]]:
    if not results.is_file():
        return {}
    rows = {}
    for line in results.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: that split is simply run again
                continue
            rows[row["id"]] = row
    return rows


def run_grid(cohort: Cohort, files: list[Path], methods: Sequence[MethodConfig], cfg: TransferConfig, *,
             protocols: Sequence[str], k: int, seeds: Sequence[int], run_dir: Path,
             learning_curve: LearningCurveConfig | None = None, save_checkpoints: bool = False,
             checkpoint_writer: Any = None, progress: bool = True,
             parents: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train and test every (method, split[, size]); returns all rows (including ones done earlier).

    ``parents``: method name -> its parent checkpoint resolved once (``parent.resolve_parent``); a checkpoint
    method without one resolves its parent once here.
    """
    from tqdm.auto import tqdm

    from age2hie_hub.train.stages import fit_split

    results = run_dir / "results.jsonl"
    done = _done(results)
    strata, sites = cohort.strata, cohort.sites
    jobs: list[tuple[MethodConfig, Split, int | None, np.ndarray]] = []
    for protocol in protocols:
        if protocol == "cross_site" and len(set(sites)) < 2:
            log.warning("cross_site skipped: the cohort has a single site %s", sorted(set(sites)))
            continue
        for split in make_splits(protocol, strata, sites, k=k, seeds=seeds):
            jobs += [(m, split, None, split.train) for m in methods]
    if learning_curve is not None:
        unknown = sorted(set(learning_curve.seeds) - set(seeds))
        if unknown:
            raise ValueError(f"learning_curve.seeds {unknown} are not among the experiment's seeds {list(seeds)}")
        lc_splits = []
        for seed in learning_curve.seeds or seeds:
            lc_splits += make_splits(learning_curve.protocol, strata, sites, k=k, seeds=[seed])[:learning_curve.max_splits]
        for split in lc_splits:
            subsets = learning_curve_subsets(split.train, strata, learning_curve.sizes, seed=split.seed)
            for size, train in subsets.items():
                if size == split.train.size and learning_curve.protocol in protocols:
                    continue  # identical to the protocol's own full-size row, which the curve reuses
                jobs += [(m, split, size, train) for m in methods]
    parents = dict(parents or {})
    rows = []
    bar = tqdm(jobs, desc="grid", disable=not (progress and D.rank() == 0))
    for method, split, size, train in bar:
        rid = _row_id(method.name, split, size)
        bar.set_postfix_str(rid[-50:])
        if rid in done:
            rows.append(done[rid])
            continue
        if method.init == "checkpoint" and method.name not in parents:
            from age2hie_hub.train.parent import resolve_parent

            parents[method.name] = resolve_parent(method.weights)
        t0 = time.perf_counter()
        res = fit_split(method, cohort, files, train, split.test, cfg, seed=split.seed, parent=parents.get(method.name))
        row = {"id": rid, "method": method.name, "protocol": split.protocol, "seed": split.seed, "fold": split.fold,
               "split": split.name, "train_size": int(train.size), "learning_curve": size is not None,
               "n_test": int(split.test.size), **res.metrics, "seconds": time.perf_counter() - t0,
               "test_subjects": [cohort.subjects[i] for i in split.test],
               "y_true": np.asarray(res.y_true).tolist(), "y_pred": np.asarray(res.y_pred).tolist()}
        if save_checkpoints and checkpoint_writer is not None and D.rank() == 0:
            checkpoint_writer(res, run_dir / "checkpoints" / rid.replace("|", "__").replace("/", "_").replace(">", ""), row)
        if D.rank() == 0:
            with open(results, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, default=float) + "\n")
        rows.append(row)
    return rows


def _fmt(s: dict[str, float], digits: int = 3) -> str:
    if not s["n"]:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def summarize_rows(rows: Sequence[dict[str, Any]], n_boot: int = 2000) -> list[dict[str, Any]]:
    """One row per (method, protocol): every metric's mean, sd and 95 % bootstrap CI over splits x seeds."""
    full = [r for r in rows if not r["learning_curve"]]
    keys = metric_keys("classification" if any("accuracy" in r for r in full) else "regression")
    out = []
    for method in dict.fromkeys(r["method"] for r in full):
        for protocol in dict.fromkeys(r["protocol"] for r in full):
            sel = [r for r in full if r["method"] == method and r["protocol"] == protocol]
            if not sel:
                continue
            row: dict[str, Any] = {"method": method, "protocol": protocol, "n_splits": len(sel),
                                   "n_seeds": len({r["seed"] for r in sel})}
            for key in keys:
                s = M.summarize([r.get(key, float("nan")) for r in sel], n_boot=n_boot)
                row.update({f"{key}_mean": s["mean"], f"{key}_sd": s["sd"], f"{key}_ci_low": s["ci_low"],
                            f"{key}_ci_high": s["ci_high"], f"{key}_text": _fmt(s)})
            out.append(row)
    return out


def summary_eval_rows(summary: Sequence[dict[str, Any]], task: str | None = None) -> list[EvalRow]:
    """The summary table (``summarize_rows``, ``cross_validate_brain_age``) as the evaluation record's rows: one
    per method x protocol x metric, with its sd, CI, splits and seeds (and cases, where the row counts them)."""
    out = []
    for row in summary:
        for key in (*metric_keys("classification"), *metric_keys("regression")):
            if f"{key}_mean" in row:
                out.append(EvalRow(protocol=row["protocol"], metric=key, value=float(row[f"{key}_mean"]),
                                   method=row["method"], n=row.get("n"), sd=float(row[f"{key}_sd"]),
                                   ci_low=float(row[f"{key}_ci_low"]), ci_high=float(row[f"{key}_ci_high"]),
                                   n_splits=int(row["n_splits"]), n_seeds=int(row["n_seeds"]), task=task))
    return out


def held_out_eval_rows(protocol: str, metrics: dict[str, float], *, n: int, method: str | None = None,
                       task: str | None = None, ci: dict[str, Sequence[float]] | None = None) -> list[EvalRow]:
    """One held-out split's metrics as evaluation rows (``ci``: metric -> its 95 % interval, where measured)."""
    ci = ci or {}
    return [EvalRow(protocol=protocol, metric=k, value=float(v), method=method, n=n, task=task,
                    ci_low=float(ci[k][0]) if k in ci else None, ci_high=float(ci[k][1]) if k in ci else None)
            for k, v in metrics.items()]


def evaluation_record(summary: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]], *, n_cases: int,
                      sites: dict[str, int], task: str | None = None) -> Evaluation:
    """What an experiment or a cross-validation writes under ``"evaluation"`` in its metrics.json."""
    return Evaluation(rows=tuple(summary_eval_rows(summary, task)),
                      comparisons=tuple(Comparison.from_dict(c) for c in comparisons), n_cases=n_cases, sites=sites)


def paired_comparisons(rows: Sequence[dict[str, Any]], reference: str,
                       keys: Sequence[str] = ("accuracy", "auc", "balanced_accuracy", "f1")) -> list[dict[str, Any]]:
    """Each method against ``reference`` on the same splits: mean difference, bootstrap CI, sign-flip p."""
    full = [r for r in rows if not r["learning_curve"]]
    by_id = {(r["method"], r["protocol"], r["seed"], r["split"]): r for r in full}
    out = []
    for method in dict.fromkeys(r["method"] for r in full):
        if method == reference:
            continue
        for protocol in dict.fromkeys(r["protocol"] for r in full):
            pairs = [(r, by_id.get((reference, protocol, r["seed"], r["split"])))
                     for r in full if r["method"] == method and r["protocol"] == protocol]
            for key, boot, perm in _paired_tests(pairs, keys):
                out.append({"method": method, "reference": reference, "protocol": protocol, "metric": key,
                            "n_pairs": boot["n"], "mean_diff": boot["mean_diff"], "ci_low": boot["ci_low"],
                            "ci_high": boot["ci_high"], "p_sign_flip": perm["p_value"],
                            "p_bootstrap": boot["p_value"]})
    return out


def _paired_tests(pairs: Sequence[tuple[dict[str, Any], dict[str, Any] | None]], keys: Sequence[str]):
    """(metric, paired bootstrap, sign-flip test) for each metric with a finite difference on the pairs whose
    reference row exists."""
    pairs = [(a, b) for a, b in pairs if b is not None]
    for key in keys:
        a = [p[0].get(key, float("nan")) for p in pairs]
        b = [p[1].get(key, float("nan")) for p in pairs]
        if not pairs or not np.isfinite(np.asarray(a) - np.asarray(b)).any():
            continue
        yield key, M.paired_bootstrap(a, b), M.sign_flip_test(a, b)


def _learning_curve_rows(rows: Sequence[dict[str, Any]], protocol: str) -> tuple[list[dict[str, Any]], Any]:
    """The rows of the learning-curve splits (their full-size protocol rows included) and each row's size."""
    lc_splits = {(r["seed"], r["split"]) for r in rows if r["learning_curve"]}
    sel = [r for r in rows if r["protocol"] == protocol and (r["seed"], r["split"]) in lc_splits]
    full = [r["train_size"] for r in sel if not r["learning_curve"]]
    # Full training folds differ by a case or two in size; they form one point at their mean size.
    all_size = int(round(float(np.mean(full)))) if full else -1

    def size_of(r: dict[str, Any]) -> int:
        return r["train_size"] if r["learning_curve"] else all_size

    return sel, size_of


def learning_curve_comparisons(rows: Sequence[dict[str, Any]], protocol: str, reference: str,
                               keys: Sequence[str] = ("accuracy", "auc")) -> list[dict[str, Any]]:
    """Each method against ``reference`` at each learning-curve size, paired on the same split and subset:
    mean difference, bootstrap CI, sign-flip p (exact for few pairs: with 5 pairs the smallest p is 1/16)."""
    sel, size_of = _learning_curve_rows(rows, protocol)
    ref = {(r["seed"], r["split"], size_of(r)): r for r in sel if r["method"] == reference}
    out = []
    for method in dict.fromkeys(r["method"] for r in sel):
        if method == reference:
            continue
        for size in sorted({size_of(r) for r in sel if r["method"] == method}):
            pairs = [(r, ref.get((r["seed"], r["split"], size))) for r in sel
                     if r["method"] == method and size_of(r) == size]
            for key, boot, perm in _paired_tests(pairs, keys):
                out.append({"method": method, "reference": reference, "train_size": size, "metric": key,
                            "n_pairs": boot["n"], "mean_diff": boot["mean_diff"], "ci_low": boot["ci_low"],
                            "ci_high": boot["ci_high"], "p_sign_flip": perm["p_value"]})
    return out


def learning_curve_table(rows: Sequence[dict[str, Any]], protocol: str, metric: str = "accuracy") -> list[dict[str, Any]]:
    """Per method and training size: mean, sd and CI of ``metric`` over the learning-curve splits."""
    sel, size_of = _learning_curve_rows(rows, protocol)
    out = []
    for method in dict.fromkeys(r["method"] for r in sel):
        for size in sorted({size_of(r) for r in sel if r["method"] == method}):
            vals = [r.get(metric, float("nan")) for r in sel if r["method"] == method and size_of(r) == size]
            s = M.summarize(vals, n_boot=1000)
            out.append({"method": method, "train_size": size, "metric": metric, **s})
    return out


# ---- brain age: k-fold cross-validation of a pretrain recipe, with baselines on the same folds --------------

CNN = "cnn"  # the network's row in the brain-age tables
FINAL = -1  # the "fold" of the final model when it trains in the cross-validation's worker pool
CORRECTED = " (age-bias corrected)"


def _cv_fold_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train the recipe on one fold's training cases and predict its test cases (runs in a worker process)."""
    import torch

    from age2hie_hub.train.stages import predict_ages, train_brain_age

    cfg, cohort, files = job["cfg"], job["cohort"], job["files"]
    if cfg.loop.threads > 0:
        torch.set_num_threads(cfg.loop.threads)
    train, test = np.asarray(job["train"]), np.asarray(job["test"])
    t0 = time.perf_counter()
    final = job["fold"] == FINAL
    model, objective, res, fit_pos = train_brain_age(cfg, cohort, files, train, state_dir=job["state_dir"],
                                                     desc="pretrain" if final else f"cv fold {job['fold']}")
    if final:  # the released model, trained beside the folds: its weights go back to the parent process
        return {"fold": FINAL, "model_config": model.config, "fit_pos": fit_pos.tolist(),
                "state": {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
                "history": res.history, "best_epoch": res.best_epoch, "seconds": time.perf_counter() - t0}
    pred = predict_ages(model, objective, files, cohort.labels, test, cfg.loop.batch_size)
    return {"fold": job["fold"], "pred": pred.tolist(), "n_fit": int(fit_pos.size),
            "n_val": int(train.size - fit_pos.size), "epochs_run": len(res.history), "best_epoch": res.best_epoch,
            "final_train_loss": res.history[-1]["train_loss"] if res.history else float("nan"),
            "seconds": time.perf_counter() - t0}


def _cv_network_rows(cfg: Any, cohort: Cohort, files: list[Path], folds: list[tuple[np.ndarray, np.ndarray]],
                     run_dir: Path, final_train: np.ndarray | None = None,
                     final_state_dir: Path | None = None) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """The network's out-of-fold predictions, one row per fold in results.jsonl (a re-run skips finished folds).

    ``final_train``: also train the final model on these positions, as one more job of the same pool (it
    starts first: it is the longest); its weights come back in the second return value.
    """
    import dataclasses

    results = run_dir / "results.jsonl"
    recipe = _recipe_hash(cfg, cohort)
    done = {}
    for r in _done(results).values():  # later lines win: a fold retrained after a change replaces its old row
        if r.get("method") == CNN and r.get("recipe_sha256") == recipe:
            done[r["fold"]] = r
    # The workers' loops never draw progress bars (several bars on one terminal garble each other).
    job_cfg = dataclasses.replace(cfg, cv=None, loop=dataclasses.replace(cfg.loop, progress=False))
    jobs = []
    if final_train is not None:
        jobs.append({"cfg": job_cfg, "cohort": cohort, "files": files, "train": np.asarray(final_train).tolist(),
                     "test": [], "fold": FINAL, "state_dir": final_state_dir})
    final = None
    for f, (train, test) in enumerate(folds):
        if f in done and done[f]["test_subjects"] == [cohort.subjects[i] for i in test]:
            log.info("cv fold %d: reused from %s (same recipe, data and fold)", f, results)
            continue
        done.pop(f, None)
        jobs.append({"cfg": job_cfg, "cohort": cohort, "files": files, "train": train.tolist(), "test": test.tolist(),
                     "fold": f, "state_dir": run_dir / "state" / f"fold{f}"})
    if jobs:
        log.info("cv: training %d fold(s)%s with %d worker process(es)", len(jobs) - (final_train is not None),
                 " and the final model" if final_train is not None else "", min(cfg.cv.workers, len(jobs)))

    def record(out: dict[str, Any]) -> None:
        nonlocal final
        if out["fold"] == FINAL:
            final = out
            log.info("final model trained on %d cases (%d s)", len(out["fit_pos"]), out["seconds"])
            return
        train, test = folds[out["fold"]]
        row = {"id": f"{CNN}|fold{out['fold']}|{recipe[:12]}", "method": CNN, "fold": out["fold"], "recipe_sha256": recipe,
               "test_subjects": [cohort.subjects[i] for i in test], "y_true": cohort.labels[test].tolist(),
               "y_pred": out["pred"], **{k: v for k, v in out.items() if k not in ("pred", "fold")}}
        if D.rank() == 0:
            with open(results, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, default=float) + "\n")
        done[out["fold"]] = row
        log.info("cv fold %d: MAE %.2f (%d s)", out["fold"], M.mae(row["y_true"], row["y_pred"]), out["seconds"])

    if cfg.cv.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a fresh interpreter per worker (forking a process that already ran torch can deadlock).
        with ProcessPoolExecutor(min(cfg.cv.workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_cv_fold_job, j) for j in jobs]):
                record(fut.result())
    else:
        for job in jobs:
            record(_cv_fold_job(job))
    return done, final


def _recipe_hash(cfg: Any, cohort: Cohort) -> str:
    """What a fold's network depends on: the training recipe and the data (not where outputs go, nor how many
    worker processes or bootstrap resamples are used)."""
    import hashlib

    from age2hie_hub.train.config import to_dict

    d = to_dict(cfg)
    for key in ("run_dir", "cache_dir", "resume", "preprocess_workers", "cv"):
        d.pop(key, None)
    for key in ("progress", "workers", "device"):
        d["loop"].pop(key, None)
    d["cv_folds"] = [cfg.cv.folds, cfg.cv.seed]
    blob = json.dumps({"recipe": d, "data": cohort.sha256, "subjects": cohort.subjects}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _region_volumes(cfg: Any, cohort: Cohort) -> np.ndarray:
    from age2hie_hub.train.baselines import dlmuse_volumes

    labels = Path(cfg.cv.labels).expanduser()
    if not labels.is_absolute():
        if cfg.data.get("format") != "bids":
            raise ValueError(f"cv.labels {cfg.cv.labels!r} is relative: give an absolute folder for a "
                             f"{cfg.data.get('format')!r} cohort (relative means: inside a BIDS root)")
        labels = Path(cfg.data["path"]).expanduser() / labels
    vols = dlmuse_volumes(cohort, labels)
    log.info("ridge_dlmuse: %d region volumes per subject from %s", vols.labels.size, labels)
    return vols.volumes


def cross_validate_brain_age(cfg: Any, cohort: Cohort, files: list[Path], run_dir: Path, *,
                             final_train: np.ndarray | None = None, final_state_dir: Path | None = None) -> dict[str, Any]:
    """k-fold CV of the brain-age recipe in ``cfg`` (a PretrainConfig with ``cv``): every case tested once.

    On the same folds: the baselines (training-fold mean; ridge on region volumes, penalty by inner CV on the
    training fold), raw and age-bias-corrected metrics (MAE, Pearson r, bias with 95 % bootstrap CIs over
    subjects), paired per-subject comparisons of absolute errors, plots and per-subject predictions, all
    under ``run_dir``. Returns the summary and what the final checkpoint records (``checkpoint_metrics``).
    ``final_train``: the final model is trained on these positions in the same worker pool (``out["final"]``).
    """
    from age2hie_hub.train import report
    from age2hie_hub.train.baselines import DEFAULT_ALPHAS, predict_baseline
    from age2hie_hub.train.splits import quantile_strata, stratified_kfold
    from age2hie_hub.train.stages import write_json

    cv = cfg.cv
    t0 = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    ages = cohort.labels
    folds = stratified_kfold(quantile_strata(ages), cv.folds, cv.seed)
    fold_of = np.empty(len(cohort), dtype=np.int64)
    for f, (_, test) in enumerate(folds):
        fold_of[test] = f
    preds: dict[str, np.ndarray] = {}
    fold_rows: list[dict[str, Any]] = []

    net, final = _cv_network_rows(cfg, cohort, files, folds, run_dir, final_train, final_state_dir)
    preds[CNN] = np.empty(len(cohort))
    for f, (_, test) in enumerate(folds):
        preds[CNN][test] = net[f]["y_pred"]
        fold_rows.append({"method": CNN, "fold": f, "n_test": int(test.size), "n_train": net[f]["n_fit"],
                          "seconds": net[f]["seconds"], **M.regression_metrics(ages[test], preds[CNN][test])})
    timings = {"fold_fits_summed_s": sum(net[f]["seconds"] for f in range(len(folds)))}

    t = time.perf_counter()
    volumes = _region_volumes(cfg, cohort) if "ridge_dlmuse" in cv.baselines else None
    chosen: dict[str, list[Any]] = {}
    for name in cv.baselines:
        preds[name] = np.empty(len(cohort))
        for f, (train, test) in enumerate(folds):
            x = (volumes[train], volumes[test]) if name == "ridge_dlmuse" else (None, None)
            preds[name][test], info = predict_baseline(
                name, ages[train], test.size, x_train=x[0], x_test=x[1],
                alphas=cv.ridge_alphas or DEFAULT_ALPHAS, inner_folds=cv.inner_folds, seed=_fold_seed(cv.seed, f))
            chosen.setdefault(name, []).append(info)
            fold_rows.append({"method": name, "fold": f, "n_test": int(test.size), "n_train": int(train.size),
                              **info, **M.regression_metrics(ages[test], preds[name][test])})
    timings["baselines_s"] = time.perf_counter() - t

    # Age-bias correction: the line for fold f comes from the other folds' out-of-fold predictions only.
    lines: dict[str, list[dict[str, float]]] = {}
    if cv.bias_correction:
        for name in list(preds):
            corrected = np.empty(len(cohort))
            for f, (_, test) in enumerate(folds):
                other = fold_of != f
                line = M.fit_age_bias(ages[other], preds[name][other])
                lines.setdefault(name, []).append(line)
                corrected[test] = M.correct_age_bias(preds[name][test], ages[test], line["a"], line["b"])
            preds[name + CORRECTED] = corrected

    protocol = f"{cv.folds}-fold CV"
    summary = []
    for name, p in preds.items():
        pooled = M.regression_summary(ages, p, n_boot=cv.n_boot, seed=cv.seed)
        row: dict[str, Any] = {"method": name, "protocol": protocol, "n_splits": cv.folds, "n_seeds": 1,
                               "n": len(cohort)}
        for key in metric_keys("regression"):
            per_fold = [M.REGRESSION_METRICS[key](ages[fold_of == f], p[fold_of == f]) for f in range(cv.folds)]
            s = pooled[key]
            row.update({f"{key}_mean": s["value"], f"{key}_sd": float(np.std(per_fold, ddof=1)),
                        f"{key}_ci_low": s["ci_low"], f"{key}_ci_high": s["ci_high"],
                        f"{key}_text": f"{s['value']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"})
        summary.append(row)

    comparisons = []
    for name in cv.baselines:
        # Corrected errors of the mean predictor are ~0 by construction: no comparison with it is meaningful.
        for suffix in ("", CORRECTED) if cv.bias_correction and name != "mean" else ("",):
            a, b = np.abs(preds[CNN + suffix] - ages), np.abs(preds[name + suffix] - ages)
            boot = M.paired_bootstrap(a, b, seed=cv.seed)
            perm = M.sign_flip_test(a, b, seed=cv.seed)
            comparisons.append({"method": CNN + suffix, "reference": name + suffix, "protocol": protocol,
                                "metric": "mae", "n_pairs": boot["n"], "mean_diff": boot["mean_diff"],
                                "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
                                "p_sign_flip": perm["p_value"], "p_bootstrap": boot["p_value"],
                                "pairs": "subjects (absolute errors)"})

    final_line = M.fit_age_bias(ages, preds[CNN])
    timings["total_s"] = time.perf_counter() - t0
    out = {
        "summary": summary, "comparisons": comparisons, "per_fold": fold_rows, "n_cases": len(cohort),
        "sites": {str(s): int((cohort.sites == s).sum()) for s in sorted(set(cohort.sites))},
        "folds": [[cohort.subjects[i] for i in test] for _, test in folds],
        "bias_lines": lines, "baseline_choices": chosen, "timings": timings, "synthetic": cfg.synthetic,
        "age_bias_correction": _bias_record(final_line, cv.folds),
    }
    out["evaluation"] = evaluation_record(summary, comparisons, n_cases=out["n_cases"], sites=out["sites"],
                                          task=cohort.target_name).to_dict()
    out["checkpoint_metrics"] = _cv_checkpoint_metrics(out, ages, preds[CNN], cv.folds)
    if D.rank() == 0:
        subjects = cohort.subjects
        table = [{"subject": s, "age": float(ages[i]), "fold": int(fold_of[i]),
                  **{name: float(p[i]) for name, p in preds.items()}} for i, s in enumerate(subjects)]
        report.write_csv(table, run_dir / "predictions.csv")
        report.write_csv(summary, run_dir / "table.csv")
        report.write_csv(comparisons, run_dir / "comparisons.csv")
        report.write_csv(fold_rows, run_dir / "per_fold.csv")
        (run_dir / "table.md").write_text(report.brain_age_markdown(out, synthetic=cfg.synthetic), encoding="utf-8")
        write_json(out, run_dir / "metrics.json")
        try:
            raw = {k: v for k, v in preds.items() if not k.endswith(CORRECTED)}
            label = "SYNTHETIC data: " if cfg.synthetic else ""
            title = f"{label}{protocol}, out-of-fold predictions of {len(cohort)} subjects"
            report.plot_brain_age(ages, raw, run_dir / "pred_vs_true.png", kind="pred", title=title)
            report.plot_brain_age(ages, raw, run_dir / "residual_vs_age.png", kind="residual", title=title)
        except ImportError:
            log.warning("matplotlib is not installed (pip install age2hie-hub[train]); tables written, plots skipped")
    D.barrier()
    cnn = next(r for r in summary if r["method"] == CNN)
    log.info("cv: %s MAE %.2f [%.2f, %.2f], r %.3f", CNN, cnn["mae_mean"], cnn["mae_ci_low"], cnn["mae_ci_high"],
             cnn["pearson_r_mean"])
    if final is not None:
        out["final"] = final  # weights of the final model (not written to metrics.json)
    return out


def _fold_seed(seed: int, fold: int) -> int:
    from age2hie_hub.train.data import hash_seed

    return hash_seed(seed, fold, 31)


def _bias_record(line: dict[str, float], folds: int) -> dict[str, Any]:
    return {
        "method": "linear (de Lange & Cole 2020): corrected = predicted + age - (a + b * age)",
        "a": line["a"], "b": line["b"], "n": line["n"],
        "fitted_on": f"out-of-fold predictions of the {folds}-fold cross-validation of this recipe",
        "needs_chronological_age": True,
        "note": "population-level correction for group analyses; the raw prediction is the model's brain age",
    }


def _cv_checkpoint_metrics(out: dict[str, Any], ages: np.ndarray, pred: np.ndarray, folds: int) -> dict[str, Any]:
    """What the final checkpoint records about its cross-validation: the table in brief, the bias line and the
    out-of-fold (age, residual) pairs (residual = predicted - age) for later prediction intervals."""
    brief = {}
    for row in out["summary"]:
        brief[row["method"]] = {k: {"value": row[f"{k}_mean"], "sd_over_folds": row[f"{k}_sd"],
                                    "ci95": [row[f"{k}_ci_low"], row[f"{k}_ci_high"]]} for k in metric_keys("regression")}
    return {
        "cv": {"folds": folds, "n": int(ages.size), "protocol": f"{folds}-fold CV", "methods": brief,
               "ci": "95 % percentile bootstrap over subjects; sd over folds"},
        "age_bias_correction": out["age_bias_correction"],
        "cv_residuals": {"columns": ["age", "residual"], "residual": "predicted - age, out of fold, raw",
                         "pairs": [[round(float(a), 2), round(float(p - a), 3)] for a, p in zip(ages, pred, strict=True)]},
    }
