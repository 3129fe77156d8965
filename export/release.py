"""The release recipe: a finished training run folder -> a release folder -> (optionally) the Hub and the package.

    python -m export.release RUN_DIR -o RELEASE_DIR [--card model_cards/age2hie.yaml]
                             [--push REPO_ID [--no-dry-run]] [--bundle NAME]

The release folder holds exactly: ``config.json`` and ``model.safetensors`` (model weights only, re-saved from
a strict load of the run's checkpoint), ``model.onnx`` (exported, checked and compared with torch on the spot),
``README.md`` (the full model card, every number from the run's metrics), ``RELEASE.md`` (a short note) and
``SHA256SUMS`` (``sha256sum -c`` format). It is written to a temporary sibling folder and renamed into place,
so a failed step never leaves a half-made release. The same run folder gives byte-identical files (see
docs/release.md for what that rests on).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from age2hie_hub.errors import Age2HieError
from age2hie_hub.hub.checkpoint import CARD_NAME, CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME, file_sha256
from age2hie_hub.hub.evaluation import Evaluation, read_evaluation

log = logging.getLogger(__name__)

PROG = "python -m export.release"
NOTE_NAME, SUMS_NAME, METRICS_NAME = "RELEASE.md", "SHA256SUMS", "metrics.json"
# Sub-folders of a run that may hold its final hub-format checkpoint, in order of preference.
CHECKPOINT_DIRS = ("checkpoint", "final", "best", "model")
BUNDLE_LIMIT_BYTES = 15 * 1024 * 1024  # the package ships at most this much per bundled model
BUNDLE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# Release metadata keys a model_cards/<name>.yaml may hold (prose and ids of the card); anything else is a typo.
RELEASE_KEYS = frozenset({
    "model_name", "title", "repo_id", "license", "license_name", "license_link", "language", "base_model",
    "datasets", "tags", "summary", "intended_use", "out_of_scope", "limitations", "training_data_notes",
    "pipeline_tag", "method",
})


class ReleaseError(Age2HieError, ValueError):
    """A release cannot be made, checked, pushed or bundled; the message says which file and what to do."""


@dataclass(frozen=True)
class Release:
    """What build_release made: the folder, its files' SHA-256, and the ONNX parity check."""

    folder: Path
    checkpoint: Path  # the run's checkpoint folder it came from
    sha256: dict[str, str]
    onnx: dict[str, Any] = field(default_factory=dict)  # opset, exporter, outputs, max_abs_diff, provider


def load_release_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a model_cards/<name>.yaml release file; unknown keys are refused (a typo must not vanish)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read release metadata ({exc}); fix the YAML file") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: release metadata must be a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - RELEASE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known keys are {sorted(RELEASE_KEYS)}")
    return data


def find_checkpoint(run_dir: Path) -> Path:
    """The run's hub-format checkpoint folder: the run itself, or one of CHECKPOINT_DIRS, or the only one."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found; give the folder a training run wrote")

    def is_ckpt(p: Path) -> bool:
        return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()

    if is_ckpt(run_dir):
        return run_dir
    for name in CHECKPOINT_DIRS:
        if is_ckpt(run_dir / name):
            return run_dir / name
    found = sorted(p for p in run_dir.iterdir() if p.is_dir() and is_ckpt(p))
    if len(found) == 1:
        return found[0]
    hint = f"several: {[p.name for p in found]}; pick one with --checkpoint" if found else "none"
    raise ReleaseError(
        f"{run_dir}: no hub-format checkpoint folder ({CONFIG_NAME} + {WEIGHTS_NAME}) in the run or its "
        f"sub-folders {list(CHECKPOINT_DIRS)} ({hint})"
    )


def read_metrics(run_dir: Path, checkpoint: Path, config_metrics: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The run's measured evaluation: metrics.json in the run (or checkpoint) folder, else config.json's metrics."""
    for path in (run_dir / METRICS_NAME, checkpoint / METRICS_NAME):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc}); the run's metrics file is damaged") from exc
            if not isinstance(data, dict):
                raise ValueError(f"{path}: the metrics file must hold a JSON object, got {type(data).__name__}")
            return data, file_sha256(path)
    if not config_metrics:
        log.warning("%s has no %s and its config.json records no metrics: the card will say so", run_dir, METRICS_NAME)
    return dict(config_metrics), None


def _with_evaluation(own: Evaluation, path: Path) -> tuple[Evaluation, str]:
    """The run's held-out rows, then an experiment's cross-validated rows, paired comparisons and cohort (from the
    experiment's metrics.json, which replaces whatever cross-validation the run itself recorded)."""
    if path.is_dir():
        path = path / METRICS_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no experiment metrics file; give an experiment folder or its {METRICS_NAME}")
    except ValueError as exc:
        raise ReleaseError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not (isinstance(data.get("summary"), list) or isinstance(data.get("evaluation"), dict)):
        raise ReleaseError(f"{path}: not an experiment's metrics (no 'evaluation' record or 'summary' list); "
                           "run age2hie-train experiment")
    try:
        experiment = read_evaluation(data)
    except ValueError as exc:
        raise ReleaseError(f"{path}: {exc}") from exc
    return own.with_cross_validation(experiment), file_sha256(path)


def with_uncertainty(config: Any, evaluation: Path | None) -> Any:
    """The config with its ``uncertainty`` record, when it lacks one and the run says how to fit it.

    Brain age / regression: from the cross-validation residuals its metrics record (pretrain with ``cv:``).
    HIE outcome: from the out-of-fold probabilities of its own method in the ``evaluation`` experiment's
    results.jsonl; the reliability table and plot are written beside it (reliability_<method>.csv/.png).
    """
    import dataclasses

    from age2hie_hub.train import calibration as C

    if config.uncertainty:
        return config
    record = None
    if config.task in ("brain_age", "regression"):
        record = C.regression_record_from_metrics(config.metrics, unit=config.age_unit if config.task == "brain_age" else "")
    elif config.task == "hie_outcome" and evaluation is not None:
        folder = evaluation if evaluation.is_dir() else evaluation.parent
        method = config.provenance.get("method")
        if (folder / "results.jsonl").is_file() and method:
            try:
                record = C.binary_record_from_experiment(folder, method,
                                                         synthetic=bool(config.provenance.get("synthetic")))
            except ValueError as exc:
                raise ReleaseError(f"{folder}: cannot calibrate method {method!r} from its results: {exc}") from exc
            C.write_reliability(record, folder, method)
    if record is None:
        log.info("no uncertainty record for this release (no CV residuals or out-of-fold probabilities)")
        return config
    return dataclasses.replace(config, uncertainty=record)


def _release_note(
    run_dir: Path, checkpoint: Path, config: Any, metrics_sha: str | None, onnx: dict[str, Any], repo_id: str | None,
    evaluation_sha: str | None = None,
) -> str:
    prov = config.provenance
    lines = [
        f"# Release of `{repo_id or config.model.arch}`",
        "",
        "Made by the age2hie-hub release recipe (`python -m export.release`, docs/release.md) from the training run",
        f"folder `{run_dir.name}` (checkpoint sub-folder `{checkpoint.relative_to(run_dir).as_posix() or '.'}`).",
        "",
    ]
    if prov.get("synthetic") or (isinstance(prov.get("training_data"), dict) and prov["training_data"].get("synthetic")):
        lines += ["**These weights were trained on synthetic data.** They are not for clinical use.", ""]
    lines += [
        f"- task: `{config.task}`; architecture `{config.model.arch}`, head `{config.model.head}`",
        f"- seed: {prov.get('seed', 'not recorded')}; git commit: {prov.get('git_commit', 'not recorded')}",
        f"- data manifest sha256: {prov.get('data_manifest_sha256', 'not recorded')}",
        f"- metrics file sha256: {metrics_sha or 'none (metrics taken from config.json)'}",
    ]
    if evaluation_sha:
        lines.append(f"- experiment (cross-validated evaluation) metrics file sha256: {evaluation_sha}")
    if onnx:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in sorted(onnx["max_abs_diff"].items()))
        lines.append(
            f"- ONNX: opset {onnx['opset']} ({onnx['exporter']} exporter), ONNX Runtime {onnx['provider']} vs torch "
            f"on a batch of shape {list(onnx['input_shape'])}: max difference {diffs} (tolerance {onnx['tolerance']:g})"
        )
    else:
        lines.append("- ONNX: not exported for this release (--no-onnx)")
    lines += ["", f"Check the files with `sha256sum -c {SUMS_NAME}`.", ""]
    return "\n".join(lines)


def _write_sums(folder: Path) -> dict[str, str]:
    sums = {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != SUMS_NAME}
    (folder / SUMS_NAME).write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())), encoding="utf-8")
    return sums


def _publishable(folder: Path) -> None:
    """Temp files and folders are created private (0600/0700); a release is read by others: 0644/0755 less umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o755 & ~umask)
    for p in folder.iterdir():
        if p.is_file():
            p.chmod(0o644 & ~umask)


def _replace_folder(staging: Path, target: Path, overwrite: bool) -> None:
    """Move a finished staging folder to `target`; an existing target is replaced only with overwrite."""
    _publishable(staging)
    if target.exists():
        if not overwrite:
            raise ReleaseError(f"{target} already exists; choose a new folder or pass --overwrite")
        if not target.is_dir():
            raise ReleaseError(f"{target} exists and is not a folder; choose a folder path")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old)
    else:
        os.replace(staging, target)


def build_release(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    release_meta: dict[str, Any] | None = None,
    repo_id: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    evaluation: str | os.PathLike[str] | None = None,
    onnx: bool = True,
    overwrite: bool = False,
    extra_files: "list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...]" = (),
) -> Release:
    """Run folder -> release folder (see the module docstring). Raises before anything appears at `out_dir`.

    ``extra_files`` (e.g. the licence terms of the training data, which must travel with weights trained on
    it) are copied into the release under their own names and listed in SHA256SUMS.
    """
    import dataclasses

    from age2hie_hub.hub import load_checkpoint, save_pretrained
    from age2hie_hub.hub.card import render_model_card

    run_dir = Path(run_dir)
    out_dir = Path(out_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else find_checkpoint(run_dir)
    if out_dir.exists() and not overwrite:
        raise ReleaseError(f"{out_dir} already exists; choose a new folder or pass --overwrite")
    release_meta = dict(release_meta or {})
    repo_id = repo_id or release_meta.get("repo_id")
    extras = [Path(f) for f in extra_files]
    reserved = {CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME, CARD_NAME, NOTE_NAME, SUMS_NAME}
    for f in extras:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: extra release file not found")
        if f.name in reserved or [g.name for g in extras].count(f.name) > 1:
            raise ReleaseError(f"{f}: extra release file name {f.name!r} clashes with another release file")

    # Strict load: a checkpoint whose weights and config.json disagree is refused here, not shipped.
    model = load_checkpoint(ckpt)
    config = model.checkpoint_config
    metrics, metrics_sha = read_metrics(run_dir, ckpt, config.metrics)
    if metrics and not config.metrics:  # config.json carries the measured evaluation too (not the loss history)
        own = metrics["metrics"] if isinstance(metrics.get("metrics"), dict) else metrics
        config = dataclasses.replace(config, metrics=own)
    config = with_uncertainty(config, Path(evaluation) if evaluation is not None else None)
    try:
        record = read_evaluation(metrics)
    except ValueError as exc:
        raise ReleaseError(f"{run_dir}: the run's metrics: {exc}") from exc
    evaluation_sha = None
    if evaluation is not None:  # the card (not config.json) also shows the cross-validated protocols
        record, evaluation_sha = _with_evaluation(record, Path(evaluation))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        # save_pretrained writes model.safetensors from the model's state_dict: model weights only, whatever
        # else (optimizer state, EMA copies) the run's file held.
        save_pretrained(model, staging, config)
        onnx_info: dict[str, Any] = {}
        if onnx:
            from age2hie_hub.onnx.export import TOLERANCE, export_onnx

            try:
                report = export_onnx(model, staging / ONNX_NAME, config=config)
            except RuntimeError as exc:  # the exporter's parity check (or the export itself) failed
                raise ReleaseError(f"{ckpt}: ONNX export failed, no release written: {exc}") from exc
            if not report.ok:  # export_onnx raises first; keep the check where the release relies on it
                raise ReleaseError(f"{ckpt}: ONNX parity check failed: {report.max_abs_diff}")
            onnx_info = {"opset": report.opset, "exporter": report.exporter, "outputs": list(report.outputs),
                         "input_shape": list(report.input_shape), "max_abs_diff": dict(report.max_abs_diff),
                         "provider": report.provider, "tolerance": TOLERANCE}
        files = {name: file_sha256(staging / name) for name in (CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME)
                 if (staging / name).is_file()}
        card = render_model_card(config, metrics=record, release=release_meta, repo_id=repo_id, files=files)
        (staging / CARD_NAME).write_text(str(card).rstrip("\n") + "\n", encoding="utf-8")
        (staging / NOTE_NAME).write_text(
            _release_note(run_dir, ckpt, config, metrics_sha, onnx_info, repo_id, evaluation_sha), encoding="utf-8")
        for f in extras:
            shutil.copyfile(f, staging / f.name)
        sums = _write_sums(staging)
        _replace_folder(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("release written to %s (%d files)", out_dir, len(sums) + 1)
    return Release(folder=out_dir, checkpoint=ckpt, sha256=sums, onnx=onnx_info)


def verify_sums(folder: Path) -> None:
    """Check SHA256SUMS against the files; raise naming the first file that differs or is missing/extra."""
    sums_path = folder / SUMS_NAME
    if not sums_path.is_file():
        raise FileNotFoundError(f"{folder} has no {SUMS_NAME}; is it a release folder made by {PROG}?")
    listed = {}
    for line in sums_path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != SUMS_NAME}
    if set(listed) != present:
        raise ReleaseError(f"{folder}: files {sorted(present)} differ from {SUMS_NAME}'s list {sorted(listed)}")
    for name, digest in sorted(listed.items()):
        if file_sha256(folder / name) != digest:
            raise ReleaseError(f"{folder / name}: SHA-256 differs from {SUMS_NAME}; the release was modified")


def push_plan(folder: Path, repo_id: str, revision: str | None) -> str:
    """What --push would publish, as text (the dry run's output)."""
    lines = [f"would push {folder} to {repo_id} (revision {revision or 'main'}) as one commit:"]
    for p in sorted(folder.iterdir()):
        if p.is_file():
            lines.append(f"  {p.name:<20} {p.stat().st_size:>12,d} bytes  sha256 {file_sha256(p)}")
    lines.append("run again with --no-dry-run to publish")
    return "\n".join(lines)


def push_release(
    folder: Path, repo_id: str, *, revision: str | None = None, private: bool = False,
    token: str | bool | None = None, commit_message: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Publish a release folder as one commit, then load it back at that commit and compare; returns the commit."""
    import torch

    from age2hie_hub.hub import from_pretrained, load_checkpoint, push_to_hub
    from age2hie_hub.onnx.export import example_input

    verify_sums(folder)
    info = push_to_hub(folder, repo_id, private=private, revision=revision, token=token,
                       commit_message=commit_message or f"Release {repo_id} with the age2hie-hub release recipe")
    commit = info.oid
    with tempfile.TemporaryDirectory(prefix="age2hie-release-verify-") as tmp:
        remote = from_pretrained(repo_id, revision=commit, cache_dir=cache_dir or tmp, token=token)
        local = load_checkpoint(folder)
        expected = file_sha256(folder / WEIGHTS_NAME)
        if remote.checkpoint_source.sha256 != expected:
            raise ReleaseError(f"{repo_id}@{commit}: the Hub's {WEIGHTS_NAME} differs from {folder / WEIGHTS_NAME}")
        x = example_input(local, local.checkpoint_config, 1)
        with torch.inference_mode():
            same = torch.equal(remote(x), local(x))
        if not same:
            raise ReleaseError(f"{repo_id}@{commit}: the model loaded from the Hub gives different outputs")
    log.info("pushed %s to %s at commit %s and loaded it back", folder, repo_id, commit)
    return commit


def default_bundle_root() -> Path:
    import age2hie_hub

    return Path(age2hie_hub.__file__).resolve().parent / "data" / "models"


def bundle_release(folder: Path, name: str, *, root: Path | None = None, overwrite: bool = True) -> Path:
    """Copy a release folder into the package's bundled models (age2hie_hub/data/models/NAME/), atomically."""
    if not BUNDLE_NAME_RE.match(name):
        raise ValueError(f"bundle name {name!r} must be lower-case letters, digits, '.', '_' or '-' (e.g. 'age2hie')")
    verify_sums(folder)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    if size > BUNDLE_LIMIT_BYTES:
        raise ReleaseError(f"{folder} is {size / 2**20:.1f} MiB; a bundled model (weights + ONNX copy + card) may "
                         f"be at most {BUNDLE_LIMIT_BYTES / 2**20:.0f} MiB: train a slimmer width, or release with "
                         "--no-onnx (the ONNX file holds a second copy of the weights)")
    root = root or default_bundle_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        for p in sorted(folder.iterdir()):
            if p.is_file():
                shutil.copyfile(p, staging / p.name)
        _replace_folder(staging, root / name, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root / name


def _parser() -> argparse.ArgumentParser:
    from age2hie_hub.cli._common import add_verbosity

    p = argparse.ArgumentParser(
        prog=PROG, description="Turn a finished training run into a release folder; optionally push it to the "
        "Hugging Face Hub (dry run unless --no-dry-run) and bundle it into the package.")
    p.add_argument("run_dir", type=Path, help="the training run folder (holds a hub-format checkpoint + metrics.json)")
    p.add_argument("-o", "--output", type=Path, required=True, help="release folder to create")
    p.add_argument("--card", type=Path, help="release metadata for the model card, e.g. model_cards/age2hie.yaml")
    p.add_argument("--checkpoint", type=Path, help="the run's checkpoint folder, when the run holds several")
    p.add_argument("--evaluation", type=Path, metavar="EXPERIMENT",
                   help="an `age2hie-train experiment` folder (or its metrics.json) whose cross-validated protocol "
                   "table and paired comparisons go into the card")
    p.add_argument("--repo-id", help="name users load it by (default: --push, else the card metadata's repo_id)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export (and its parity check)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing release folder")
    p.add_argument("--push", metavar="REPO_ID", help="publish the release to this Hub repo as one commit")
    p.add_argument("--no-dry-run", action="store_true", help="really push (default: print what would be pushed)")
    p.add_argument("--revision", help="branch to push to (created from main if missing)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--bundle", metavar="NAME", help="also copy the release to age2hie_hub/data/models/NAME/")
    p.add_argument("--extra-file", action="append", default=[], type=Path, metavar="FILE",
                   help="also ship FILE in the release (repeatable), e.g. the training data's licence terms")
    add_verbosity(p)
    return p


def _run(args: argparse.Namespace) -> int:
    if args.quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    meta = load_release_metadata(args.card) if args.card else {}
    repo_id = args.repo_id or args.push or meta.get("repo_id")
    release = build_release(args.run_dir, args.output, release_meta=meta, repo_id=repo_id,
                            checkpoint=args.checkpoint, evaluation=args.evaluation, onnx=not args.no_onnx, overwrite=args.overwrite,
                            extra_files=args.extra_file)
    print(f"release: {release.folder}")
    for name, digest in sorted(release.sha256.items()):
        print(f"  {digest}  {name}")
    if release.onnx:
        print("  onnx parity (ONNX Runtime vs torch, max abs diff): "
              + ", ".join(f"{k} {v:.2e}" for k, v in sorted(release.onnx["max_abs_diff"].items())))
    if args.push:
        if args.no_dry_run:
            commit = push_release(release.folder, args.push, revision=args.revision, private=args.private)
            print(f"pushed to {args.push} at commit {commit}; loaded back with from_pretrained and checked")
        else:
            print(push_plan(release.folder, args.push, args.revision))
    if args.bundle:
        print(f"bundled: {bundle_release(release.folder, args.bundle)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from age2hie_hub.cli._common import run_main, setup_logging

    args = _parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run_main(_run, args, PROG)


if __name__ == "__main__":
    sys.exit(main())
