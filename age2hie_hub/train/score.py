"""Score a published binary checkpoint, as it is, against a cohort's 0/1 target: discrimination and calibration.

``age2hie-train score CONFIG``: the checkpoint runs through the package's own ``Predictor`` (its own
preprocessing, exactly what a user gets), on every case of the cohort, and its probability of class 1 is
compared with the target: AUC, Brier score (and the Brier score of predicting the cohort's rate), expected
calibration error (10 fixed bins), calibration-in-the-large (mean probability vs observed rate), calibration
intercept and slope (logistic recalibration), and accuracy / sensitivity / specificity at the model's own
threshold, each with a 95 % bootstrap CI over cases. Outputs in ``run_dir``: predictions.csv, metrics.json,
table.md and reliability.png.

What the target is, is the cohort's business: scoring the bundled outcome model against a proxy target (e.g.
lesion burden >= 1 %) says how its probabilities line up with that proxy, not how well it predicts outcome.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub._atomic import write_text_atomic
from age2hie_hub.train import metrics as M
from age2hie_hub.train.manifest import Cohort, read_cohort

log = logging.getLogger(__name__)

__all__ = ["ScoreConfig", "score_checkpoint", "calibration_line"]


@dataclass(frozen=True)
class ScoreConfig:
    """Which checkpoint, on which cohort and target (``data`` as in every config: a ``read_cohort`` spec)."""

    model: str = "age2hie"  # a folder, an alias or a Hub name
    data: dict[str, Any] = field(default_factory=lambda: {"format": "bonbid", "path": "data/hie", "target": "outcome"})
    positive: str = "1"  # the target class the model's probability is compared with
    backend: str = "torch"  # or "onnx"
    device: str = "cpu"
    n_boot: int = 2000
    seed: int = 0
    run_dir: str = "runs/score"


def calibration_line(y: Any, p: Any, iterations: int = 50) -> tuple[float, float]:
    """(intercept, slope) of the logistic recalibration y ~ a + b * logit(p); perfect calibration is (0, 1)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    if y.size < 3 or y.min() == y.max():
        return float("nan"), float("nan")
    x = np.stack([np.ones_like(p), np.log(p / (1 - p))], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):  # Newton-Raphson (IRLS) with a tiny ridge so separable data stays finite
        mu = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (y - mu) - 1e-6 * w
        hess = (x * (mu * (1 - mu))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, dict[str, float]]:
    rate = float(y.mean())
    fns = {
        "auc": M.auc,
        "brier": M.brier,
        "brier_predict_rate": lambda yy, pp: M.brier(yy, np.full(yy.size, rate)),
        "ece": M.ece,
        "mean_probability": lambda yy, pp: float(np.mean(pp)),
        "observed_rate": lambda yy, pp: float(np.mean(yy)),
        "calibration_intercept": lambda yy, pp: calibration_line(yy, pp)[0],
        "calibration_slope": lambda yy, pp: calibration_line(yy, pp)[1],
        "accuracy": lambda yy, pp: M.accuracy(yy, pp, threshold),
        "sensitivity": lambda yy, pp: M.sensitivity(yy, pp, threshold),
        "specificity": lambda yy, pp: M.specificity(yy, pp, threshold),
    }
    out = {}
    for name, fn in fns.items():
        point, lo, hi = M.bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed)
        out[name] = {"value": float(point), "ci_low": lo, "ci_high": hi}
    return out


def _binary_target(cohort: Cohort, positive: str) -> np.ndarray:
    if cohort.task != "classification" or len(cohort.classes) != 2:
        raise ValueError(f"{cohort.source}: target {cohort.target_name!r} must have two classes to score a "
                         f"probability against, got {cohort.task} {list(cohort.classes)[:5]}")
    if positive not in cohort.classes:
        raise ValueError(f"{cohort.source}: positive class {positive!r} is not one of {list(cohort.classes)}")
    return (cohort.labels == cohort.classes.index(positive)).astype(np.int64)


def score_checkpoint(cfg: ScoreConfig, cohort: Cohort | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Predict every case with ``cfg.model`` and score P(class 1) against the cohort's 0/1 target."""
    from age2hie_hub.inference import Predictor

    t0 = time.perf_counter()
    cohort = cohort if cohort is not None else read_cohort(cfg.data)
    y = _binary_target(cohort, str(cfg.positive))
    predictor = Predictor.from_pretrained(cfg.model, backend=cfg.backend, device=cfg.device)
    config = predictor.config
    if config.task != "hie_outcome":
        raise ValueError(f"{cfg.model}: a {config.task!r} checkpoint; score needs a binary model (task hie_outcome) "
                         "whose probability is compared with the target")
    if config.preprocess.channels != cohort.n_channels:
        raise ValueError(f"{cfg.model} takes {config.preprocess.channels} input channel(s), the cohort "
                         f"{cohort.source} gives {cohort.n_channels} ({', '.join(cohort.modalities)})")
    firsts = [c.paths[0] for c in cohort.cases]
    seconds = [c.paths[1] for c in cohort.cases] if cohort.n_channels == 2 else None
    preds = predictor.predict_many(firsts, second_channels=seconds, progress=progress)
    p = np.array([float(pr.probability) for pr in preds])
    threshold = float(config.threshold)
    metrics = _metrics(y, p, threshold, cfg.n_boot, cfg.seed)
    warned = [c.subject for c, pr in zip(cohort.cases, preds, strict=True) if pr.warnings]
    out = {
        "model": cfg.model, "weights_sha256": predictor.model_info.model_file_sha256,
        "model_synthetic": predictor.synthetic, "model_task": config.task, "model_labels": list(config.labels),
        "threshold": threshold, "target": cohort.target_name, "positive": str(cfg.positive), "source": cohort.source,
        "data_manifest_sha256": cohort.sha256, "n_cases": len(cohort), "n_positive": int(y.sum()),
        "sites": {str(s): int((cohort.sites == s).sum()) for s in sorted(set(cohort.sites))},
        "metrics": metrics, "n_boot": cfg.n_boot, "cases_with_warnings": warned,
        "seconds": time.perf_counter() - t0,
    }
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_predictions(run_dir / "predictions.csv", cohort, y, p, preds)
    from age2hie_hub.train.stages import write_json

    write_json(out, run_dir / "metrics.json")
    write_text_atomic(run_dir / "table.md", score_markdown(out))
    try:
        _plot_reliability(y, p, run_dir / "reliability.png", out)
    except ImportError:
        log.warning("matplotlib is not installed (pip install age2hie-hub[train]); reliability plot skipped")
    return out


def _write_predictions(path: Path, cohort: Cohort, y: np.ndarray, p: np.ndarray, preds: list[Any]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "site", cohort.target_name, "probability", "warnings"])
    for c, t, prob, pr in zip(cohort.cases, y.tolist(), p.tolist(), preds, strict=True):
        w.writerow([c.subject, c.site, t, f"{prob:.6f}", " | ".join(pr.warnings)])
    write_text_atomic(path, buf.getvalue())


_ROWS = (("auc", "AUC"), ("brier", "Brier score"), ("brier_predict_rate", "Brier score of predicting the rate"),
         ("ece", "ECE (10 bins)"), ("mean_probability", "mean probability"), ("observed_rate", "observed rate"),
         ("calibration_intercept", "calibration intercept (0 = calibrated)"),
         ("calibration_slope", "calibration slope (1 = calibrated)"), ("accuracy", "accuracy at the threshold"),
         ("sensitivity", "sensitivity"), ("specificity", "specificity"))


def score_markdown(out: dict[str, Any]) -> str:
    kind = "SYNTHETIC-data model" if out["model_synthetic"] else "model"
    lines = [f"#### {kind} `{out['model']}` scored against `{out['target']}` = {out['positive']}", "",
             f"{out['n_cases']} cases ({out['n_positive']} positive), sites {out['sites']}; the model's "
             f"P({out['model_labels'][-1] if out['model_labels'] else 'class 1'}) vs the target; threshold "
             f"{out['threshold']:g}; 95 % bootstrap CIs over cases ({out['n_boot']} resamples).", "",
             "| metric | value [95 % CI] |", "|---|---|"]
    for key, label in _ROWS:
        m = out["metrics"][key]
        lines.append(f"| {label} | {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] |")
    if out["cases_with_warnings"]:
        lines += ["", f"{len(out['cases_with_warnings'])} case(s) had input warnings (predictions.csv)."]
    return "\n".join(lines) + "\n"


def _plot_reliability(y: np.ndarray, p: np.ndarray, path: Path, out: dict[str, Any]) -> None:
    from age2hie_hub.train.report import _pyplot, _save_figure

    plt = _pyplot()
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(4.6, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
    for b in range(10):
        sel = idx == b
        if sel.any():
            ax.plot(p[sel].mean(), y[sel].mean(), "o", color="C0", ms=3 + 1.5 * np.sqrt(sel.sum()))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set_ylabel(f"observed rate of {out['target']}")
    kind = "SYNTHETIC-data model " if out["model_synthetic"] else ""
    m = out["metrics"]
    ax.set_title(f"{kind}{out['model']}: AUC {m['auc']['value']:.2f}, ECE {m['ece']['value']:.2f}", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    hx.hist([p[y == 0], p[y == 1]], bins=edges, stacked=True, label=["target 0", "target 1"], color=["C7", "C3"])
    hx.set_xlabel("predicted probability")
    hx.set_ylabel("cases")
    hx.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(plt, fig, path)
