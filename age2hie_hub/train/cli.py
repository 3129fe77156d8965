"""age2hie-train: pretrain | cv | transfer | evaluate | experiment CONFIG (YAML or JSON).

Runs unchanged under ``torchrun --nproc_per_node N`` (DistributedDataParallel; only rank 0 writes).
``age2hie-train defaults pretrain`` prints a complete config with every default, to start from.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from age2hie_hub.cli._common import EXIT_OK, add_verbosity, run_main, setup_logging

log = logging.getLogger(__name__)

COMMANDS = {
    "pretrain": "brain-age pretraining on T1 volumes (held-out MAE vs predict-the-mean, or cv: then every case)",
    "cv": "k-fold cross-validation of a pretrain config's brain-age recipe vs baselines -> tables, plots",
    "transfer": "AGE2HIE transfer (refine head, finetune all) or a baseline, on a target cohort",
    "evaluate": "methods x protocols (same-site, multi-site, cross-site) x seeds -> tables",
    "experiment": "pretrain + evaluate + learning curves -> tables and plots",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="age2hie-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("config", type=Path, help="YAML or JSON config (missing fields take their defaults)")
        s.add_argument("--run-dir", help="override the config's run_dir")
        s.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
        s.add_argument("--json", action="store_true", help="print the resulting metrics as JSON")
        _add_set(s)
        add_verbosity(s)
    t = sub.add_parser("lesion-targets", help=LESION_HELP, description=LESION_HELP + (
        ". The brain is the ADC's non-background region (background read from the grid's border; the Z-ADC map's, "
        "or an Otsu foreground, when the ADC has none), holes filled, lesions included: docs/real_data_bonbid.md."))
    t.add_argument("data", type=Path, help="a BONBID-HIE folder (1ADC_ss/, 2Z_ADC/, 3LABEL/)")
    t.add_argument("-o", "--output", type=Path, required=True,
                   help="the CSV to write (derived from the data: it carries the data's licence)")
    t.add_argument("--threshold", type=float, default=0.01, help="burden threshold of the 0/1 column (default 0.01)")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_verbosity(t)
    s = sub.add_parser("score", help=SCORE_HELP, description=SCORE_HELP)
    s.add_argument("config", type=Path, help="YAML or JSON ScoreConfig (model, data, positive, run_dir, ...)")
    s.add_argument("--run-dir", help="override the config's run_dir")
    s.add_argument("--json", action="store_true", help="print the resulting metrics as JSON")
    _add_set(s)
    add_verbosity(s)
    d = sub.add_parser("defaults", help="print a config with every field at its default")
    d.add_argument("kind", choices=sorted([*COMMANDS, "score"]))
    d.add_argument("--format", choices=("yaml", "json"), default="yaml")
    add_verbosity(d)
    return p


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable; YAML values, e.g. --set loop.epochs=3 "
                             "--set preprocess.spacing=[4,4,4]); checked like the file")


LESION_HELP = ("BONBID-HIE lesion burden per case (lesion voxels / brain voxels, from 3LABEL) -> a target table "
               "(a proxy target derived from the masks, not an outcome)")
SCORE_HELP = "score a binary checkpoint as published against a cohort's 0/1 target (AUC, calibration, CIs)"


def _config_class(command: str):
    from age2hie_hub.train.config import ExperimentConfig, PretrainConfig, TransferConfig

    if command == "score":
        from age2hie_hub.train.score import ScoreConfig

        return ScoreConfig

    return {"pretrain": PretrainConfig, "cv": PretrainConfig, "transfer": TransferConfig, "evaluate": ExperimentConfig,
            "experiment": ExperimentConfig}[command]


def _body(args: argparse.Namespace) -> int:
    import dataclasses

    from age2hie_hub.train.config import to_dict

    if args.command == "defaults":
        data = to_dict(_config_class(args.kind)())
        if args.format == "json":
            print(json.dumps(data, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(data, sort_keys=False), end="")
        return EXIT_OK

    if args.command == "lesion-targets":
        return _lesion_targets(args)
    if args.command == "score":
        return _score(args)

    from age2hie_hub.train import distributed as D

    cfg = _load_config(args.config, _config_class(args.command), args.overrides)
    if args.run_dir:
        cfg = dataclasses.replace(cfg, run_dir=args.run_dir)
    if args.resume:
        cfg = _with_resume(cfg)
    run_dir = Path(cfg.run_dir)
    D.setup()
    try:
        if D.rank() == 0:
            _log_to_file(run_dir / f"{args.command}.log")
        if args.command == "pretrain":
            from age2hie_hub.train.stages import pretrain

            out = pretrain(cfg)
            summary = out["metrics"]
            if "test_mae" in summary:
                text = (f"test MAE {summary['test_mae']:.3f} (predict-the-mean "
                        f"{summary['baseline_predict_mean_mae']:.3f}), r={summary['test_pearson_r']:.3f}")
            else:
                text = f"trained on all {summary['n_train'] + summary['n_val']} cases, no held-out score"
            if (run_dir / "cv" / "table.md").is_file():
                text = (run_dir / "cv" / "table.md").read_text(encoding="utf-8") + "\n" + text
            text += f"; checkpoint {out['checkpoint']}"
        elif args.command == "cv":
            import dataclasses as dc

            from age2hie_hub.preprocess.config import PreprocessConfig
            from age2hie_hub.train.evaluate import cross_validate_brain_age
            from age2hie_hub.train.manifest import read_cohort
            from age2hie_hub.train.stages import cached_arrays

            cfg = cfg if cfg.cv is not None else dc.replace(cfg, cv=_default_cv())
            cohort = read_cohort({"task": "regression", **cfg.data})
            prep = PreprocessConfig.from_dict({**cfg.preprocess, "channels": cohort.n_channels})
            files = cached_arrays(cohort, prep, cfg.cache_dir, dtype=cfg.cache_dtype,
                                  workers=cfg.preprocess_workers, progress=cfg.loop.progress)
            out = cross_validate_brain_age(cfg, cohort, files, run_dir / "cv")
            summary = {k: out[k] for k in ("summary", "comparisons", "age_bias_correction", "timings")}
            text = (run_dir / "cv" / "table.md").read_text(encoding="utf-8") if (run_dir / "cv" / "table.md").is_file() else ""
        elif args.command == "transfer":
            from age2hie_hub.train.stages import transfer

            out = transfer(cfg)
            summary = out["metrics"]
            scores = ", ".join(f"{k}={v:.3f}" for k, v in summary.items() if isinstance(v, float))
            if not scores:  # test_fraction 0: trained on every case, nothing held out to score
                scores = f"no held-out score (split {summary.get('split')}, n_train {summary.get('n_train')})"
            text = f"{scores}; checkpoint {out['checkpoint']}"
        else:
            from age2hie_hub.train.experiment import run_experiment

            out = run_experiment(cfg, evaluate_only=args.command == "evaluate")
            summary = {k: out[k] for k in ("summary", "comparisons", "timings")}
            text = (run_dir / "table.md").read_text(encoding="utf-8") if (run_dir / "table.md").is_file() else ""
        if D.rank() == 0:
            print(json.dumps(summary, indent=2, default=float) if args.json else text)
    finally:
        D.teardown()
    return EXIT_OK


def _default_cv():
    from age2hie_hub.train.config import CVConfig

    return CVConfig()


def _lesion_targets(args: argparse.Namespace) -> int:
    from age2hie_hub.train.lesion_targets import lesion_targets, target_column, write_targets

    if not 0 < args.threshold < 1:
        raise ValueError(f"--threshold must be a fraction in (0, 1), got {args.threshold}")
    rows = lesion_targets(args.data, progress=not args.json)
    path = write_targets(rows, args.output, args.threshold)
    positive = sum(r.burden >= args.threshold for r in rows)
    summary = {"output": str(path), "n_cases": len(rows), "column": target_column(args.threshold),
               "threshold": args.threshold, "n_positive": positive, "rate": positive / len(rows),
               "brain_from": {k: sum(r.brain_from == k for r in rows) for k in sorted({r.brain_from for r in rows})}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{len(rows)} cases: {positive} ({100 * positive / len(rows):.1f} %) with lesion burden >= "
              f"{100 * args.threshold:g} %; brain region from {summary['brain_from']}; wrote {path}")
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    import dataclasses

    from age2hie_hub.train.score import ScoreConfig, score_checkpoint, score_markdown

    cfg = _load_config(args.config, ScoreConfig, args.overrides)
    if args.run_dir:
        cfg = dataclasses.replace(cfg, run_dir=args.run_dir)
    _log_to_file(Path(cfg.run_dir) / "score.log")
    out = score_checkpoint(cfg, progress=not args.json)
    print(json.dumps(out, indent=2, default=float) if args.json else score_markdown(out), end="" if not args.json else "\n")
    return EXIT_OK


def _load_config(path: Path, cls: type, overrides: list[str]):
    """load_config, with its DeprecationWarnings (a renamed key in the file or a --set) shown as log warnings:
    Python hides DeprecationWarnings raised inside a library, and the user is the one who must edit the file."""
    import warnings

    from age2hie_hub.train.config import load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        cfg = load_config(path, cls, overrides)
    for w in caught:
        if issubclass(w.category, DeprecationWarning):
            log.warning("%s", w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cfg


def _with_resume(cfg):
    import dataclasses

    from age2hie_hub.train.config import ExperimentConfig

    if isinstance(cfg, ExperimentConfig):
        pre = dataclasses.replace(cfg.pretrain, resume=True) if cfg.pretrain is not None else None
        return dataclasses.replace(cfg, pretrain=pre, transfer=dataclasses.replace(cfg.transfer, resume=True))
    return dataclasses.replace(cfg, resume=True)


def _log_to_file(path: Path) -> None:
    """INFO and above also go to a log file in the run folder, whatever the console verbosity."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO:
        # keep the console quiet (its handler has its own level) while INFO reaches the file
        for h in root.handlers:
            if h is not handler and h.level == logging.NOTSET:
                h.setLevel(root.level)
        root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run_main(_body, args, "age2hie-train")


if __name__ == "__main__":
    sys.exit(main())
