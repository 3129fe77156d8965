"""age2hie-synth: write synthetic cohorts (brain-age T1 in BIDS, neonatal HIE ADC in the BONBID-HIE layout)
and PNG montages of them. Everything it writes is SYNTHETIC DATA and labelled so."""
from __future__ import annotations

import argparse
import json
import os
import sys

from age2hie_hub.cli._common import EXIT_OK, add_verbosity, run_main, setup_logging

PROG = "age2hie-synth"


def _floats(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1 or 3 numbers like 1.5 or 1.5,1.5,2, got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected 1 or 3 positive numbers, got {text!r}")
    return tuple(values)  # type: ignore[return-value]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--n", type=_positive, required=True, help="number of subjects / cases")
        sp.add_argument("--out", required=True, help="output folder (new or empty)")
        sp.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files (default 0)")
        sp.add_argument("--sites", help="comma-separated site names (default: all built-in sites)")
        sp.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: min(2, CPUs))")
        sp.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
        sp.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
        add_verbosity(sp)

    b = sub.add_parser("brain-age", help="lifespan T1 cohort as a BIDS data set")
    common(b)
    b.add_argument("--age-min", type=float, default=0.0)
    b.add_argument("--age-max", type=float, default=97.0)
    b.add_argument("--spacing", type=_floats, help="voxel size in mm for every site, e.g. 2 or 1.5,1.5,2")
    h = sub.add_parser("hie", help="neonatal HIE ADC cohort in the BONBID-HIE layout")
    common(h)
    h.add_argument("--adverse-rate", type=float, default=0.47, help="target overall adverse-outcome rate")
    m = sub.add_parser("montage", help="PNG montage of a synthetic cohort folder")
    m.add_argument("cohort", help="folder written by 'brain-age' or 'hie'")
    m.add_argument("-o", "--output", required=True, help="PNG file to write")
    m.add_argument("--max", type=_positive, default=8, help="subjects shown (default 8)")
    add_verbosity(m)
    return p


def _body(args: argparse.Namespace) -> int:
    if args.command == "montage":
        from age2hie_hub.synth.montage import make_montage

        path = make_montage(args.cohort, args.output, args.max)
        if not args.quiet:
            print(f"wrote {path} (synthetic data)")
        return EXIT_OK
    from age2hie_hub.synth.cohort import make_brain_age_cohort, make_hie_cohort

    sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
    progress = sys.stderr.isatty() and not args.quiet
    if args.command == "brain-age":
        cohort = make_brain_age_cohort(args.out, args.n, args.seed, (args.age_min, args.age_max), args.spacing,
                                       sites, workers=args.workers, progress=progress, overwrite=args.overwrite)
        summary = {"kind": "brain_age_t1", "n": len(cohort.subjects)}
    else:
        cohort = make_hie_cohort(args.out, args.n, args.seed, sites, adverse_rate=args.adverse_rate,
                                 workers=args.workers, progress=progress, overwrite=args.overwrite)
        adverse = sum(s["outcome"] for s in cohort.subjects)
        summary = {"kind": "hie_adc", "n": len(cohort.subjects), "adverse": adverse}
    summary.update({"out": str(cohort.root), "seed": args.seed, "synthetic": True})
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        extra = f", {summary['adverse']} adverse outcomes" if "adverse" in summary else ""
        print(f"wrote {summary['n']} SYNTHETIC {args.command} subjects{extra} to {cohort.root}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run_main(_body, args, PROG)


if __name__ == "__main__":
    sys.exit(main())
