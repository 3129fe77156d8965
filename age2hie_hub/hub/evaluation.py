"""The evaluation record: what a run measured, as plain rows that training writes and the model card reads.

One row is one number: a metric of a method under a protocol, with its spread (``sd`` over splits and seeds),
its 95 % CI, the cases it was scored on (``n``) and how many splits and seeds it summarises. Training
(``age2hie_hub.train``) writes the record into a run's ``metrics.json`` under ``"evaluation"``
(``Evaluation.to_dict``); the card (``hub.card``) reads it with ``read_evaluation``, the one place that also
reads the metrics files older runs wrote (their ``test_``/``_ci95``/``_mean`` key conventions). Metric and
protocol display names live here too (``METRIC_INFO``, ``PROTOCOL_NAMES``): adding a metric or a protocol to
training needs no edit here (an unknown name is shown as it is); a display name is one line in one table.

Plain data only: no torch, no package imports, so both sides (and any other tool) may use it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "Comparison", "EvalRow", "Evaluation", "FORMAT", "METRIC_INFO", "PROTOCOL_NAMES", "hub_metric_id",
    "is_baseline", "metric_label", "protocol_label", "read_evaluation", "split_label",
]

FORMAT = 1  # version of Evaluation.to_dict's layout

# Display names and Hub metric ids (model-index `type`) of the metrics training writes.
METRIC_INFO: dict[str, tuple[str, str]] = {
    "accuracy": ("Accuracy", "accuracy"),
    "balanced_accuracy": ("Balanced accuracy", "balanced_accuracy"),
    "auc": ("AUC", "roc_auc"),
    "sensitivity": ("Sensitivity", "recall"),
    "specificity": ("Specificity", "specificity"),
    "f1": ("F1", "f1"),
    "brier": ("Brier score", "brier_score"),
    "ece": ("Calibration error (ECE)", "ece"),
    "mae": ("MAE", "mae"),
    "pearson_r": ("Pearson r", "pearsonr"),
    "bias": ("Bias", "bias"),
}
# Display names of the protocols training writes (train.splits and the held-out splits of pretrain/transfer).
PROTOCOL_NAMES = {"same_site": "same-site", "multi_site": "multi-site", "cross_site": "cross-site",
                  "held_out": "held-out", "held_out_test": "held-out test"}


@dataclass(frozen=True)
class EvalRow:
    """One measured number: ``metric`` of ``method`` under ``protocol``, with its spread and interval.

    ``metric`` names a metric (``METRIC_INFO`` or any other name), or a reference number whose name contains
    ``baseline`` (e.g. ``baseline_predict_mean_mae``: the card shows it, the model-index never claims it).
    ``split`` is free text naming the split (``"BCH->MGH"``); without it the card describes the split from
    ``n_splits`` (splits summarised, every seed counted) and ``n_seeds``. ``task`` names what the predictions
    were scored against (the cohort's target column, or ``brain_age``).
    """

    protocol: str
    metric: str
    value: float
    method: str | None = None
    dataset: str | None = None
    split: str | None = None
    n: int | None = None
    sd: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_splits: int | None = None
    n_seeds: int | None = None
    task: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "evaluation row") -> EvalRow:
        known = {f.name for f in fields(cls)}
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - known)
        missing = [k for k in ("protocol", "metric", "value") if k not in data]
        if unknown or missing:
            raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}; a row holds {sorted(known)}")
        try:
            return cls(
                protocol=str(data["protocol"]), metric=str(data["metric"]), value=_number(data["value"]),
                **{k: _opt_str(data.get(k)) for k in ("method", "dataset", "split", "task")},
                **{k: _opt_int(data.get(k)) for k in ("n", "n_splits", "n_seeds")},
                **{k: _opt_number(data.get(k)) for k in ("sd", "ci_low", "ci_high")},
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class Comparison:
    """A paired comparison on the same splits: ``method - reference`` of ``metric``, its CI and sign-flip p."""

    method: str
    reference: str
    protocol: str
    metric: str
    n_pairs: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_sign_flip: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "comparison") -> Comparison:
        """Read the fields of a comparison; other keys (``p_bootstrap``, ``pairs``) are left out."""
        try:
            return cls(method=str(data["method"]), reference=str(data["reference"]), protocol=str(data["protocol"]),
                       metric=str(data["metric"]), n_pairs=int(data["n_pairs"]), mean_diff=float(data["mean_diff"]),
                       ci_low=float(data["ci_low"]), ci_high=float(data["ci_high"]),
                       p_sign_flip=float(data["p_sign_flip"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where} {dict(data)!r} lacks a field ({exc})") from exc


@dataclass(frozen=True)
class Evaluation:
    """A run's measured evaluation: rows, paired comparisons, and the cohort the cross-validated rows used."""

    rows: tuple[EvalRow, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    n_cases: int | None = None
    sites: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a run's metrics.json holds under ``"evaluation"``."""
        out: dict[str, Any] = {"format": FORMAT, "rows": [r.to_dict() for r in self.rows],
                               "comparisons": [c.to_dict() for c in self.comparisons]}
        if self.n_cases is not None:
            out["n_cases"] = self.n_cases
        if self.sites:
            out["sites"] = dict(self.sites)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "evaluation") -> Evaluation:
        if data.get("format") != FORMAT:
            raise ValueError(f"{where}: format {data.get('format')!r}; this version reads format {FORMAT}")
        rows, comps = data.get("rows", []), data.get("comparisons", [])
        if not isinstance(rows, list) or not isinstance(comps, list):
            raise ValueError(f"{where}: 'rows' and 'comparisons' must be lists")
        return cls(rows=tuple(EvalRow.from_dict(r, f"{where} row {i}") for i, r in enumerate(rows)),
                   comparisons=tuple(Comparison.from_dict(c, f"{where} comparison {i}") for i, c in enumerate(comps)),
                   n_cases=_opt_int(data.get("n_cases")), sites=_sites(data.get("sites")))

    def held_out(self) -> Evaluation:
        """Only the run's own held-out rows (those that summarise no splits)."""
        return Evaluation(rows=tuple(r for r in self.rows if r.n_splits is None))

    def with_cross_validation(self, other: Evaluation) -> Evaluation:
        """This run's held-out rows, then ``other``'s rows, comparisons and cohort (an experiment's estimate)."""
        return Evaluation(rows=self.held_out().rows + other.rows, comparisons=other.comparisons,
                          n_cases=other.n_cases, sites=dict(other.sites))


def metric_label(name: str) -> str:
    """Display name of a metric; a baseline's reference number says which baseline it is."""
    if name in METRIC_INFO:
        return METRIC_INFO[name][0]
    if "baseline" in name:
        for metric, (label, _) in METRIC_INFO.items():
            if name.endswith(metric):
                what = name[: -len(metric)].replace("baseline", "").strip("_").replace("_", "-")
                return f"{label}, {what} baseline" if what else f"{label}, baseline"
    return name


def hub_metric_id(name: str) -> str:
    """The model-index ``type`` of a metric (its own name when the Hub has no id for it)."""
    return METRIC_INFO.get(name, (name, name))[1]


def is_baseline(name: str) -> bool:
    """A reference number (e.g. the predict-the-mean MAE): it describes a baseline, not the model."""
    return "baseline" in name


def protocol_label(protocol: str) -> str:
    return PROTOCOL_NAMES.get(protocol, protocol)


def split_label(row: EvalRow) -> str | None:
    """What the row's number summarises: its ``split`` text, else its splits and seeds (every split counted
    once: 5 folds x 3 seeds are 15 splits)."""
    if row.split:
        return row.split
    if row.n_splits is None:
        return None
    if row.n_seeds is None:
        return f"{row.n_splits} splits"
    if row.n_seeds == 1:
        return f"{row.n_splits} splits (1 seed)"
    if row.n_splits % row.n_seeds == 0:
        return f"{row.n_splits} splits ({row.n_splits // row.n_seeds} per seed x {row.n_seeds} seeds)"
    return f"{row.n_splits} splits over {row.n_seeds} seeds"


# ---- reading: the one conversion from what runs wrote ---------------------------------------------------------

def read_evaluation(data: Evaluation | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> Evaluation:
    """A run's measured evaluation, whatever form it was written in, as an ``Evaluation``.

    Read, in this order: an ``Evaluation``; a mapping holding the record under ``"evaluation"`` (what training
    writes since the record exists, ``Evaluation.to_dict``); and the forms earlier runs and other tools wrote,
    which are converted here and nowhere else: the list form ``{"evaluation": [{"protocol", "method",
    "dataset", "split", "n", "metrics": {name: number or {"mean"/"value", "sd", "ci_low"/"ci_high" or "ci95"}}}]}``;
    a run's ``metrics.json`` (``{"metrics": {...}, "summary": [...], "comparisons": [...], "n_cases", "sites"}``)
    or its inner flat mapping (``test_<metric>``, ``<key>_ci95``, ``baseline_*``, ``split``, ``method``,
    ``n_test``); an experiment's summary rows (a list) with ``<metric>_mean/_sd/_ci_low/_ci_high`` columns.
    """
    if isinstance(data, Evaluation):
        return data
    if not data:
        return Evaluation()
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return Evaluation(rows=tuple(r for m in data if isinstance(m, Mapping) for r in _legacy_summary_rows(m)))
    if not isinstance(data, Mapping):
        raise ValueError(f"metrics must be a mapping or a list of summary rows, got {type(data).__name__}")
    record = data.get("evaluation")
    if isinstance(record, Mapping):
        return Evaluation.from_dict(record)
    if record is not None:
        return Evaluation(rows=tuple(_legacy_list_rows(record)))
    inner = data.get("metrics")
    own = _legacy_flat_rows(inner if isinstance(inner, Mapping) else data)
    summary = data.get("summary")
    cv = read_evaluation(summary).rows if isinstance(summary, Sequence) and not isinstance(summary, str) else ()
    comps = data.get("comparisons") or []
    n_cases = data.get("n_cases")
    return Evaluation(
        rows=tuple(own) + tuple(cv),
        comparisons=tuple(Comparison.from_dict(c, "metrics 'comparisons' entry") for c in comps),
        n_cases=n_cases if isinstance(n_cases, int) and not isinstance(n_cases, bool) else None,
        sites=_sites(data.get("sites")) if isinstance(data.get("sites"), Mapping) else {},
    )


def _legacy_value(raw: Any) -> dict[str, float] | None:
    """A number or a summary dict (mean/value/point, sd, ci_low/ci_high or ci95) -> {"value", ...}."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return {"value": float(raw)}
    if not isinstance(raw, Mapping):
        return None
    for key in ("value", "mean", "point", "estimate"):
        if isinstance(raw.get(key), (int, float)):
            out = {"value": float(raw[key])}
            break
    else:
        return None
    lo, hi = raw.get("ci_low"), raw.get("ci_high")
    if lo is None and isinstance(raw.get("ci95"), Sequence) and len(raw["ci95"]) == 2:
        lo, hi = raw["ci95"]
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        out["ci_low"], out["ci_high"] = float(lo), float(hi)
    if isinstance(raw.get("sd"), (int, float)):
        out["sd"] = float(raw["sd"])
    return out


def _legacy_list_rows(entries: Any) -> list[EvalRow]:
    """The list form ``{"evaluation": [{..., "metrics": {...}}]}``."""
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise ValueError(f"metrics 'evaluation' must be a record mapping or a list of rows, got {entries!r}")
    rows = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("metrics"), Mapping):
            raise ValueError(f"metrics 'evaluation' entry {i} must be a mapping with a 'metrics' mapping, "
                             f"got {entry!r}")
        n = entry.get("n")
        common = {"protocol": str(entry.get("protocol", "held_out")), "method": entry.get("method"),
                  "dataset": entry.get("dataset"), "split": entry.get("split"),
                  "n": int(n) if isinstance(n, (int, float)) else None}
        for name, raw in entry["metrics"].items():
            value = _legacy_value(raw)
            if value is not None:
                rows.append(EvalRow(metric=str(name), **common, **value))
    return rows


def _is_metric_name(name: str) -> bool:
    """A key a run's flat metrics held for a metric (not a count, epoch, duration or flag)."""
    return name in METRIC_INFO or (is_baseline(name) and any(name.endswith(m) for m in METRIC_INFO))


def _legacy_flat_rows(data: Mapping[str, Any]) -> list[EvalRow]:
    """A run's own flat metrics: ``accuracy``/``test_mae`` keys, ``<key>_ci95`` intervals, ``baseline_*``
    reference numbers, and ``split``/``method``/``n_test`` labels; counts and timings are skipped."""
    split = str(data.get("split", "held_out"))
    n = data.get("n_test", data.get("n"))
    method = data.get("method") if isinstance(data.get("method"), str) else None
    common = {"protocol": split, "method": method,
              "n": int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None}
    rows = []
    for key, raw in data.items():
        name = key[len("test_"):] if key.startswith("test_") else key
        if not _is_metric_name(name):
            continue
        value = _legacy_value(raw)
        if value is None:
            continue
        ci = data.get(f"{key}_ci95")
        if "ci_low" not in value and isinstance(ci, Sequence) and len(ci) == 2 and all(
                isinstance(c, (int, float)) for c in ci):
            value["ci_low"], value["ci_high"] = float(ci[0]), float(ci[1])
        rows.append(EvalRow(metric=name, **common, **value))
    return rows


def _legacy_summary_rows(data: Mapping[str, Any]) -> list[EvalRow]:
    """One row of an experiment's summary table: ``<metric>_mean/_sd/_ci_low/_ci_high`` per method x protocol
    over splits and seeds (cells may be strings when read back from table.csv)."""
    splits, seeds = data.get("n_splits"), data.get("n_seeds")
    common = {"protocol": str(data.get("protocol", "held_out")),
              "method": str(data["method"]) if data.get("method") not in (None, "") else None,
              "n_splits": _opt_int(splits) if splits not in (None, "") else None,
              "n_seeds": _opt_int(seeds) if seeds not in (None, "") else None}
    rows = []
    for key in data:
        if not key.endswith("_mean"):
            continue
        name = key[: -len("_mean")]
        parts = {part: data.get(f"{name}_{part}") for part in ("mean", "sd", "ci_low", "ci_high")}
        try:
            values = {k: float(v) for k, v in parts.items() if v not in (None, "")}
        except (TypeError, ValueError):
            continue
        if "mean" in values:
            rows.append(EvalRow(metric=name, value=values.pop("mean"), **common, **values))
    return rows


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


def _opt_number(v: Any) -> float | None:
    return None if v is None else _number(v)


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise TypeError(f"expected a count, got {v!r}")
    if isinstance(v, str):
        v = float(v)
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
        raise TypeError(f"expected a count, got {v!r}")
    return int(v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _sites(v: Any) -> dict[str, int]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ValueError(f"'sites' must map site -> number of cases, got {v!r}")
    return {str(k): int(n) for k, n in v.items()}
