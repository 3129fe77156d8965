"""The whole study in one call: pretrain brain age, then every method x protocol x seed, learning curves,
paired comparisons, tables (CSV + Markdown) and plots (PNG), all under ``run_dir``."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from age2hie_hub.train import distributed as D
from age2hie_hub.train import report
from age2hie_hub.train.config import ExperimentConfig, to_dict
from age2hie_hub.train.evaluate import (
    evaluation_record, learning_curve_comparisons, learning_curve_table, paired_comparisons, run_grid, summarize_rows,
)
from age2hie_hub.train.manifest import read_cohort
from age2hie_hub.train.parent import resolve_parent, target_preprocess
from age2hie_hub.train.stages import _checkpoint_config, _labels, _parent_extra, cached_arrays, pretrain, write_json

log = logging.getLogger(__name__)


def run_experiment(cfg: ExperimentConfig, *, evaluate_only: bool = False) -> dict[str, Any]:
    """Run the grid (after pretraining when ``cfg.pretrain`` is set and not ``evaluate_only``)."""
    t0 = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    if D.rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(to_dict(cfg), run_dir / "experiment_config.json")
    timings: dict[str, float] = {}
    pre_out = None
    methods = list(cfg.methods)
    if cfg.pretrain is not None and not evaluate_only:
        t = time.perf_counter()
        pre_out = pretrain(cfg.pretrain)
        timings["pretrain_s"] = time.perf_counter() - t
        # Methods starting from "the" brain-age checkpoint without naming one use the one just trained.
        methods = [dataclasses.replace(m, weights=pre_out["checkpoint"]) if m.init == "checkpoint" and not m.weights
                   else m for m in methods]
    elif cfg.pretrain is not None:
        # evaluate: use the brain-age checkpoint an earlier `experiment`/`pretrain` run wrote.
        ckpt = str(Path(cfg.pretrain.run_dir) / "checkpoint")
        methods = [dataclasses.replace(m, weights=ckpt) if m.init == "checkpoint" and not m.weights else m
                   for m in methods]
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    tcfg = cfg.transfer
    # Each parent checkpoint is resolved once: the same result gives the target preprocessing and every
    # split's starting weights.
    parents = {m.name: resolve_parent(m.weights) for m in methods if m.init == "checkpoint"}
    first = next(iter(parents.values()), None)  # its preprocessing is the target's default
    for name, parent in parents.items():
        if parent.preprocess != first.preprocess:
            log.warning("method %r: its parent %s was trained with other preprocessing than %s; every method is "
                        "trained and tested on the preprocessing derived from %s", name, parent.name, first.name,
                        first.name)
    t = time.perf_counter()
    cohort = read_cohort(tcfg.data)
    prep = target_preprocess(tcfg.preprocess, cohort.n_channels, first)
    files = cached_arrays(cohort, prep, tcfg.cache_dir, dtype=tcfg.cache_dtype, workers=tcfg.preprocess_workers)
    timings["preprocess_target_s"] = time.perf_counter() - t

    def save_fold(res, folder, row):  # a hub checkpoint per fold, when asked for
        from age2hie_hub.hub import save_pretrained

        ck = _checkpoint_config(res.model, prep, task="hie_outcome" if tcfg.head == "outcome" else "classification",
                                labels=_labels(tcfg, cohort), cohort=cohort, seed=row["seed"],
                                parent=res.provenance.get("parent"),
                                metrics={k: v for k, v in row.items() if k not in ("y_true", "y_pred", "test_subjects")},
                                synthetic=tcfg.synthetic, extra={"method": row["method"], "split": row["split"],
                                                                 **_parent_extra(res.provenance)})
        save_pretrained(res.model, folder, ck)

    t = time.perf_counter()
    rows = run_grid(cohort, files, methods, tcfg, protocols=cfg.protocols, k=cfg.k, seeds=cfg.seeds, run_dir=run_dir,
                    learning_curve=None if evaluate_only else cfg.learning_curve,
                    save_checkpoints=cfg.save_checkpoints, checkpoint_writer=save_fold, parents=parents)
    timings["grid_s"] = time.perf_counter() - t
    summary = summarize_rows(rows, n_boot=cfg.n_boot)
    reference = cfg.reference_method if cfg.reference_method in names else names[-1]
    comparisons = paired_comparisons(rows, reference)
    lc = (learning_curve_table(rows, cfg.learning_curve.protocol)
          if cfg.learning_curve is not None and not evaluate_only else [])
    lc_pairs = (learning_curve_comparisons(rows, cfg.learning_curve.protocol, reference) if lc else [])
    timings["total_s"] = time.perf_counter() - t0
    out = {"summary": summary, "comparisons": comparisons, "learning_curve": lc,
           "learning_curve_comparisons": lc_pairs, "timings": timings,
           "pretrain": pre_out["metrics"] if pre_out else None, "n_cases": len(cohort),
           "sites": {str(s): int((cohort.sites == s).sum()) for s in sorted(set(cohort.sites))},
           "synthetic": tcfg.synthetic, "target": cohort.target_name}
    out["evaluation"] = evaluation_record(summary, comparisons, n_cases=out["n_cases"], sites=out["sites"],
                                          task=cohort.target_name).to_dict()
    if D.rank() == 0:
        _write_outputs(out, run_dir, synthetic=tcfg.synthetic)
    D.barrier()
    return out


def _write_outputs(out: dict[str, Any], run_dir: Path, synthetic: bool) -> None:
    label = "SYNTHETIC data: " if synthetic else ""
    report.write_csv(out["summary"], run_dir / "table.csv")
    report.write_csv(out["comparisons"], run_dir / "comparisons.csv")
    if out["learning_curve"]:
        report.write_csv(out["learning_curve"], run_dir / "learning_curve.csv")
    if out.get("learning_curve_comparisons"):
        report.write_csv(out["learning_curve_comparisons"], run_dir / "learning_curve_comparisons.csv")
    md = []
    if out["pretrain"]:
        p = out["pretrain"]
        md += [f"## {label}brain-age pretraining", "",
               f"Held-out test MAE {p['test_mae']:.2f} (95 % CI {p['test_mae_ci95'][0]:.2f}-{p['test_mae_ci95'][1]:.2f}), "
               f"predict-the-mean baseline MAE {p['baseline_predict_mean_mae']:.2f}, Pearson r {p['test_pearson_r']:.3f}, "
               f"bias {p['test_bias']:+.2f}; n train/val/test {p['n_train']}/{p['n_val']}/{p['n_test']}.", ""]
    md.append(report.markdown_table(out["summary"], out["comparisons"], title=f"{label}{out.get('target', 'outcome')} prediction",
                                    note=f"{out['n_cases']} cases, sites {out['sites']}."))
    md.append(report.learning_curve_markdown(out["learning_curve"]))
    md.append(report.learning_curve_comparisons_markdown(out.get("learning_curve_comparisons", [])))
    md.append("Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in out["timings"].items()))
    (run_dir / "table.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    write_json(out, run_dir / "metrics.json")
    try:
        report.plot_protocols(out["summary"], run_dir / "protocols_accuracy.png", "accuracy", f"{label}accuracy")
        report.plot_protocols(out["summary"], run_dir / "protocols_auc.png", "auc", f"{label}AUC")
        if out["learning_curve"]:
            report.plot_learning_curve(out["learning_curve"], run_dir / "learning_curve.png", f"{label}learning curve")
    except ImportError:
        log.warning("matplotlib is not installed (pip install age2hie-hub[train]); tables written, plots skipped")
