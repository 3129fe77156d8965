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

from age2hie_hub.train import distributed as D
from age2hie_hub.train import metrics as M
from age2hie_hub.train.config import LearningCurveConfig, MethodConfig, TransferConfig
from age2hie_hub.train.manifest import Cohort
from age2hie_hub.train.splits import Split, learning_curve_subsets, make_splits

log = logging.getLogger(__name__)

# Reported per method x protocol; the first ones lead the Markdown table.
CLASSIFICATION_KEYS = ("accuracy", "balanced_accuracy", "auc", "f1", "sensitivity", "specificity", "brier", "ece")
REGRESSION_KEYS = ("mae", "pearson_r", "bias")


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
             checkpoint_writer: Any = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train and test every (method, split[, size]); returns all rows (including ones done earlier)."""
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
        lc_splits = []
        for seed in seeds:
            lc_splits += make_splits(learning_curve.protocol, strata, sites, k=k, seeds=[seed])[:learning_curve.max_splits]
        for split in lc_splits:
            subsets = learning_curve_subsets(split.train, strata, learning_curve.sizes, seed=split.seed)
            for size, train in subsets.items():
                if size == split.train.size and learning_curve.protocol in protocols:
                    continue  # identical to the protocol's own full-size row, which the curve reuses
                jobs += [(m, split, size, train) for m in methods]
    rows = []
    bar = tqdm(jobs, desc="grid", disable=not (progress and D.rank() == 0))
    for method, split, size, train in bar:
        rid = _row_id(method.name, split, size)
        bar.set_postfix_str(rid[-50:])
        if rid in done:
            rows.append(done[rid])
            continue
        t0 = time.perf_counter()
        res = fit_split(method, cohort, files, train, split.test, cfg, seed=split.seed)
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
    keys = CLASSIFICATION_KEYS if any("accuracy" in r for r in full) else REGRESSION_KEYS
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
            pairs = [(a, b) for a, b in pairs if b is not None]
            for key in keys:
                a = [p[0].get(key, float("nan")) for p in pairs]
                b = [p[1].get(key, float("nan")) for p in pairs]
                if not pairs or not np.isfinite(np.asarray(a) - np.asarray(b)).any():
                    continue
                boot = M.paired_bootstrap(a, b)
                perm = M.sign_flip_test(a, b)
                out.append({"method": method, "reference": reference, "protocol": protocol, "metric": key,
                            "n_pairs": boot["n"], "mean_diff": boot["mean_diff"], "ci_low": boot["ci_low"],
                            "ci_high": boot["ci_high"], "p_sign_flip": perm["p_value"],
                            "p_bootstrap": boot["p_value"]})
    return out


def learning_curve_table(rows: Sequence[dict[str, Any]], protocol: str, metric: str = "accuracy") -> list[dict[str, Any]]:
    """Per method and training size: mean, sd and CI of ``metric`` over the learning-curve splits."""
    lc_splits = {(r["seed"], r["split"]) for r in rows if r["learning_curve"]}
    sel = [r for r in rows if r["protocol"] == protocol and (r["seed"], r["split"]) in lc_splits]
    full = [r["train_size"] for r in sel if not r["learning_curve"]]
    # Full training folds differ by a case or two in size; they form one point at their mean size.
    all_size = int(round(float(np.mean(full)))) if full else -1

    def size_of(r: dict[str, Any]) -> int:
        return r["train_size"] if r["learning_curve"] else all_size

    out = []
    for method in dict.fromkeys(r["method"] for r in sel):
        for size in sorted({size_of(r) for r in sel if r["method"] == method}):
            vals = [r.get(metric, float("nan")) for r in sel if r["method"] == method and size_of(r) == size]
            s = M.summarize(vals, n_boot=1000)
            out.append({"method": method, "train_size": size, "metric": metric, **s})
    return out
