"""Run configs for ``age2hie-train``: plain dataclasses, every field defaulted, read from YAML or JSON.

Nested sections (``loop``, ``refine``, ``augment``, ...) are dataclasses themselves; ``data``, ``model`` and
``preprocess`` are dicts handed to ``read_cohort``, ``ModelConfig`` and ``PreprocessConfig``. Unknown keys are
an error naming the valid ones, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from age2hie_hub._config import renamed_fields, renamed_keys, to_plain, with_current_keys
from age2hie_hub.train.augment import AugmentConfig
from age2hie_hub.train.loop import LoopConfig

METHOD_INITS = ("checkpoint", "scratch", "imagenet", "kinetics", "sfcn")


@dataclass(frozen=True)
class MethodConfig:
    """How a network starts before training on the target cohort.

    init: checkpoint (our brain-age or any hub checkpoint folder/name in ``weights``: AGE2HIE transfer),
          scratch (random init, architecture from ``model``), imagenet / kinetics / sfcn (foreign weights
          file in ``weights``, converted by the named importer; architecture from ``model``).
    stages: "refine" (head only, body frozen) then "finetune" (all layers) for pretrained starts;
            scratch trains all layers in one "scratch" stage.
    """

    name: str = "transfer"
    init: str = "checkpoint"
    # checkpoint folder / hub name, or a foreign weights file; in an experiment, "" with init "checkpoint"
    # means the brain-age checkpoint of the experiment's own pretrain stage
    weights: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields; empty = the parent's architecture
    stages: tuple[str, ...] = ("refine", "finetune")

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if self.init not in METHOD_INITS:
            raise ValueError(f"method {self.name!r}: init must be one of {METHOD_INITS}, got {self.init!r}")
        bad = [s for s in self.stages if s not in ("refine", "finetune", "scratch")]
        if bad or not self.stages:
            raise ValueError(f"method {self.name!r}: stages must be refine/finetune/scratch, got {list(self.stages)}")


def _default_pretrain_model() -> dict[str, Any]:
    return {"arch": "resnet3d_10", "arch_args": {"width": 0.25}, "head": "age_regression"}


@dataclass(frozen=True)
class CVConfig:
    """k-fold cross-validation of a brain-age recipe (every case tested once) next to baselines on the same folds.

    Folds are stratified on age quantiles. In each fold the network is trained exactly as the final model is
    (same loop, augmentation and ``val_fraction``), and the baselines are fitted on the training fold only.
    The age-bias line (predicted ~ a + b * age) that corrects a fold's test predictions is fitted on the
    out-of-fold predictions of the other folds; the final model's line on all out-of-fold predictions.
    """

    folds: int = 5
    seed: int = 0  # fold assignment (the networks train with the pretrain seed)
    baselines: tuple[str, ...] = ("mean", "ridge_dlmuse")
    # ridge_dlmuse: DLMUSE label images <labels>/<subject>/anat/*_dseg.nii[.gz]; relative to a BIDS root
    labels: str = "derivatives/dlmuse"
    ridge_alphas: tuple[float, ...] = ()  # empty: baselines.DEFAULT_ALPHAS (10^-3 .. 10^3)
    inner_folds: int = 5  # ridge penalty chosen by an inner k-fold of the training fold
    bias_correction: bool = True
    n_boot: int = 2000
    workers: int = 1  # folds trained side by side in this many processes (each with loop.threads threads)

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", tuple(self.baselines))
        object.__setattr__(self, "ridge_alphas", tuple(float(a) for a in self.ridge_alphas))
        if self.folds < 2:
            raise ValueError(f"cv.folds must be >= 2, got {self.folds}")
        if self.workers < 1:
            raise ValueError(f"cv.workers must be >= 1, got {self.workers}")
        if any(a <= 0 for a in self.ridge_alphas):
            raise ValueError(f"cv.ridge_alphas must be positive, got {list(self.ridge_alphas)}")
        from age2hie_hub.train.baselines import BASELINES

        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ValueError(f"cv.baselines: unknown {bad}; use any of {list(BASELINES)}")


@dataclass(frozen=True)
class PretrainConfig:
    """Brain-age pretraining on T1 volumes, with a held-out test split and a predict-the-mean baseline.

    With ``cv`` set, ``pretrain`` first cross-validates the recipe (``run_dir/cv``) and records the estimate, the
    age-bias line and the out-of-fold residuals in the checkpoint; ``test_fraction: 0`` then trains the final
    model on every case (no held-out score of its own).
    """

    data: dict[str, Any] = field(default_factory=lambda: {"format": "bids", "path": "data/brain_age", "target": "age"})
    model: dict[str, Any] = field(default_factory=_default_pretrain_model)  # head: age_regression | age_softbin
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessConfig fields (defaults if empty)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=20, lr=1e-3, patience=5))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    test_fraction: float = 0.2  # held out for the reported MAE; 0: train on every case (after a cv)
    val_fraction: float = 0.1  # of the rest, for early stopping; 0: none, every epoch runs
    cv: CVConfig | None = None  # k-fold cross-validation of this recipe, run before the model is trained
    softbin_sigma: float = 1.0  # age_softbin label width (target units)
    softbin_bins: int = 40
    age_unit: str = "years"
    seed: int = 0
    run_dir: str = "runs/pretrain"
    cache_dir: str = "runs/cache"  # preprocessed arrays, shared between runs
    cache_dtype: str = "float16"
    preprocess_workers: int = 2
    synthetic: bool = False  # recorded in the checkpoint; set for synthetic cohorts
    resume: bool = False

    def __post_init__(self) -> None:
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")


@renamed_fields(val_fraction="test_fraction")
@dataclass(frozen=True)
class TransferConfig:
    """Train an outcome (or any target) model on a cohort: AGE2HIE transfer, or a baseline method.

    ``test_fraction`` (formerly ``val_fraction``: the old name still reads, with a DeprecationWarning, in
    this release) sizes two stratified parts. ``age2hie-train transfer`` holds out that fraction of the cases
    as the test split of its reported metrics, then carves that fraction of the remaining cases as the
    validation part that early stopping (``patience``, ``restore_best``) watches: 0.15 gives about 15 % test,
    12.75 % validation and 72.25 % of the cases trained on (rounded per class, at least one case per class).
    Inside ``evaluate``/``experiment`` the protocol's folds are the test splits, so there it only sizes the
    validation part carved from each training fold. 0: no test and no validation part, every case trains and
    every epoch runs, and no score is recorded (``"split": "none"``, ``"n_test": 0``): the final model after
    a cross-validation.
    """

    data: dict[str, Any] = field(default_factory=lambda: {"format": "bonbid", "path": "data/hie", "target": "outcome"})
    method: MethodConfig = field(default_factory=lambda: MethodConfig(weights="runs/pretrain/checkpoint"))
    preprocess: dict[str, Any] = field(default_factory=dict)  # empty: the parent checkpoint's preprocessing
    head: str = "outcome"  # outcome (binary) or classification (K classes)
    labels: tuple[str, ...] = ()  # class names in class-id order; empty: the cohort's class values
    refine: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=5, lr=1e-3, train_only="head"))
    finetune: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=10, lr=1e-4, patience=5))
    scratch: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=15, lr=1e-3, patience=5))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # held out as the test split, then the same fraction of the rest for early stopping (see above); 0: neither
    test_fraction: float = 0.15
    class_weighted: bool = True
    seed: int = 0
    run_dir: str = "runs/transfer"
    cache_dir: str = "runs/cache"
    cache_dtype: str = "float16"
    preprocess_workers: int = 2
    synthetic: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1) (0 = train on every case, no held-out score), "
                             f"got {self.test_fraction}")


@dataclass(frozen=True)
class LearningCurveConfig:
    sizes: tuple[Any, ...] = (16, 32, 64, "all")  # training-set sizes ("all" = the full training fold)
    protocol: str = "multi_site"
    max_splits: int = 5  # of that protocol's splits (per seed), to bound the cost
    seeds: tuple[int, ...] = ()  # which of the experiment's seeds get a curve; empty: all of them


@dataclass(frozen=True)
class ExperimentConfig:
    """The paper grid: (pretrain once) then methods x protocols x seeds, learning curves, tables and plots."""

    pretrain: PretrainConfig | None = None  # None: use the checkpoint named in the methods
    transfer: TransferConfig = field(default_factory=TransferConfig)  # target data + stage settings
    methods: tuple[MethodConfig, ...] = (
        MethodConfig("transfer", "checkpoint", ""),  # "": the checkpoint of this experiment's pretrain stage
        MethodConfig("scratch", "scratch", stages=("scratch",)),
    )
    protocols: tuple[str, ...] = ("same_site", "multi_site", "cross_site")
    k: int = 5
    seeds: tuple[int, ...] = (0,)
    learning_curve: LearningCurveConfig | None = field(default_factory=LearningCurveConfig)
    reference_method: str = "scratch"  # paired comparisons: every other method against this one
    n_boot: int = 2000
    run_dir: str = "runs/experiment"
    save_checkpoints: bool = False  # a hub checkpoint per fold (the final transfer model is always saved)


# ---- reading -------------------------------------------------------------------------------------------

def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from plain data, recursing into nested dataclass fields; unknown keys raise.

    The former name of a renamed field (``_config.renamed_fields``) reads as the new one, with a
    DeprecationWarning naming ``where``; both names at once is an error."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = with_current_keys(cls, data, where, stacklevel=2)  # renamed fields: old names read, with a warning
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where)
    if origin is tuple and args and dataclasses.is_dataclass(args[0]):
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        return tuple(value)
    return value


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str], cls: type,
                    source: str = "the config") -> dict[str, Any]:
    """``data`` with ``section.key=value`` overrides applied (``--set``, the Hydra/MONAI habit).

    Values are read as YAML (``3``, ``1e-4``, ``true``, ``[4, 4, 4]``, ``null``, ``{a: 1}``); a numeric key
    indexes a list (``methods.0.weights=brain-age``). Keys are checked against the dataclass fields on the way
    down, so a typo is an error naming the valid keys; the result is then validated exactly like the file.
    A renamed field's former name works as a key, with a DeprecationWarning, and sets the new one, also when
    the file (``source``) still uses the former name.
    """
    import yaml

    data = json.loads(json.dumps(data))  # a deep copy of plain data; the caller's dict is left alone
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected section.key=value, e.g. --set loop.epochs=3")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
        value = _yaml11_float(value)
        parts = key.strip().split(".")
        node: Any = data
        hint: Any = cls
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the config"
            hint = _unwrap_optional(hint)
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(f"--set {item!r}: {where} is a list of {len(node)}; use an index 0-{len(node) - 1}")
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
                hint = typing.get_args(hint)[0] if typing.get_args(hint) else Any
                continue
            if dataclasses.is_dataclass(hint):
                fields = {f.name: f for f in dataclasses.fields(hint)}
                renamed = renamed_keys(hint)
                if isinstance(node, dict) and any(old in node for old in renamed):
                    # the file's own former names first, so that the override replaces the value they set
                    section = ".".join([source, *parts[:depth]])  # as from_dict names it
                    current = with_current_keys(hint, node, section, stacklevel=2)
                    node.clear()
                    node.update(current)
                if part in renamed:
                    warnings.warn(f"--set {item!r}: {part!r} is now {renamed[part]!r}; the old name still works but "
                                  f"will be removed", DeprecationWarning, stacklevel=2)
                    part = parts[depth] = renamed[part]
                if part not in fields:
                    raise ValueError(f"--set {item!r}: unknown key {part!r} under {where}; "
                                     f"valid keys are {sorted(fields)}")
                child_hint = typing.get_type_hints(hint)[part]
            else:
                child_hint = Any  # a free-form mapping (data, model, preprocess): its own reader validates it
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {where} is not a section (it holds {node!r})")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    default = _default_of(hint, part) if dataclasses.is_dataclass(hint) else None
                    node[part] = default if default is not None else {}
                node = node[part]
            hint = child_hint
    return data


def _yaml11_float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; on a command line it is meant as a number."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_yaml11_float(v) for v in value]
    return value


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0] if len(inner) == 1 else hint
    return hint


def _default_of(cls: type, name: str) -> Any:
    """The plain-data default of field ``name`` of ``cls`` (a section the file left out), or None."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    return None if value is None else json.loads(json.dumps(to_plain(value)))


def load_config(path: str | Path, cls: type, overrides: typing.Sequence[str] = ()) -> Any:
    """A config from a .yaml/.yml/.json file; missing fields take their defaults; ``overrides`` are
    ``section.key=value`` strings applied on top (:func:`apply_overrides`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError: report as a config problem
        mark = getattr(exc, "problem_mark", None)  # YAML: where the parser stopped
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}: not valid {path.suffix.lstrip('.').upper()}{where}: {reason}") from None
    if overrides:
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        data = apply_overrides(data, overrides, cls, str(path))
        return from_dict(cls, data, f"{path} (with --set)")
    return from_dict(cls, data, str(path))


def to_dict(config: Any) -> dict[str, Any]:
    return to_plain(config)
