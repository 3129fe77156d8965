"""age2hie-train: pretrain | transfer | evaluate | experiment CONFIG (YAML or JSON).

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

COMMANDS = {
    "pretrain": "brain-age pretraining on T1 volumes (held-out MAE vs predict-the-mean)",
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
        add_verbosity(s)
    d = sub.add_parser("defaults", help="print a config with every field at its default")
    d.add_argument("kind", choices=sorted(COMMANDS))
    d.add_argument("--format", choices=("yaml", "json"), default="yaml")
    add_verbosity(d)
    return p


def _config_class(command: str):
    from age2hie_hub.train.config import ExperimentConfig, PretrainConfig, TransferConfig

    return {"pretrain": PretrainConfig, "transfer": TransferConfig, "evaluate": ExperimentConfig,
            "experiment": ExperimentConfig}[command]


def _body(args: argparse.Namespace) -> int:
    import dataclasses

    from age2hie_hub.train.config import load_config, to_dict

    if args.command == "defaults":
        data = to_dict(_config_class(args.kind)())
        if args.format == "json":
            print(json.dumps(data, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(data, sort_keys=False), end="")
        return EXIT_OK

    from age2hie_hub.train import distributed as D

    cfg = load_config(args.config, _config_class(args.command))
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
            text = (f"test MAE {summary['test_mae']:.3f} (predict-the-mean {summary['baseline_predict_mean_mae']:.3f}), "
                    f"r={summary['test_pearson_r']:.3f}; checkpoint {out['checkpoint']}")
        elif args.command == "transfer":
            from age2hie_hub.train.stages import transfer

            out = transfer(cfg)
            summary = out["metrics"]
            scores = ", ".join(f"{k}={v:.3f}" for k, v in summary.items() if isinstance(v, float))
            if not scores:  # val_fraction 0: trained on every case, nothing held out to score
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
