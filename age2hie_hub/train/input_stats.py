"""The training inputs' QC record (``config.json`` ``input_qc``): what input QC compares each new scan with.

``training_input_qc(cohort, modalities)`` reads every training case exactly as prediction reads it
(``age2hie_hub.inference.qc``) and records the distribution of each QC feature per channel. For a checkpoint
trained earlier, add the record afterwards from the same data:

    python -m age2hie_hub.train.input_stats CHECKPOINT_DIR --config CONFIG.yaml [--workers 2]

(``CONFIG.yaml``: the training config; its ``data:`` section, or ``transfer.data`` of an experiment config, names
the cohort; relative paths are read from the current folder, as training read them). config.json is rewritten
atomically with ``input_qc`` (and, for a brain-age checkpoint whose metrics hold the cross-validation residuals
but no interval yet, the ``uncertainty`` record of ``train.calibration``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from age2hie_hub.inference import qc
from age2hie_hub.train.manifest import Cohort

log = logging.getLogger(__name__)

PROG = "python -m age2hie_hub.train.input_stats"


def training_input_qc(cohort: Cohort, modalities: Sequence[str], *, workers: int = 2,
                      margin: float = qc.MARGIN) -> dict[str, Any]:
    """The ``input_qc`` record of a cohort: per channel, percentiles of every QC feature over the cases."""
    modalities = tuple(modalities)

    def one(case: Any) -> list[dict[str, Any]]:
        return qc.input_features(case.paths, modalities)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        per_case = list(pool.map(one, cohort.cases))
    channels = [qc.summarise([case[i] for case in per_case]) for i in range(len(modalities))]
    return {
        "version": qc.QC_VERSION, "n_cases": len(per_case), "modalities": list(modalities), "margin": margin,
        "rule": "flag a feature outside [p01 - margin * w, p99 + margin * w], w = p99 - p01 of the training "
                "values (log scale for positive scale-like features); see age2hie_hub/inference/qc.py",
        "training_data": cohort.source, "channels": channels,
    }


def checkpoint_records(cohort: Cohort, modalities: Sequence[str], metrics: dict[str, Any], task: str, *,
                       workers: int = 2, age_unit: str = "years") -> dict[str, Any]:
    """What a finished training run adds to its CheckpointConfig: ``input_qc`` and, for a regression with
    recorded cross-validation residuals, ``uncertainty``. A failure here is logged, never fatal to the run
    (the records can be added later with this module's command)."""
    from age2hie_hub.errors import Age2HieError
    from age2hie_hub.train.calibration import regression_record_from_metrics

    out: dict[str, Any] = {}
    try:
        out["input_qc"] = training_input_qc(cohort, modalities, workers=workers)
    except (Age2HieError, OSError, ValueError) as exc:
        log.warning("input QC record not written (%s); add it later with `%s CHECKPOINT --config CONFIG`", exc, PROG)
    if task in ("brain_age", "regression"):
        try:
            record = regression_record_from_metrics(metrics, unit=age_unit)
        except ValueError as exc:
            log.warning("no prediction interval recorded: %s", exc)
            record = None
        if record is not None:
            out["uncertainty"] = record
    return out


def _data_spec(config: dict[str, Any], path: Path) -> dict[str, Any]:
    for spec in (config.get("data"), (config.get("transfer") or {}).get("data")):
        if isinstance(spec, dict) and spec.get("path"):
            return {"task": "regression", **spec} if spec.get("target") == "age" else dict(spec)
    raise ValueError(f"{path}: no data section (data: or transfer.data:) naming the training cohort")


def annotate_checkpoint(checkpoint: str | Path, config_path: str | Path, *, workers: int = 2) -> dict[str, Any]:
    """Add ``input_qc`` (and a missing brain-age ``uncertainty``) to a checkpoint's config.json, in place."""
    import yaml

    from age2hie_hub._atomic import write_text_atomic
    from age2hie_hub.hub import read_config
    from age2hie_hub.hub.checkpoint import CONFIG_NAME
    from age2hie_hub.train.calibration import regression_record_from_metrics
    from age2hie_hub.train.manifest import read_cohort

    checkpoint, config_path = Path(checkpoint), Path(config_path)
    ck = read_config(checkpoint)
    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    cohort = read_cohort(_data_spec(data, config_path))
    if cohort.sha256 and ck.provenance.get("data_manifest_sha256") not in (None, cohort.sha256):
        raise ValueError(f"{config_path}: its cohort (manifest sha256 {cohort.sha256[:12]}) is not the one "
                         f"{checkpoint} was trained on ({str(ck.provenance['data_manifest_sha256'])[:12]})")
    raw = json.loads((checkpoint / CONFIG_NAME).read_text(encoding="utf-8"))
    raw["input_qc"] = training_input_qc(cohort, ck.input_modalities, workers=workers)
    if not ck.uncertainty and ck.task in ("brain_age", "regression"):
        record = regression_record_from_metrics(ck.metrics)
        if record is not None:
            raw["uncertainty"] = record
    write_text_atomic(checkpoint / CONFIG_NAME, json.dumps(raw, indent=2) + "\n")
    read_config(checkpoint)  # what was written loads
    return raw


def main(argv: list[str] | None = None) -> int:
    from age2hie_hub.cli._common import add_verbosity, run_main, setup_logging

    p = argparse.ArgumentParser(prog=PROG, description="Add the training inputs' QC record (and a brain-age "
                                "interval from recorded CV residuals) to an existing checkpoint's config.json.")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--config", type=Path, required=True, help="the training config naming the cohort (data:)")
    p.add_argument("--workers", type=int, default=2, help="reading threads (default 2)")
    add_verbosity(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run(a: argparse.Namespace) -> int:
        raw = annotate_checkpoint(a.checkpoint, a.config, workers=a.workers)
        qc_rec = raw["input_qc"]
        print(f"{a.checkpoint}: input_qc from {qc_rec['n_cases']} training cases"
              + ("; uncertainty recorded" if raw.get("uncertainty") else ""))
        return 0

    return run_main(run, args, PROG)


if __name__ == "__main__":
    sys.exit(main())
