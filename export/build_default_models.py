"""Rebuild the bundled default models (`brain-age`, `age2hie`) with the package's own code: brain age from the
real IXI T1 scans in the shared data folder, AGE2HIE transfer on the synthetic HIE cohort.

    python -m export.build_default_models --work /tmp/bundle_work [--data ../shared/data]

Steps, all inside ``--work`` (relative paths, so the build does not depend on where that folder is):

1. data: ``data/ixi_t1`` is a link to ``<--data>/ixi_t1`` (real IXI T1, BIDS, with DLMUSE labels; never copied),
   and the synthetic BONBID-HIE-layout neonatal ADC cohort is made in ``data/hie`` (``age2hie_hub.synth``;
   reused only when its synthetic_truth.json records the same parameters and its first and last cases
   regenerate identically with the current code);
2. brain age, ``age2hie_hub.train.stages.pretrain`` (what ``age2hie-train pretrain`` runs) with
   configs/bundle_brain_age.yaml: k-fold cross-validation of the recipe next to the mean and ridge-on-DLMUSE
   baselines (runs/brain-age/cv), then the final model on every subject with an age -> runs/brain-age;
3. the held-out estimate of the AGE2HIE recipe: ``age2hie_hub.train.experiment.run_experiment`` in evaluate mode
   (what ``age2hie-train evaluate`` runs) with configs/bundle_age2hie.yaml: k-fold multi-site cross-validation,
   transfer from step 2's checkpoint vs training from scratch -> runs/age2hie-cv;
4. the released AGE2HIE model: the same transfer recipe (refine the head, then finetune all layers) on all
   cases of the HIE cohort -> runs/age2hie (so it has no held-out score of its own: its card shows step 3's);
5. the release recipe (``export.release``: strict reload, ONNX export with parity, card, SHA256SUMS, and the
   training data's licence terms in LICENSE-DATA.md) and ``--bundle`` into age2hie_hub/data/models/<name>/,
   then a check of every bundled folder's size, sums and card.

A step whose recorded inputs (config, data-manifest hash, parent weights hash) match a finished earlier run in
--work is skipped. Training runs on CPU with one thread per process: the result is bit-identical between runs
on the same machine and software versions (docs/release.md says what the bytes rest on).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from age2hie_hub.hub.checkpoint import file_sha256
from export.release import ReleaseError

log = logging.getLogger(__name__)

PROG = "python -m export.build_default_models"
REPO = Path(__file__).resolve().parents[1]
BRAIN_AGE_CONFIG = REPO / "configs" / "bundle_brain_age.yaml"
AGE2HIE_CONFIG = REPO / "configs" / "bundle_age2hie.yaml"
CARDS = REPO / "model_cards"
BUNDLE_MAX_BYTES = 15_000_000  # 15 MB per bundled model (weights + ONNX + card): the package stays small
TRUTH = "synthetic_truth.json"
DEFAULT_DATA = REPO.parent / "shared" / "data"  # the shared data folder beside the checkout
IXI = "ixi_t1"  # real IXI T1 (BIDS + derivatives/dlmuse), linked into --work as data/ixi_t1
LICENSE_NAME = "LICENSE-DATA.md"  # the training data's terms, shipped with weights trained on it
INPUTS = "build_inputs.json"  # what a finished step was made from; a step is skipped when they match

# The synthetic HIE cohort (docs/synthetic_data.md); the T1 cohort of brain age is real (IXI, --data).
HIE_COHORT = {"folder": "data/hie", "n": 156, "seed": 0}  # BONBID-HIE: BCH 72 + MGH 84, drawn grids


class BuildError(ReleaseError):
    """A step of the bundled-model build failed; the message names the step and the file."""


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run with ``folder`` as the working directory, so the configs' relative paths land there."""
    old = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 1)
    log.info("%s: %.0f s", name, timings[name])


# ---- 1. cohorts ---------------------------------------------------------------------------------------------

def _close(a: Any, b: Any, rel: float = 1e-6) -> bool:
    """Stored truth (floats rounded to 8 significant digits) against freshly generated truth."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def _plain(obj: Any) -> Any:
    """numpy scalars/arrays -> Python values (JSON round trip) for comparison with a stored truth."""
    import numpy as np

    return json.loads(json.dumps(obj, default=lambda v: v.tolist() if isinstance(v, (np.ndarray, np.generic)) else str(v)))


def _same_image(generated: Any, path: Path) -> bool:
    import numpy as np

    from age2hie_hub.io import read_volume

    stored = read_volume(path)
    return (stored.data.shape == generated.data.shape and np.allclose(stored.affine, generated.affine, atol=1e-4)
            and np.array_equal(stored.data.astype(np.float32), np.asarray(generated.data, dtype=np.float32)))


def _cohort_reusable(root: Path, kind: str, spec: dict[str, Any]) -> bool:
    """True when ``root`` holds the cohort ``spec`` describes, as the current generator would write it."""
    import numpy as np

    path = root / TRUTH
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        params, subjects = data["parameters"], data["subjects"]
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); the cohort is made again", path, exc)
        return False
    want = {"kind": kind, "seed": spec["seed"], "n": spec["n"], "synthetic": True,
            "spacing_override": list(spec["spacing"]) if spec.get("spacing") else None}
    if kind == "brain_age_t1":
        want["age_range"] = list(spec["age_range"])
    diff = {k: (params.get(k), v) for k, v in want.items() if params.get(k) != v}
    if diff or len(subjects) != spec["n"]:
        log.warning("%s: recorded parameters differ %s (or %d subjects); the cohort is made again", path, diff, len(subjects))
        return False
    # The documented seeding (subject i from the i-th child of SeedSequence(seed)) lets us regenerate the first
    # and last subjects: a changed generator shows up in their truth or their voxels.
    seeds = np.random.SeedSequence(spec["seed"]).spawn(spec["n"] + 1)
    for i in (0, spec["n"] - 1):
        stored = dict(subjects[i])
        rng = np.random.default_rng(seeds[i + 1])
        if kind == "brain_age_t1":
            from age2hie_hub.synth import synth_t1

            sub = stored.pop("participant_id")
            volume, truth = synth_t1(rng, stored["age"], stored["sex"], stored["site"], spacing=spec.get("spacing"))
            image = root / sub / "anat" / f"{sub}_T1w.nii.gz"
        else:
            from age2hie_hub.synth import synth_hie_case

            case = stored.pop("case_id")
            intercept = params["outcome_model"]["intercept"]
            volume, _, _, truth = synth_hie_case(rng, stored["site"], intercept=intercept)
            image = root / "1ADC_ss" / f"{case}-ADC_ss.mha"
        if not _close(stored, _plain(truth)) or not image.is_file() or not _same_image(volume, image):
            log.warning("%s: subject %d does not regenerate identically with this version of age2hie_hub.synth; "
                        "the cohort is made again", root, i + 1)
            return False
    return True


def link_real_data(work: Path, data: Path) -> Path:
    """``work/data/ixi_t1`` -> ``data/ixi_t1`` (a symbolic link: the real scans are read in place, never copied)."""
    source = (data / IXI).resolve()
    if not (source / "participants.tsv").is_file() or not (source / "LICENSE-SBIA.md").is_file():
        raise BuildError(f"{source}: not the IXI T1 folder (participants.tsv, LICENSE-SBIA.md, sub-*/anat/*_T1w.nii.gz, "
                         "derivatives/dlmuse); pass --data pointing at the shared data folder that holds ixi_t1/")
    link = work / "data" / IXI
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and link.resolve() == source:
            return link
        if not link.is_symlink():
            raise BuildError(f"{link} exists and is not a link to {source}; remove it or use another --work")
        link.unlink()
    link.symlink_to(source, target_is_directory=True)
    return link


def make_cohorts(work: Path, workers: int, timings: dict[str, float]) -> None:
    from age2hie_hub.synth import make_hie_cohort

    hie = work / HIE_COHORT["folder"]
    if _cohort_reusable(hie, "hie_adc", HIE_COHORT):
        log.info("cohort %s: reused (parameters and regenerated cases match)", hie)
    else:
        with _timed(timings, "synth_hie_s"):
            make_hie_cohort(hie, HIE_COHORT["n"], HIE_COHORT["seed"], workers=workers, overwrite=True)


# ---- 2-4. training ------------------------------------------------------------------------------------------

def _done(run_dir: Path, inputs: dict[str, Any], needed: tuple[str, ...], config_type: type | None = None) -> bool:
    """Whether ``run_dir`` holds a finished step made from ``inputs``. With ``config_type``, the saved config is
    read back through it first, so that a field renamed since (``_config.renamed_fields``) does not redo a step
    whose inputs are the same."""
    path = run_dir / INPUTS
    if not path.is_file() or not all((run_dir / n).exists() for n in needed):
        return False
    saved = json.loads(path.read_text(encoding="utf-8"))
    if config_type is not None and isinstance(saved.get("config"), dict):
        from age2hie_hub.train.config import from_dict, to_dict

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                saved["config"] = json.loads(json.dumps(to_dict(from_dict(config_type, saved["config"]))))
        except (TypeError, ValueError):
            return False  # a config this version cannot read: not the same inputs
    return saved == json.loads(json.dumps(inputs))


def _record(run_dir: Path, inputs: dict[str, Any]) -> None:
    from age2hie_hub.train.stages import write_json

    write_json(inputs, run_dir / INPUTS)


def train_brain_age(timings: dict[str, float]) -> Path:
    """Step 2 (cwd = --work): age2hie-train pretrain configs/bundle_brain_age.yaml (cross-validation, then the
    final model on every subject)."""
    from age2hie_hub.train.config import PretrainConfig, load_config, to_dict
    from age2hie_hub.train.manifest import read_cohort
    from age2hie_hub.train.stages import pretrain

    cfg = load_config(BRAIN_AGE_CONFIG, PretrainConfig)
    cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, progress=False))
    cohort = read_cohort({"task": "regression", **cfg.data})
    run_dir = Path(cfg.run_dir)
    inputs = {"config": to_dict(cfg), "data_manifest_sha256": cohort.sha256}
    if _done(run_dir, inputs, ("checkpoint/model.safetensors", "metrics.json"), type(cfg)):
        log.info("brain-age: reused %s (same config and data)", run_dir)
    else:
        with _timed(timings, "brain_age_s"):
            pretrain(cfg, cohort)
        _record(run_dir, inputs)
    return run_dir


def _age2hie_config(parent: Path) -> Any:
    from age2hie_hub.train.config import ExperimentConfig, load_config

    cfg = load_config(AGE2HIE_CONFIG, ExperimentConfig)
    if cfg.pretrain is not None:
        raise BuildError(f"{AGE2HIE_CONFIG}: must not hold a pretrain section; the brain-age model comes from "
                         f"{BRAIN_AGE_CONFIG.name}")
    for m in cfg.methods:
        if m.init == "checkpoint" and Path(m.weights) != parent:
            raise BuildError(f"{AGE2HIE_CONFIG}: method {m.name!r} starts from {m.weights!r}; it must start from the "
                             f"brain-age checkpoint this build trains ({parent})")
    return cfg


def evaluate_age2hie(parent: Path, parent_sha: str, timings: dict[str, float]) -> Path:
    """Step 3 (cwd = --work): age2hie-train evaluate configs/bundle_age2hie.yaml (no learning curves)."""
    from age2hie_hub.train.config import to_dict
    from age2hie_hub.train.experiment import run_experiment
    from age2hie_hub.train.manifest import read_cohort

    cfg = _age2hie_config(parent)
    cfg = dataclasses.replace(cfg, learning_curve=None)
    run_dir = Path(cfg.run_dir)
    inputs = {"config": to_dict(cfg), "data_manifest_sha256": read_cohort(cfg.transfer.data).sha256,
              "parent_weights_sha256": parent_sha}
    if _done(run_dir, inputs, ("metrics.json",), type(cfg)):
        log.info("age2hie cross-validation: reused %s", run_dir)
    else:
        if (run_dir / "results.jsonl").exists() and not _done(run_dir, inputs, (), type(cfg)):
            # results.jsonl resumes a grid; rows from other inputs must not be mixed in.
            (run_dir / "results.jsonl").unlink()
        with _timed(timings, "evaluate_s"):
            run_experiment(cfg, evaluate_only=True)
        _record(run_dir, inputs)
    return run_dir


def train_age2hie(parent: Path, parent_sha: str, timings: dict[str, float]) -> Path:
    """Step 4 (cwd = --work): the transfer recipe of configs/bundle_age2hie.yaml on every case.

    The released model uses every case: this calls the same ``fit_split`` the transfer stage and the evaluation
    grid call (``stages.transfer`` with ``test_fraction: 0`` gives the same weights; this recipe predates it).
    """
    import numpy as np

    from age2hie_hub.hub import save_pretrained
    from age2hie_hub.train.config import to_dict
    from age2hie_hub.train.input_stats import checkpoint_records
    from age2hie_hub.train.manifest import read_cohort
    from age2hie_hub.train.stages import (
        _checkpoint_config, _labels, _target_preprocess, cached_arrays, fit_split, parent_of, write_json,
    )

    exp = _age2hie_config(parent)
    method = next(m for m in exp.methods if m.init == "checkpoint")
    cfg = dataclasses.replace(exp.transfer, method=method, run_dir="runs/age2hie")
    cohort = read_cohort(cfg.data)
    run_dir = Path(cfg.run_dir)
    inputs = {"config": to_dict(cfg), "data_manifest_sha256": cohort.sha256, "parent_weights_sha256": parent_sha}
    if _done(run_dir, inputs, ("checkpoint/model.safetensors", "metrics.json"), type(cfg)):
        log.info("age2hie: reused %s", run_dir)
        return run_dir
    with _timed(timings, "transfer_s"):
        parent = parent_of(cfg)  # resolved once: the same checkpoint gives the preprocessing and the weights
        if parent is None or parent.source.sha256 != parent_sha:
            raise BuildError(f"{method.weights}: the parent resolved for the transfer is not the brain-age checkpoint "
                             f"this build trained (weights sha256 {parent_sha})")
        prep = _target_preprocess(cfg, cohort, parent)
        files = cached_arrays(cohort, prep, cfg.cache_dir, dtype=cfg.cache_dtype, workers=cfg.preprocess_workers,
                              progress=False)
        every = np.arange(len(cohort))
        # The test positions are the training cases themselves: their metrics would be a resubstitution score,
        # so they are not recorded; the honest estimate is step 3's cross-validation.
        res = fit_split(method, cohort, files, every, every, cfg, seed=cfg.seed, run_dir=run_dir / "state",
                        parent=parent)
        metrics = {"split": "none (trained on every case; see the cross-validated evaluation)",
                   "n_train": len(cohort), "method": method.name, "synthetic": cfg.synthetic}
        # The parent is this build's brain-age model, bundled as `brain-age` and published as its Hub repo; the
        # hash pins the exact weights (a local path would make the files depend on where --work is).
        ck = _checkpoint_config(res.model, prep, task="hie_outcome", labels=_labels(cfg, cohort), cohort=cohort,
                                seed=cfg.seed, parent="age2hie-hub/brain-age", metrics=metrics,
                                synthetic=cfg.synthetic,
                                extra={"stage": "+".join(method.stages), "method": method.name,
                                       "parent_weights_sha256": parent_sha, "evaluation": f"{exp.run_dir}/metrics.json"})
        # The training inputs' QC record, as stages.transfer writes it (the calibration is added by the release).
        ck = dataclasses.replace(ck, **checkpoint_records(cohort, ck.input_modalities, metrics, ck.task,
                                                          workers=max(1, cfg.preprocess_workers)))
        save_pretrained(res.model, run_dir / "checkpoint", ck)
        write_json({"metrics": metrics, "history": res.history, "checkpoint": str(run_dir / "checkpoint")},
                   run_dir / "metrics.json")
    _record(run_dir, inputs)
    return run_dir


# ---- 5. release and bundle ----------------------------------------------------------------------------------

def license_text(data: Path) -> str:
    """LICENSE-DATA.md: the terms that travel with weights trained on the IXI copy in ``data/ixi_t1``.

    IXI is CC BY-SA 3.0 (credit, share-alike); this resampled copy comes from the NiChart project under the
    SBIA Contribution and Software License Agreement, whose Part B must accompany any copy or derivative. The
    agreement is reproduced in full from the copy the weights were trained on.
    """
    sbia = (data / IXI / "LICENSE-SBIA.md").read_text(encoding="utf-8").strip()
    return f"""# Licence of these weights and terms of the data they were trained on

**Weights**: Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0,
https://creativecommons.org/licenses/by-sa/4.0/). The code that made and runs them (age2hie-hub) is Apache-2.0.

**Training data**: the `brain-age` weights were trained on T1-weighted MRI of healthy adults from the **IXI
dataset** (Hammersmith Hospital, Philips 3 T; https://brain-development.org/ixi-dataset/), distributed under
CC BY-SA 3.0: credit the IXI dataset in anything made with these weights, and share adaptations of them under
the same or a compatible share-alike licence. The `age2hie` weights are adapted from the `brain-age` weights
(transfer learning) and carry the same terms.

The copy of IXI used (resampled to 2 mm, with DLMUSE anatomical labels) was obtained from the NiChart project
(University of Pennsylvania) under the SBIA Contribution and Software License Agreement reproduced below, whose
Part B applies to this derivative. As that agreement requires:

All or portions of this licensed product (such portions are the "Software") have been obtained under license
from the Section of Biomedical Image Analysis, Department of Radiology at the University of Pennsylvania and are
subject to the following terms and conditions:

These weights are a modified version (a model trained on the data), not the original Software, and must not be
represented as such. Research use only; they have not been reviewed or approved by the FDA or any other agency,
and clinical applications are neither recommended nor advised.

---

{sbia}
"""


def release_and_bundle(work: Path, name: str, run_dir: Path, evaluation: Path | None, bundle_root: Path | None,
                       onnx: bool = True, extra_files: tuple[Path, ...] = ()) -> Path:
    from age2hie_hub.hub import read_config
    from export.release import build_release, bundle_release, load_release_metadata, verify_sums

    meta = load_release_metadata(CARDS / f"{name}.yaml")
    release = build_release(work / run_dir, work / "releases" / name, release_meta=meta, repo_id=meta.get("repo_id"),
                            evaluation=work / evaluation if evaluation else None, onnx=onnx, overwrite=True,
                            extra_files=extra_files)
    folder = bundle_release(release.folder, name, root=bundle_root)
    verify_sums(folder)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    if size > BUNDLE_MAX_BYTES:
        raise BuildError(f"{folder}: {size / 1e6:.1f} MB, over the {BUNDLE_MAX_BYTES / 1e6:.0f} MB a bundled model "
                         "may take; train a slimmer network")
    card = (folder / "README.md").read_text(encoding="utf-8")
    head = card.split("---", 2)[-1][:600].lower()
    if read_config(folder).provenance.get("synthetic"):
        if "synthetic" not in head:
            raise BuildError(f"{folder / 'README.md'}: the card's first lines must say the model is synthetic")
    elif "synthetic" in card.lower().replace("| synthetic | false |", ""):  # the provenance row says "False"
        raise BuildError(f"{folder / 'README.md'}: the model was trained on real data, its card must not call it "
                         "synthetic")
    log.info("bundled %s: %s (%.1f MB)", name, folder, size / 1e6)
    return folder


def golden_t1_volume() -> Any:
    """A fixed, synthetic whole-head-like T1 volume (2 mm, P-S-R like the IXI scans): the brain-age golden input.

    An ellipsoidal head with a darker rim (scalp/skull), a brighter 'white matter' core and dark 'ventricles';
    deterministic (no random draws), so the golden value depends only on the preprocessing and the weights.
    """
    import numpy as np

    from age2hie_hub.io import Volume

    shape = (120, 120, 90)
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) - (n - 1) / 2 for n in shape], indexing="ij"))
    head = np.sqrt((g[0] / 48) ** 2 + ((g[1] - 8) / 40) ** 2 + (g[2] / 36) ** 2)
    brain = np.sqrt((g[0] / 42) ** 2 + ((g[1] - 14) / 33) ** 2 + (g[2] / 31) ** 2)
    vent = np.sqrt((g[0] / 9) ** 2 + ((g[1] - 14) / 6) ** 2 + (g[2] / 3) ** 2)
    data = np.where(head < 1, 60.0, 0.0) + np.where(brain < 1, 40.0, 0.0) + np.where(brain < 0.7, 30.0, 0.0)
    data[vent < 1] = 25.0
    data += 5.0 * np.cos(g[0] / 3.0) * np.sin(g[2] / 4.0) * (brain < 1)  # some 'cortical' texture
    affine = np.array([[0.0, 0.0, 2.0, -88.0], [-2.0, 0.0, 0.0, 118.0], [0.0, 2.0, 0.0, -135.0], [0, 0, 0, 1.0]])
    return Volume(data.astype(np.float32), affine)


def golden_values(folders: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Golden outputs, with both backends: the age2hie model's probability on the shipped example scan and the
    brain-age model's age (raw) on ``golden_t1_volume()``."""
    from age2hie_hub.inference import Predictor
    from age2hie_hub.inference.examples import example_scan

    out: dict[str, dict[str, float]] = {"age2hie_probability": {}, "brain_age_years": {}}
    for backend in ("torch", "onnx"):
        pred = Predictor.from_pretrained(str(folders["age2hie"]), backend=backend, device="cpu").predict(example_scan())
        out["age2hie_probability"][backend] = float(pred.probability)
        pred = Predictor.from_pretrained(str(folders["brain-age"]), backend=backend, device="cpu").predict(golden_t1_volume())
        out["brain_age_years"][backend] = float(pred.age)
    return out


def build(work: Path, *, data: Path = DEFAULT_DATA, workers: int = 2, bundle_root: Path | None = None,
          onnx: bool = True) -> dict[str, Any]:
    """All five steps; returns timings, the measured metrics and the golden values."""
    work = work.expanduser().resolve()
    data = data.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    link_real_data(work, data)
    make_cohorts(work, workers, timings)
    with _inside(work):
        brain = train_brain_age(timings)
        parent = brain / "checkpoint"
        parent_sha = file_sha256(parent / "model.safetensors")
        cv = evaluate_age2hie(parent, parent_sha, timings)
        hie = train_age2hie(parent, parent_sha, timings)
    licence = work / "releases" / LICENSE_NAME
    licence.parent.mkdir(parents=True, exist_ok=True)
    licence.write_text(license_text(data), encoding="utf-8")
    with _timed(timings, "release_s"):
        folders = {"brain-age": release_and_bundle(work, "brain-age", brain, brain / "cv", bundle_root, onnx, (licence,)),
                   "age2hie": release_and_bundle(work, "age2hie", hie, cv, bundle_root, onnx, (licence,))}
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    brain_out = json.loads((work / brain / "metrics.json").read_text(encoding="utf-8"))
    cv_metrics = json.loads((work / cv / "metrics.json").read_text(encoding="utf-8"))
    summary = {
        "timings_s": timings,
        "brain_age_cv": [{k: v for k, v in row.items() if k.split("_")[0] in ("method", "protocol", "n", "mae", "pearson",
                                                                            "bias") and not k.endswith("_text")}
                         for row in brain_out["summary"]],
        "brain_age_bias_line": {k: brain_out["metrics"]["age_bias_correction"][k] for k in ("a", "b", "n")},
        "age2hie_cv": [{k: v for k, v in row.items() if k.split("_")[0] in ("method", "protocol", "n", "accuracy",
                                                                           "auc", "balanced")}
                       for row in cv_metrics["summary"]],
        "bundled": {name: {p.name: file_sha256(p) for p in sorted(f.iterdir()) if p.is_file()}
                    for name, f in folders.items()},
        "golden": golden_values(folders) if onnx else {},
    }
    (work / "build_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _parser() -> argparse.ArgumentParser:
    from age2hie_hub.cli._common import add_verbosity

    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True,
                   help="working folder for cohorts, runs and releases (keep it outside the repository)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"the shared data folder holding {IXI}/ (default: ../shared/data beside the checkout)")
    p.add_argument("--workers", type=int, default=2, help="processes for cohort synthesis (default 2)")
    p.add_argument("--bundle-root", type=Path, help="bundle into this folder instead of age2hie_hub/data/models/")
    add_verbosity(p)
    return p


def _run(args: argparse.Namespace) -> int:
    work = args.work.expanduser().resolve()
    if work == REPO or REPO in work.parents and not str(work.relative_to(REPO)).startswith(("runs", ".cache")):
        raise BuildError(f"--work {args.work}: cohorts and runs take ~1 GB; put them outside the repository "
                         "(or under its ignored runs/ folder)")
    summary = build(work, data=args.data, workers=args.workers, bundle_root=args.bundle_root)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from age2hie_hub.cli._common import run_main, setup_logging

    args = _parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not args.quiet:
        log.setLevel(logging.INFO)  # a long build says which step it is in, whatever -v says
    return run_main(_run, args, PROG)


if __name__ == "__main__":
    sys.exit(main())
