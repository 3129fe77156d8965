"""Synthetic-cohort speed and content (SYNTHETIC DATA): time the two cohort writers against the goals
(156 HIE cases < 2 min, 500 T1 volumes at 1.5-2 mm < 10 min, on 2 cores) and print what they generated.

    python benchmarks/bench_synth.py [--n-hie 156] [--n-t1 500] [--workers 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from age2hie_hub.synth import make_brain_age_cohort, make_hie_cohort


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-hie", type=int, default=156)
    p.add_argument("--n-t1", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="write the cohorts here instead of a temporary folder")
    args = p.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_synth_"))
    rows = []
    try:
        if args.n_hie:
            t = time.perf_counter()
            hie = make_hie_cohort(root / "hie", args.n_hie, args.seed, workers=args.workers, overwrite=True)
            rows.append(("HIE ADC (BONBID layout)", args.n_hie, time.perf_counter() - t, 120.0 * args.n_hie / 156))
        if args.n_t1:
            t = time.perf_counter()
            t1 = make_brain_age_cohort(root / "t1", args.n_t1, args.seed, workers=args.workers, overwrite=True)
            rows.append(("T1 lifespan (BIDS, 1.5-2 mm)", args.n_t1, time.perf_counter() - t, 600.0 * args.n_t1 / 500))
        print(f"\nSYNTHETIC cohorts, {args.workers} worker(s), {os.cpu_count()} CPUs visible, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'cohort':30s} {'n':>5s} {'wall s':>8s} {'s/case':>7s} {'goal s':>7s} {'ok':>4s}")
        for name, n, wall, goal in rows:
            print(f"{name:30s} {n:5d} {wall:8.1f} {wall / n:7.2f} {goal:7.0f} {'yes' if wall < goal else 'NO':>4s}")
        if args.n_hie:
            s = hie.subjects
            print("\nHIE content")
            for site in sorted({x["site"] for x in s}):
                sub = [x for x in s if x["site"] == site]
                les = np.array([x["lesion_volume_ml"] for x in sub])
                print(f"  {site}: n={len(sub)} adverse={np.mean([x['outcome'] for x in sub]):.2f} "
                      f"stored mean in mask={np.mean([x['stored_mean_in_mask'] for x in sub]):.0f} "
                      f"lesion mL median={np.median(les):.1f} max={les.max():.1f} "
                      f"slices={min(x['shape'][2] for x in sub)}-{max(x['shape'][2] for x in sub)} "
                      f"in-plane mm={min(x['spacing'][0] for x in sub):.2f}-{max(x['spacing'][0] for x in sub):.2f}")
            print(f"  overall adverse rate {np.mean([x['outcome'] for x in s]):.3f}")
            adc = [x["lesion_mean_adc_mm2s"] for x in s if x["lesion_mean_adc_mm2s"] is not None]
            print(f"  lesion mean ADC (mm2/s) 5-95 %: {np.percentile(adc, 5):.2e} - {np.percentile(adc, 95):.2e}")
        if args.n_t1:
            s = t1.subjects
            ages = np.array([x["age"] for x in s])
            print("\nT1 content (means by age band)")
            print(f"  {'age':>9s} {'n':>4s} {'ICV mL':>7s} {'GM mL':>7s} {'WM mL':>7s} {'CSF mL':>7s} {'vent mL':>8s}")
            for lo, hi in ((0, 2), (2, 10), (10, 30), (30, 50), (50, 70), (70, 98)):
                sub = [x for x, a in zip(s, ages) if lo <= a < hi]
                if sub:
                    m = {k: np.mean([x[k] for x in sub]) for k in ("icv_ml", "gm_ml", "wm_ml", "csf_ml", "ventricle_ml")}
                    print(f"  {lo:3d}-{hi:<3d} y {len(sub):4d} {m['icv_ml']:7.0f} {m['gm_ml']:7.0f} {m['wm_ml']:7.0f} "
                          f"{m['csf_ml']:7.0f} {m['ventricle_ml']:8.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
