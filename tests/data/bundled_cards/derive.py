"""Derive the evaluation records the bundled cards were rendered from (tests/test_modelcard.py pins the cards).

    PYTHONPATH=. python tests/data/bundled_cards/derive.py BUNDLE_WORK   # the --work of export.build_default_models

Each <name>.json holds the experiment's evaluation record (``hub.evaluation.Evaluation.to_dict``) with only
the precision the shipped card already shows: the released method's rows keep full precision (the card's
model-index prints them), every other number is rounded as the card's tables print it (3 decimals; p to 3
significant digits). No case-level data: only the numbers already published in the card.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from age2hie_hub.hub.evaluation import read_evaluation
from export.release import load_release_metadata

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
EXPERIMENTS = {"brain-age": "runs/brain-age/cv/metrics.json", "age2hie": "runs/age2hie-cv/metrics.json"}


def _r3(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.3f}")


def derive(work: Path, name: str) -> dict:
    record = read_evaluation(json.loads((work / EXPERIMENTS[name]).read_text(encoding="utf-8")))
    method = load_release_metadata(REPO / "model_cards" / f"{name}.yaml")["method"]
    rows = tuple(r if r.method == method else dataclasses.replace(
        r, value=_r3(r.value), sd=_r3(r.sd), ci_low=_r3(r.ci_low), ci_high=_r3(r.ci_high)) for r in record.rows)
    comps = tuple(dataclasses.replace(c, mean_diff=_r3(c.mean_diff), ci_low=_r3(c.ci_low), ci_high=_r3(c.ci_high),
                                      p_sign_flip=float(f"{c.p_sign_flip:.3g}")) for c in record.comparisons)
    return {"evaluation": dataclasses.replace(record, rows=rows, comparisons=comps).to_dict()}


if __name__ == "__main__":
    work = Path(sys.argv[1])
    for name in EXPERIMENTS:
        (HERE / f"{name}.json").write_text(json.dumps(derive(work, name), indent=1) + "\n", encoding="utf-8")
