"""Input QC on real scans: how often the right kind of scan is flagged, and how often the wrong kind is.

    python benchmarks/bench_qc_real.py [--data ../shared/data] [--hie DIR] [--folds 5] [--workers 2]

Two QC records, built exactly as training builds them (``age2hie_hub.train.input_stats``):

- brain age (T1w): from the real IXI T1 scans with a recorded age (what the bundled brain-age model trains on).
  IXI scans are scored **cross-validated**: each fold's scans against a record made from the other folds only,
  so the rate of right-kind scans flagged is not an in-sample number;
- age2hie (ADC): from the SYNTHETIC BONBID-HIE-layout neonatal ADC cohort the bundled age2hie model trains on
  (``--hie``: the build's data/hie; made in a temporary folder with the build's parameters when not given).

Then: real T1 (IXI) into the ADC model and real ADC (BONBID-HIE 2023, skull-stripped neonatal) into the T1 model
should be flagged (wrong modality / age group); IXI into brain age and real BONBID into age2hie should pass. The
last is the open question: the age2hie record comes from synthetic scans, real BONBID may not look like them.
Prints one table of rates (with 95 % Wilson intervals) and, per row, which features flagged how many scans.
"""
from __future__ import annotations

import argparse
import glob
import math
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from age2hie_hub.inference import qc  # noqa: E402

HIE_COHORT = {"n": 156, "seed": 0}  # as export/build_default_models.py makes it


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    z = 1.96
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def features(paths: list[str], modality: str, workers: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: qc.input_features([p], (modality,))[0], paths))


def flags_of(feats: dict[str, Any], record: dict[str, Any], modality: str) -> list[str]:
    return [f.feature for f in qc.check_channel(feats, record, modality, 0, qc.MARGIN)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--hie", type=Path, help="the synthetic HIE training cohort (BONBID layout); default: made here")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", nargs=2, metavar=("BRAIN_AGE", "AGE2HIE"),
                    help="also score against the input_qc records these two checkpoints carry (e.g. the bundled "
                    "brain-age age2hie); their IXI / synthetic rows are then in-sample")
    args = ap.parse_args(argv)

    from age2hie_hub.train.manifest import read_bids, read_cohort

    t0 = time.perf_counter()
    ixi_cohort = read_bids(args.data / "ixi_t1", target="age", task="regression")
    ixi_all = sorted(glob.glob(str(args.data / "ixi_t1" / "sub-*" / "anat" / "*_T1w.nii.gz")))
    bonbid = sorted(glob.glob(str(args.data / "bonbid2023" / "1ADC_ss" / "*.mha")))
    tmp = None
    if args.hie is None:
        from age2hie_hub.synth import make_hie_cohort

        tmp = tempfile.TemporaryDirectory(prefix="bench-qc-hie-")
        args.hie = Path(tmp.name) / "hie"
        make_hie_cohort(args.hie, HIE_COHORT["n"], HIE_COHORT["seed"], workers=args.workers)
    hie_cohort = read_cohort({"format": "bonbid", "path": str(args.hie), "target": "outcome"})
    synth = [c.paths[0] for c in hie_cohort.cases]

    ixi_train = [c.paths[0] for c in ixi_cohort.cases]
    f_ixi_t1 = dict(zip(ixi_all, features(ixi_all, "T1w", args.workers)))
    f_ixi_adc = features(ixi_all, "ADC", args.workers)
    f_bon_t1 = features(bonbid, "T1w", args.workers)
    f_bon_adc = features(bonbid, "ADC", args.workers)
    f_synth = features(synth, "ADC", args.workers)
    t_feat = time.perf_counter() - t0

    # brain age: record from IXI subjects with an age; cross-validated for IXI itself
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ixi_train))
    folds = [set(ixi_train[i] for i in order[k::args.folds]) for k in range(args.folds)]
    record_all = qc.summarise([f_ixi_t1[p] for p in ixi_train])
    ixi_flags = []
    for p in ixi_all:
        held = next((f for f in folds if p in f), set())  # scans without an age were never training scans
        rec = qc.summarise([f_ixi_t1[q] for q in ixi_train if q not in held])
        ixi_flags.append(flags_of(f_ixi_t1[p], rec, "T1w"))
    hie_record = qc.summarise(f_synth)
    s_order = rng.permutation(len(synth))
    s_folds = [set(s_order[k::args.folds]) for k in range(args.folds)]
    synth_flags = []
    for k, held in enumerate(s_folds):
        rec = qc.summarise([f for i, f in enumerate(f_synth) if i not in held])
        synth_flags += [flags_of(f_synth[i], rec, "ADC") for i in sorted(held)]

    rows = [
        ("IXI T1 -> brain-age (right kind, CV)", ixi_flags, "<= 5 %"),
        ("BONBID ADC -> brain-age (wrong kind)", [flags_of(f, record_all, "T1w") for f in f_bon_t1], ">= 95 %"),
        ("IXI T1 -> age2hie (wrong kind)", [flags_of(f, hie_record, "ADC") for f in f_ixi_adc], ">= 95 %"),
        ("BONBID ADC -> age2hie (right kind, real)", [flags_of(f, hie_record, "ADC") for f in f_bon_adc], "<= 5 %"),
        ("synthetic ADC -> age2hie (own cohort, CV)", synth_flags, "(in-distribution check)"),
    ]
    xa30 = args.data / "siemens_xa30_dwi"
    if xa30.is_dir():  # one real adult scan of each kind from another scanner (Siemens Prisma, XA30)
        adult_adc = features([str(xa30 / "scanner_adc")], "ADC", 1)
        siemens_t1 = features([str(xa30 / "t1w")], "T1w", 1)
        rows += [
            ("adult ADC (Siemens XA30) -> age2hie (wrong age group)", [flags_of(f, hie_record, "ADC") for f in adult_adc], "flag"),
            ("adult T1 MPRAGE (Siemens XA30) -> brain-age (right kind, other scanner)",
             [flags_of(f, record_all, "T1w") for f in siemens_t1], "pass"),
        ]
    if args.models:
        from age2hie_hub.hub.resolve import resolve_checkpoint
        from age2hie_hub.hub import read_config

        recs = []
        for name in args.models:
            cfg = read_config(resolve_checkpoint(name).folder)
            if not cfg.input_qc:
                raise SystemExit(f"{name}: its config.json has no input_qc record")
            recs.append(cfg.input_qc["channels"][0])
        rows += [
            (f"IXI T1 -> {args.models[0]} record (in-sample)", [flags_of(f_ixi_t1[p], recs[0], "T1w") for p in ixi_all], "<= 5 %"),
            (f"BONBID ADC -> {args.models[0]} record", [flags_of(f, recs[0], "T1w") for f in f_bon_t1], ">= 95 %"),
            (f"IXI T1 -> {args.models[1]} record", [flags_of(f, recs[1], "ADC") for f in f_ixi_adc], ">= 95 %"),
            (f"BONBID ADC -> {args.models[1]} record (real)", [flags_of(f, recs[1], "ADC") for f in f_bon_adc], "<= 5 %"),
        ]
    print(f"# Input QC on real scans (margin {qc.MARGIN}; records: IXI T1 n={len(ixi_train)}, synthetic HIE ADC "
          f"n={len(synth)}); features of {len(ixi_all) * 2 + len(bonbid) * 2 + len(synth)} reads in {t_feat:.0f} s "
          f"on {args.workers} threads (shared, noisy machine)\n")
    print("| scans -> model | n | flagged | rate | 95 % CI | goal |")
    print("|---|---:|---:|---:|---|---|")
    for name, flags, goal in rows:
        k = sum(bool(f) for f in flags)
        lo, hi = wilson(k, len(flags))
        print(f"| {name} | {len(flags)} | {k} | {100 * k / len(flags):.1f} % | {100 * lo:.1f} - {100 * hi:.1f} % | {goal} |")
    print("\nFeatures that flagged (scans per feature):\n")
    for name, flags, _ in rows:
        counts = Counter(f for fl in flags for f in fl)
        print(f"- {name}: " + (", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none"))
    print("\nTraining ranges (1st-99th percentile) -> accepted range:\n")
    for label, rec, modality in (("brain-age (IXI T1)", record_all, "T1w"), ("age2hie (synthetic ADC)", hie_record, "ADC")):
        parts = []
        for feat, st in rec["features"].items():
            if not qc.FEATURES[feat][1] and modality not in qc.ADC_MODALITIES:
                continue
            lo, hi = qc.accepted_range(st, feat, qc.MARGIN)
            parts.append(f"{feat} {st['p01']:.3g}-{st['p99']:.3g} -> {lo:.3g}-{hi:.3g}")
        print(f"- {label}: " + "; ".join(parts))
    real = {"BONBID (real)": f_bon_adc, "synthetic": f_synth}
    print("\nBONBID real vs synthetic ADC (median [min, max]):\n")
    for feat in ("foreground_ml", "extent_mm", "zero_fraction", "p95_over_median", "p05_over_median", "skewness",
                 "median_value"):
        cells = []
        for label, fs in real.items():
            v = np.array([f[feat] for f in fs if feat in f])
            cells.append(f"{label} {np.median(v):.3g} [{v.min():.3g}, {v.max():.3g}]")
        print(f"- {feat}: " + "; ".join(cells))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
