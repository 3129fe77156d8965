"""The model card (README.md) of a checkpoint: rendered from its config.json and its run's evaluation record.

The card is built with huggingface_hub's ``ModelCard`` / ``ModelCardData`` (the YAML header is dumped by
huggingface_hub, never assembled from strings) from the template shipped with the package
(``hub/templates/modelcard.md``, package data). Every number in the card comes from the inputs: the
checkpoint's ``CheckpointConfig`` (preprocessing, provenance, training range, uncertainty) and the run's
evaluation (``hub.evaluation``: the record training writes, or an older run's metrics read by
``read_evaluation``); the release metadata (``model_cards/<name>.yaml``, read by the release recipe in
``export/``) adds prose and ids only.

``save_pretrained`` writes the card with a marker holding the hash of its own text (``build_model_card``), so
it can tell a card it generated (safe to regenerate) from one a person edited (kept unless
``overwrite_card=True``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from age2hie_hub.hub.evaluation import (
    EvalRow, Evaluation, hub_metric_id, is_baseline, metric_label, protocol_label, read_evaluation, split_label,
)

if TYPE_CHECKING:  # the renderer reads plain attributes; importing hub.config here is for the types only
    from age2hie_hub.hub.config import CheckpointConfig

log = logging.getLogger(__name__)

__all__ = ["BASE_TAGS", "CITATIONS", "TEMPLATE_FILE", "build_model_card", "card_is_generated", "card_template",
           "model_card_data", "render_model_card"]

TEMPLATE_FILE = "templates/modelcard.md"  # package data of age2hie_hub.hub
_MARKER = "<!-- age2hie-hub generated card sha256:{} -->"
_MARKER_RE = re.compile(r"<!-- age2hie-hub generated card sha256:([0-9a-f]{64}) -->\s*$")
LIBRARY_NAME = "age2hie-hub"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
BASE_TAGS = (
    "medical-imaging", "mri", "brain", "3d", "neonatal", "hypoxic-ischemic-encephalopathy", "brain-age",
    "safetensors", "onnx",
)
# Units of each input modality after the checkpoint's own ADC/intensity handling is undone by the user.
MODALITY_UNITS = {
    "ADC": "mm^2/s (trace apparent diffusion coefficient; 1e-3 and 1e-6 mm^2/s scalings are detected and converted)",
    "Z-ADC": "z-score against a normative ADC atlas (unitless)",
    "T1w": "scanner intensity (arbitrary units; normalised by the preprocessing)",
    "DWI": "signal intensity with b-values (converted to ADC in mm^2/s before preprocessing)",
}
INTENSITY_TEXT = {
    "zscore": "z-scored within the foreground (mean 0, sd 1)",
    "mean": "divided by the foreground mean",
    "adc_fixed": "ADC in mm^2/s multiplied by {adc_scale:g}",
    "none": "left as they are",
}
# task -> (Hub task type, task display name). The Hub has no pipeline tag for image regression; the
# model-index `type` is free text, so we name what the model does.
TASK_INFO = {
    "hie_outcome": ("image-classification", "2-year neurocognitive outcome after neonatal HIE"),
    "brain_age": ("image-regression", "Brain age estimation"),
    "classification": ("image-classification", "Phenotype classification"),
    "regression": ("image-regression", "Phenotype regression"),
}

CITATIONS = """\
```bibtex
@article{bao2024age2hie,
  title   = {{AGE2HIE}: Transfer Learning from Brain Age to Predicting Neurocognitive Outcome for Infant Brain Injury},
  author  = {Bao, Rina and He, Sheng and Grant, P. Ellen and Ou, Yangming},
  journal = {arXiv preprint arXiv:2411.05188},
  year    = {2024}
}
@article{malik2022youtube,
  title   = {From {YouTube} to the brain: Transfer learning can improve brain-imaging predictions with deep learning},
  author  = {Malik, Nahiyan and Bzdok, Danilo},
  journal = {Neural Networks},
  volume  = {153},
  pages   = {325--338},
  year    = {2022},
  doi     = {10.1016/j.neunet.2022.06.014}
}
@article{bao2025bonbid,
  title   = {{BOston Neonatal Brain Injury Dataset for Hypoxic Ischemic Encephalopathy (BONBID-HIE)}: {I}. {MRI} and Lesion Labeling},
  author  = {Bao, Rina and Song, Ya'nan and Bates, Sara V. and Weiss, Rebecca J. and Foster, Anna N. and
             Jaimes, Camilo and Sotardi, Susan and Zhang, Yue and Hirschtick, Randy L. and Grant, P. Ellen and
             Ou, Yangming},
  journal = {Scientific Data},
  volume  = {12},
  pages   = {53},
  year    = {2025},
  doi     = {10.1038/s41597-024-03986-7}
}
```"""


def _short_source(source: str) -> str:
    """A manifest path as a data-set name: its last component (no build-machine folders in a public card)."""
    return Path(source).name if "/" in source or "\\" in source else source


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_metric(row: EvalRow) -> str:
    text = _fmt(row.value)
    if row.sd is not None:
        text += f" ± {_fmt(row.sd)}"
    if row.ci_low is not None and row.ci_high is not None:
        text += f" [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]"
    return text


def _synthetic(config: CheckpointConfig) -> bool:
    prov = config.provenance
    data = prov.get("training_data")
    return bool(prov.get("synthetic")) or (isinstance(data, Mapping) and bool(data.get("synthetic")))


def _dataset_label(config: CheckpointConfig, release: Mapping[str, Any]) -> tuple[str, str]:
    """(model-index dataset type, display name) of what the evaluation ran on."""
    data = config.provenance.get("training_data")
    name = None
    if isinstance(data, Mapping):
        name = data.get("name") or data.get("dataset")
    elif isinstance(data, str):
        name = _short_source(data)
    if _synthetic(config):
        return "synthetic", f"Synthetic cohort ({name})" if name else "Synthetic cohort"
    datasets = release.get("datasets") or []
    dtype = datasets[0] if datasets else (name or "private")
    return str(dtype), str(name or dtype)


def _eval_results(config: CheckpointConfig, rows: Sequence[EvalRow], release: Mapping[str, Any]) -> list[EvalResult]:
    task_type, task_name = TASK_INFO[config.task]
    dtype, dname = _dataset_label(config, release)
    # Only the released method's rows are this model's results: a baseline (e.g. scratch) row in the same
    # metrics file stays in the card's table but must not be claimed in the model-index.
    method = release.get("method") or config.provenance.get("method")
    results = []
    for row in rows:
        # A reference number (e.g. the predict-the-mean MAE) describes a baseline, not this model.
        if (method and row.method not in (None, method)) or not math.isfinite(row.value) or is_baseline(row.metric):
            continue
        protocol = protocol_label(row.protocol)
        args = {k: getattr(row, k) for k in ("ci_low", "ci_high", "sd")
                if getattr(row, k) is not None and math.isfinite(getattr(row, k))}
        results.append(EvalResult(
            task_type=task_type, task_name=task_name,
            dataset_type=dtype, dataset_name=row.dataset or dname,
            dataset_config=protocol, dataset_split=split_label(row) or "test",
            metric_type=hub_metric_id(row.metric),
            metric_name=f"{metric_label(row.metric)} ({protocol}" + (f", {row.method})" if row.method else ")"),
            metric_value=row.value, metric_args=args or None,
        ))
    return results


def _hub_parent(config: CheckpointConfig) -> str | None:
    """provenance.parent when it names a Hub repo (``org/name``, ``hf-hub:org/name@rev``), else None.

    A local folder is no valid ``base_model``: the Hub refuses a card whose base_model is not a model id.
    """
    parent = config.provenance.get("parent")
    if not isinstance(parent, str):
        return None
    name = parent.removeprefix("hf-hub:").split("@", 1)[0]
    return name if _REPO_ID.match(name) and not parent.startswith((".", "/", "~")) else None


def model_card_data(
    config: CheckpointConfig, *, metrics: Evaluation | Mapping[str, Any] | Sequence[Any] | None = None,
    release: Mapping[str, Any] | None = None,
) -> ModelCardData:
    """The card's YAML header: library, licence, tags, parent model, data sets, metrics and model-index.

    ``metrics``: the run's evaluation (``read_evaluation`` reads every form); ``config.metrics`` when None.
    """
    release = dict(release or {})
    rows = read_evaluation(config.metrics if metrics is None else metrics).rows
    tags = list(BASE_TAGS) + [t for t in release.get("tags", []) if t not in BASE_TAGS]
    tags += [t for t in (config.task, config.model.arch) if t not in tags]  # findable by task and backbone
    if _synthetic(config):
        tags.append("synthetic-data")
    metric_ids = list(dict.fromkeys(hub_metric_id(r.metric) for r in rows if not is_baseline(r.metric)))
    base_model = release.get("base_model") or _hub_parent(config)
    model_name = release.get("model_name") or "age2hie-model"
    return ModelCardData(
        model_name=model_name,
        library_name=LIBRARY_NAME,
        license=release.get("license", "apache-2.0"),
        license_name=release.get("license_name"),
        license_link=release.get("license_link"),
        language=release.get("language"),
        tags=tags,
        base_model=base_model,
        datasets=release.get("datasets"),
        metrics=metric_ids or None,
        pipeline_tag=release.get("pipeline_tag"),
        eval_results=_eval_results(config, rows, release) or None,
    )


def _what_it_does(config: CheckpointConfig) -> str:
    mods = " + ".join(config.input_modalities)
    if config.task == "hie_outcome":
        return (
            f"Predicts the probability of an adverse 2-year neurocognitive outcome (label "
            f"`{config.labels[-1]}`; the other label is `{config.labels[0]}`) for a newborn with hypoxic-ischemic "
            f"encephalopathy, from {mods} brain MRI. A probability >= {config.threshold:g} is reported as "
            f"`{config.labels[-1]}`."
        )
    if config.task == "brain_age":
        spread = " and its spread (sd)" if config.model.head == "age_softbin" else ""
        return f"Estimates brain age in {config.age_unit}{spread} from {mods} brain MRI."
    if config.task == "classification":
        return f"Classifies {mods} brain MRI into one of: {', '.join(f'`{x}`' for x in config.labels)}."
    return f"Predicts a continuous phenotype from {mods} brain MRI."


def _inputs_table(config: CheckpointConfig) -> str:
    pre = config.preprocess
    lines = ["| channel | modality | units expected | orientation | voxel size (mm) | grid (voxels) |",
             "|---|---|---|---|---|---|"]
    spacing = " x ".join(f"{s:g}" for s in pre.spacing)
    shape = " x ".join(str(s) for s in pre.shape)
    for i, mod in enumerate(config.input_modalities):
        units = MODALITY_UNITS.get(mod, "as in training")
        lines.append(f"| {i} | {mod} | {units} | {pre.orientation} | {spacing} | {shape} |")
    return "\n".join(lines)


def _preprocess_text(config: CheckpointConfig) -> str:
    pre = config.preprocess
    intensity = INTENSITY_TEXT[pre.intensity].format(adc_scale=pre.adc_scale)
    steps = [
        f"1. Reorient to {pre.orientation} (world mm, 4x4 affine).",
        f"2. Resample to {' x '.join(f'{s:g}' for s in pre.spacing)} mm voxels ({pre.interpolation} interpolation).",
        f"3. Crop or pad to {' x '.join(str(s) for s in pre.shape)} voxels ({pre.crop} crop; foreground is "
        + (f"intensity > {pre.foreground_threshold:g})." if pre.foreground == "threshold" else
           f"the largest region above max({pre.foreground_threshold:g}, Otsu level) after smoothing)."),
        f"4. Intensities {intensity}" + (f", then clipped to [{pre.clip[0]:g}, {pre.clip[1]:g}]." if pre.clip else "."),
        f"5. Stack {pre.channels} channel(s) channels-first: {', '.join(config.input_modalities)}.",
    ]
    exact = json.dumps(pre.to_dict(), indent=2, sort_keys=True)
    return "\n".join(steps) + "\n\nThe exact configuration (`config.json` -> `preprocess`):\n\n```json\n" + exact + "\n```"


def _kv_table(data: Mapping[str, Any], header: tuple[str, str] = ("field", "value")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    for key in sorted(data):
        value = data[key]
        if isinstance(value, (dict, list, tuple)):
            value = "`" + json.dumps(value, sort_keys=True) + "`"
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)


def _training_data_text(config: CheckpointConfig, release: Mapping[str, Any]) -> str:
    prov = config.provenance
    data = prov.get("training_data")
    parts = []
    if _synthetic(config):
        parts.append("**Synthetic data.** Every volume this model was trained on (and evaluated on, where evaluation is recorded) is synthetic (the run recorded "
                     "`provenance.synthetic`); no real patient was involved."
                     + (" Generator parameters:" if isinstance(data, Mapping) else ""))
    if isinstance(data, Mapping):
        parts.append(_kv_table({k: v for k, v in data.items() if k != "synthetic"}))
    facts = {}
    if isinstance(data, str) and data:
        facts["cohort (manifest)"] = f"`{_short_source(data)}`"
    for key, label in (("n_training_cases", "cases"), ("data_manifest_sha256", "manifest sha256"),
                       ("stage", "training stage(s)")):
        if prov.get(key) not in (None, ""):
            facts[label] = prov[key]
    if facts:
        parts.append(_kv_table(facts))
    if not data:
        parts.append("The run did not record a training-data description (`provenance.training_data`).")
    if config.training_range:
        parts.append("Value ranges seen in training (inputs outside them trigger a warning at prediction time):\n\n"
                     + _kv_table(config.training_range, ("quantity", "range")))
    if release.get("training_data_notes"):
        parts.append(str(release["training_data_notes"]).strip())
    return "\n\n".join(parts)


def _table_lines(rows: Sequence[EvalRow]) -> list[tuple[tuple[str, str, str, str], dict[str, EvalRow]]]:
    """Rows grouped into the table's lines (protocol, method, data, n), in the order they were recorded."""
    lines: dict[tuple[str, str, str, str], dict[str, EvalRow]] = {}
    for row in rows:
        data = " ".join(x for x in (row.dataset, split_label(row)) if x)
        key = (protocol_label(row.protocol), row.method or "", data, "" if row.n is None else str(row.n))
        lines.setdefault(key, {})[row.metric] = row
    return list(lines.items())


def _evaluation_text(rows: Sequence[EvalRow], synthetic: bool) -> str:
    if not rows:
        return "No evaluation was recorded for this checkpoint; treat its performance as unknown."
    names = list(dict.fromkeys(r.metric for r in rows))
    head = ["protocol", "method", "data", "n", *(metric_label(n) for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, cells in _table_lines(rows):
        lines.append("| " + " | ".join([*key, *(_fmt_metric(cells[n]) if n in cells else "" for n in names)]) + " |")
    note = ("Cells read `mean ± sd [95 % CI low, high]` as written by the run (sd over folds/seeds, CI from the "
            "bootstrap); a bare number is a single estimate.")
    if synthetic:
        note += " **These numbers are measured on synthetic data and say nothing about performance on patients.**"
    return "\n".join(lines) + "\n\n" + note


def _cohort_note(evaluation: Evaluation) -> str:
    if evaluation.n_cases is None:
        return ""
    sites = evaluation.sites
    where = (" from sites " + ", ".join(f"{k} (n={v})" for k, v in sorted(sites.items()))) if sites else ""
    return f"Cross-validated rows: {evaluation.n_cases} cases{where}."


def _comparisons_text(evaluation: Evaluation) -> str:
    """An experiment's paired comparisons (``train.evaluate.paired_comparisons``) as a table, if present."""
    if not evaluation.comparisons:
        return ""
    lines = ["Paired comparison on the same splits (difference = method - reference):", "",
             "| method - reference | protocol | metric | pairs | mean difference [95 % CI] | p (sign-flip) |",
             "|---|---|---|---|---|---|"]
    for c in evaluation.comparisons:
        lines.append(f"| {c.method} - {c.reference} | {protocol_label(c.protocol)} | {metric_label(c.metric)} | "
                     f"{c.n_pairs} | {c.mean_diff:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.p_sign_flip:.3g} |")
    return "\n".join(lines)


def _usage_text(config: CheckpointConfig, name: str) -> str:
    if "T1w" in config.input_modalities:
        scan = "t1w.nii.gz"
    elif config.input_modalities[0] == "ADC":
        scan = "adc.nii.gz"
    else:
        scan = "scan.nii.gz"
    two = config.preprocess.channels > 1
    py_args = f'"{scan}"' + (', second_channel="zadc.nii.gz"' if two else "")
    cli_args = scan + (" --second-channel zadc.nii.gz" if two else "")
    out_py = {"hie_outcome": "print(prediction.probability, prediction.label)",
              "brain_age": "print(prediction.age, prediction.age_unit)"}.get(config.task, "print(prediction.score)")
    shape = ", ".join(str(s) for s in config.preprocess.shape)
    return f"""Python:

```python
from age2hie_hub import from_pretrained, Predictor

model = from_pretrained("{name}")  # torch module in eval mode; its preprocessing is model.checkpoint_config
predictor = Predictor.from_pretrained("{name}")  # reads, converts and preprocesses for you
prediction = predictor.predict({py_args})
{out_py}
```

Command line:

```bash
age2hie-predict {cli_args} --model {name} --json
age2hie-predict {cli_args} --model {name} --backend onnx   # ONNX Runtime; torch is not imported
```

ONNX directly (`model.onnx` in this repository) takes the *preprocessed* array, float32 of shape
`(N, {config.preprocess.channels}, {shape})`; the batch axis is dynamic:

```python
import onnxruntime as ort
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
outputs = session.run(None, {{session.get_inputs()[0].name: array}})
```"""


def _provenance_text(config: CheckpointConfig, files: Mapping[str, str] | None) -> str:
    prov = {k: v for k, v in config.provenance.items() if k != "training_data"}
    prov.setdefault("library_version", "not recorded")
    for key in ("git_commit", "seed", "data_manifest_sha256"):
        prov.setdefault(key, "not recorded")
    prov["architecture"] = {"arch": config.model.arch, **config.model.arch_args}
    prov["head"] = {"head": config.model.head, **config.model.head_args}
    prov["config_format_version"] = config.format_version
    text = _kv_table(prov)
    if files:
        text += "\n\nFile checksums (SHA-256):\n\n" + _kv_table(dict(files), ("file", "sha256"))
    return text


def _pct(level: float) -> str:
    return f"{level * 100:g} %"


def _uncertainty_text(config: CheckpointConfig) -> str:
    """The recorded uncertainty (config.json `uncertainty`) and input QC record, in words; '' when none."""
    parts = []
    reg = (config.uncertainty or {}).get("regression")
    if reg:
        unit = f" {reg.get('unit')}" if reg.get("unit") else ""
        nested = reg.get("nested_coverage") or {}
        width = "a width that grows with the prediction" if reg.get("scale") else \
            f"± {float(reg['quantile']):.2f}{unit} around every prediction"
        text = (f"**Prediction interval**: every prediction comes with a {_pct(float(reg['level']))} split-conformal "
                f"interval ({width}), fitted on {reg.get('fitted_on', 'held-out predictions')}.")
        if nested:
            text += (f" Checked nested (fitted on the other folds, applied to each held-out fold): it covered "
                     f"{nested['coverage'] * 100:.1f} % of {nested['n']} held-out cases (mean width "
                     f"{nested['mean_width']:.2f}{unit}).")
        parts.append(text)
    binary = (config.uncertainty or {}).get("binary")
    if binary:
        nested = binary.get("nested") or {}
        cal, conf = binary["calibration"], binary["conformal"]
        if cal.get("applied", True):
            use = "gives the calibrated probability reported next to the raw one"
        else:
            use = ("did not improve held-out probabilities (nested check below), so it is not applied: predictions "
                   "report the raw probability only")
        text = (f"**Calibration**: out-of-fold probabilities ({binary['n']} cases) have ECE {binary['ece_raw']:.3f} "
                f"(10 equal-width bins); a Platt map (a = {cal['a']:.3f}, b = {cal['b']:.3f}) fitted on them {use}. "
                f"**Prediction set**: a {_pct(float(conf['level']))} conformal set of labels comes with every "
                "prediction (both labels: the model cannot tell at that level).")
        if nested:
            text += (f" Checked nested (fitted on the other folds): ECE {nested['ece_raw']:.3f} raw -> "
                     f"{nested['ece_calibrated']:.3f} with the map, Brier {nested['brier_raw']:.3f} -> "
                     f"{nested['brier_calibrated']:.3f}; the sets held the true label in "
                     f"{nested['set_coverage'] * 100:.1f} % of {nested['n']} held-out cases.")
        if binary.get("synthetic"):
            text += " Measured on synthetic data."
        parts.append(text)
    if config.input_qc:
        parts.append(f"**Input QC**: statistics of the {config.input_qc.get('n_cases', '?')} training inputs "
                     "(foreground volume and extent, background, intensity distribution) are recorded; a scan "
                     "outside their range (with a margin) gets a warning naming the feature and a likely reason.")
    elif config.uncertainty:
        parts.append("No input QC record.")
    if not parts:
        return "No prediction interval or calibration is recorded for this checkpoint."
    return "\n\n".join(parts)


DEFAULT_INTENDED = ("Research on neonatal and paediatric brain MRI: reproducing and extending AGE2HIE-style "
                    "transfer learning, benchmarking, and as a starting checkpoint for fine-tuning on your own cohort.")
DEFAULT_OUT_OF_SCOPE = ("This is **not a clinical decision tool** and is not a medical device. Do not use it to "
                        "diagnose, to predict an individual patient's outcome, or to guide treatment or "
                        "counselling. Do not use it on modalities, ages or acquisition settings outside those "
                        "described under Training data.")


def _limitations_text(config: CheckpointConfig, release: Mapping[str, Any], synthetic: bool) -> str:
    items = list(release.get("limitations") or [])
    if synthetic:
        items.insert(0, "Trained (and, where recorded, evaluated) on synthetic volumes only: its weights encode the generator's "
                        "ground truth, not human anatomy or pathology.")
    rng = config.training_range
    if rng:
        items.append("Inputs outside the training ranges (" + ", ".join(f"{k} {v}" for k, v in sorted(rng.items()))
                     + ") are extrapolation; the library warns when it sees them.")
    items.append("Performance shifts between sites, scanners, field strengths and acquisition protocols; "
                 "validate on your own site before drawing conclusions.")
    return "\n".join(f"- {item}" for item in items)


def render_model_card(
    config: CheckpointConfig,
    *,
    metrics: Evaluation | Mapping[str, Any] | Sequence[Any] | None = None,
    release: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    files: Mapping[str, str] | None = None,
) -> ModelCard:
    """Render the full model card of a checkpoint.

    ``metrics``: the run's evaluation, an ``Evaluation`` or any form ``read_evaluation`` reads (a run's
    metrics.json); ``config.metrics`` when None. ``release`` is a ``model_cards/<name>.yaml`` mapping (prose and
    ids only); ``repo_id`` is the name users load it by; ``files`` maps file names to their SHA-256.
    """
    release = dict(release or {})
    evaluation = read_evaluation(config.metrics if metrics is None else metrics)
    synthetic = _synthetic(config)
    name = repo_id or release.get("repo_id") or release.get("model_name") or "path/to/checkpoint"
    title = release.get("title") or repo_id or release.get("model_name") or f"{config.model.arch} ({config.task})"
    card_data = model_card_data(config, metrics=evaluation, release=release)
    if synthetic:
        banner = ("> **Trained on synthetic data.** This checkpoint was trained on synthetic volumes, not on "
                  "patients. It demonstrates the pipeline; it is not for clinical use and its numbers say nothing "
                  "about real-world performance.")
    else:
        banner = "> **Research use only.** Not a medical device and not a clinical decision tool."
    parent = release.get("base_model") or _hub_parent(config) or config.provenance.get("parent")
    version = config.provenance.get("library_version")
    summary = (f"Backbone `{config.model.arch}`, head `{config.model.head}`; trained with age2hie-hub "
               + (f"{version}." if version else "(version not recorded)."))
    if parent:
        if not _REPO_ID.match(str(parent)):  # a local folder: its last two parts say which run, not whose disk
            parent = "/".join(Path(str(parent)).parts[-2:])
        summary += f" Transferred from `{parent}` (AGE2HIE: pretrain on brain age, refine a new head, finetune all layers)."
    if config.task == "hie_outcome":
        output = (f"P(`{config.labels[-1]}`) in [0, 1]; label `{config.labels[-1]}` when P >= {config.threshold:g}, "
                  f"else `{config.labels[0]}`.")
    elif config.task == "brain_age":
        output = f"age in {config.age_unit}" + (" with its sd" if config.model.head == "age_softbin" else "") + "."
    else:
        output = f"one of {list(config.labels)}." if config.task == "classification" else "a continuous value."
    return ModelCard.from_template(
        card_data,
        template_str=card_template(),
        title=title + (" — trained on synthetic data" if synthetic else ""),
        banner=banner,
        what=str(release.get("summary") or _what_it_does(config)).strip(),
        summary=summary,
        inputs=_inputs_table(config),
        output=output,
        intended_use=str(release.get("intended_use") or DEFAULT_INTENDED).strip(),
        out_of_scope=str(release.get("out_of_scope") or DEFAULT_OUT_OF_SCOPE).strip(),
        training_data=_training_data_text(config, release),
        preprocessing=_preprocess_text(config),
        evaluation="\n\n".join(x for x in (_evaluation_text(evaluation.rows, synthetic), _cohort_note(evaluation),
                                             _comparisons_text(evaluation), _uncertainty_text(config)) if x),
        limitations=_limitations_text(config, release, synthetic),
        usage=_usage_text(config, name),
        provenance=_provenance_text(config, files),
        citations=CITATIONS,
    )


@cache
def card_template() -> str:
    """The card's Jinja template, shipped as package data (``age2hie_hub/hub/templates/modelcard.md``)."""
    return resources.files("age2hie_hub.hub").joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def card_is_generated(text: str) -> bool:
    """True when `text` is a card this module wrote and nobody has edited since."""
    match = _MARKER_RE.search(text)
    return match is not None and _sha(text[: match.start()]) == match.group(1)


def build_model_card(config: CheckpointConfig) -> str:
    """README.md text for a checkpoint folder: the full card rendered from config.json, plus the marker."""
    text = str(render_model_card(config))
    if not text.endswith("\n"):
        text += "\n"
    return text + _MARKER.format(_sha(text)) + "\n"
