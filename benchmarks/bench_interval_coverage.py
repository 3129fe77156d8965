"""Empirical coverage of the recorded uncertainty on held-out cases (nested inside the cross-validation).

    python benchmarks/bench_interval_coverage.py --cv RUN/cv                 # brain age: a pretrain cv: folder
    python benchmarks/bench_interval_coverage.py --experiment RUN --method transfer   # outcome: an experiment

Brain age (``--cv``, reads predictions.csv: subject, age, fold, one column per method): for each fold f the
split-conformal quantile is fitted on the other folds' out-of-fold residuals only and the interval is applied to
fold f's cases; the table pools the folds (coverage, mean width, coverage per tertile of predicted age) for the
one-width and the age-adaptive interval at 80 / 90 / 95 %, and names the one the checkpoint record would use.

Outcome (``--experiment``, reads results.jsonl): the same nesting for the Platt map (ECE and Brier raw vs
calibrated) and the conformal prediction set (coverage, set sizes).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from age2hie_hub.train import calibration as C  # noqa: E402

LEVELS = (0.8, 0.9, 0.95)


def brain_age(cv: Path, methods: list[str]) -> None:
    with open(cv / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    age = np.array([float(r["age"]) for r in rows])
    fold = np.array([int(r["fold"]) for r in rows])
    print(f"# Brain-age interval coverage, nested in the {len(set(fold))}-fold CV of {cv} ({len(rows)} subjects)\n")
    print("| method | level | interval | coverage | mean width (y) | coverage by predicted-age tertile | record uses |")
    print("|---|---:|---|---:|---:|---|---|")
    for method in methods:
        if method not in rows[0]:
            continue
        pred = np.array([float(r[method]) for r in rows])
        for level in LEVELS:
            rec = C.regression_record(age, pred, level=level, folds=fold)["regression"]
            for adaptive in (False, True):
                c = C.nested_regression_coverage(age, pred, level, adaptive=adaptive, folds=fold)
                bins = ", ".join(f"{b['coverage'] * 100:.0f} %" for b in c["by_predicted_bin"])
                used = "yes" if rec["adaptive"]["used"] == adaptive else ""
                print(f"| {method} | {level:.2f} | {'age-adaptive' if adaptive else 'one width'} | "
                      f"{c['coverage'] * 100:.1f} % | {c['mean_width']:.1f} | {bins} | {used} |")
        rec = C.regression_record(age, pred, folds=fold)["regression"]
        print(f"\n{method}: {rec['adaptive']['why']}\n")


def outcome(folder: Path, method: str) -> None:
    y, p, fold, what = C.read_oof(folder, method)
    print(f"# Outcome calibration and prediction sets, nested in the folds of {folder} ({what}, {y.size} cases)\n")
    print("| level | set coverage | sets {one label} / {both} / {} | ECE raw | ECE calibrated | Brier raw | Brier calibrated |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for level in LEVELS:
        c = C.nested_binary_check(y, p, level, folds=fold)
        s = c["set_sizes"]
        print(f"| {level:.2f} | {c['set_coverage'] * 100:.1f} % | {s['1']} / {s['2']} / {s['0']} | {c['ece_raw']:.3f} | "
              f"{c['ece_calibrated']:.3f} | {c['brier_raw']:.3f} | {c['brier_calibrated']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cv", type=Path, help="a brain-age cross-validation folder (predictions.csv)")
    ap.add_argument("--methods", default="cnn,ridge_dlmuse", help="brain-age columns to check (default cnn,ridge_dlmuse)")
    ap.add_argument("--experiment", type=Path, help="an experiment folder (results.jsonl)")
    ap.add_argument("--method", default="transfer", help="the experiment's method (default transfer)")
    args = ap.parse_args(argv)
    if not (args.cv or args.experiment):
        ap.error("give --cv and/or --experiment")
    if args.cv:
        brain_age(args.cv, args.methods.split(","))
    if args.experiment:
        outcome(args.experiment, args.method)
    return 0


if __name__ == "__main__":
    sys.exit(main())
