"""age2hie-predict: run a checkpoint on scans (also `python -m age2hie_hub`).

Heavy imports (torch, SimpleITK, onnxruntime) happen inside main() so that --help is instant.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Any

from age2hie_hub._atomic import write_text_atomic
from age2hie_hub.cli._common import EXIT_ERROR, EXIT_OK, add_verbosity, run_main, setup_logging

PROG = "age2hie-predict"
CHALLENGE_ADC = Path("images/skull-stripped-adc-brain-mri")
CHALLENGE_ZADC = Path("images/z-score-adc")
CHALLENGE_OUTPUT = "2-year-neurocognitive-outcome.json"
CSV_COLUMNS = (
    "source", "status", "task", "label", "probability", "threshold", "age", "age_sd", "age_unit", "value",
    "interval_low", "interval_high", "interval_level", "calibrated_probability", "prediction_set", "set_level",
    "model", "revision", "model_file", "model_file_sha256",
    "weights_sha256",  # deprecated: model_file_sha256 under its former name, kept in this release (docs/inference.md)
    "synthetic_model", "backend", "device", "warnings", "error",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Predict 2-year HIE outcome (or brain age) from ADC / DWI / T1 scans with an age2hie-hub model.",
        epilog="INPUT may be files (NIfTI, MHA/NRRD, DICOM zip), folders (of scans, or one DICOM series), "
        "globs, or a CSV list with a 'path' column (and optionally 'second_channel'). "
        "Exit codes: 0 all scans ok, 1 some scan failed or error, 2 usage.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="scans to predict")
    p.add_argument("--model", default="age2hie", help="alias, hf-hub:org/name[@rev] or checkpoint folder (default: age2hie)")
    p.add_argument(
        "--backend", choices=("auto", "torch", "onnx"), default="auto",
        help="inference backend (default: auto = onnx when the checkpoint has a model.onnx, else torch)",
    )
    p.add_argument("--onnx-file", metavar="PATH", help="ONNX file to use instead of the checkpoint's model.onnx")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto (CUDA if present)")
    p.add_argument(
        "--openvino", action=argparse.BooleanOptionalAction, default=None,
        help="ONNX backend on CPU: run on the OpenVINO execution provider (default: when onnxruntime-ep-openvino "
        "is installed; --openvino makes its absence an error, --no-openvino uses ONNX Runtime's own CPU kernels)",
    )
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="scans per forward pass (default: 4)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="background reading threads")
    p.add_argument("--second-channel", nargs="+", metavar="PATH", help="second-channel volume (e.g. Z-ADC), one per INPUT")
    p.add_argument("--output", "-o", metavar="FILE", help="write all results to FILE (.csv or .json), written only when complete")
    p.add_argument("--json", action="store_true", help="print one JSON object per scan instead of text")
    p.add_argument("--example", action="store_true", help="also predict the synthetic example scan shipped with the package")
    p.add_argument("--list-models", action="store_true", help="list models that load without downloading, then exit")
    p.add_argument(
        "--grand-challenge", nargs=2, metavar=("INPUT_DIR", "OUTPUT_DIR"),
        help="BONBID-HIE 2024 outcome-track container mode: reads INPUT_DIR/images/{skull-stripped-adc-brain-mri,"
        f"z-score-adc}}/*.mha, writes OUTPUT_DIR/{CHALLENGE_OUTPUT} (0 or 1)",
    )
    p.add_argument(
        "--report", metavar="DIR",
        help="also write a visual report to DIR: one PNG per scan (slices with the crop box, the model input, an "
        "occlusion saliency map, prediction, warnings) and DIR/index.html (needs the report extra: matplotlib)",
    )
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--local-files-only", action="store_true", help="never contact the Hub")
    add_verbosity(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.inputs or args.example or args.list_models or args.grand_challenge):
        parser.error("give at least one INPUT (or --example, --list-models, or --grand-challenge IN OUT)")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.report and (args.grand_challenge or args.list_models):
        parser.error("--report goes with INPUT scans, not with --grand-challenge or --list-models")
    if args.output and not args.output.lower().endswith((".csv", ".json")):
        parser.error(f"--output {args.output}: the file name must end in .csv or .json")
    setup_logging(args.verbose, args.quiet)
    return run_main(_run, args, PROG)


def _run(args: argparse.Namespace) -> int:
    if args.list_models:
        return _list_models()
    if args.report:  # before any model is loaded or scan read: a missing extra must not cost a whole run
        from age2hie_hub.inference.report import check_report_dir, require_matplotlib

        require_matplotlib()
        check_report_dir(args.report)
    predictor = _load(args)
    if predictor.synthetic:
        # One line, always (even with -q): these numbers must never be mistaken for a clinical prediction.
        print(
            f"{PROG}: note: model {args.model!r} was trained on synthetic data only; its outputs are demonstrations, "
            "not clinical predictions", file=sys.stderr,
        )
    if args.grand_challenge:
        return _challenge(predictor, Path(args.grand_challenge[0]), Path(args.grand_challenge[1]), args)
    return _predict(predictor, args)


def _load(args: argparse.Namespace) -> Any:
    from age2hie_hub.inference import Predictor

    # backend "auto": ONNX Runtime when the checkpoint holds a model.onnx (it starts without importing torch),
    # else torch; Predictor resolves the name once and makes that choice.
    return Predictor.from_pretrained(
        args.model, backend=args.backend, device=args.device, revision=args.revision,
        local_files_only=args.local_files_only, onnx_file=args.onnx_file, openvino=args.openvino,
    )


def _list_models() -> int:
    """Each release alias and whether it loads offline: bundled in the package, in the Hub cache, or not."""
    from huggingface_hub import try_to_load_from_cache

    from age2hie_hub.hub import CONFIG_NAME, WEIGHTS_NAME, list_pretrained

    for info in list_pretrained():
        cached = all(
            isinstance(try_to_load_from_cache(info.repo_id, name), str) for name in (CONFIG_NAME, WEIGHTS_NAME)
        )
        where = "bundled" if info.bundled else "cached" if cached else "download"
        print(f"{info.alias:<12} {info.task:<12} {where:<9} {info.repo_id}  {info.description}")
    return EXIT_OK


def _say(text: str, err: bool = False) -> None:
    """Print without breaking a progress bar that may be drawn on stderr (tqdm is loaded only with a bar)."""
    stream = sys.stderr if err else sys.stdout
    if "tqdm" in sys.modules:
        sys.modules["tqdm"].tqdm.write(text, file=stream)
    else:
        print(text, file=stream)
    stream.flush()


def _predict(predictor: Any, args: argparse.Namespace) -> int:
    from age2hie_hub.inference import example_scan
    from age2hie_hub.inference.sources import expand_sources

    sources = expand_sources(args.inputs + ([str(example_scan())] if args.example else []))
    if args.second_channel is not None:
        if len(args.second_channel) != len(sources):
            raise ValueError(
                f"{len(sources)} scans but {len(args.second_channel)} --second-channel volumes; give one per scan"
            )
        sources = [dataclasses.replace(s, second_channel=second) for s, second in zip(sources, args.second_channel)]
    rows: list[dict[str, Any] | None] = [None] * len(sources)
    outcomes: list[Any] = [s.error for s in sources]  # Prediction or error message, for --report
    usable = [i for i, s in enumerate(sources) if s.error is None]
    for i, s in enumerate(sources):
        if s.error is not None:
            rows[i] = _emit_failure(s.path, s.error, args)
    prepared: list[Any] = [None] * len(sources)  # the model inputs, kept for --report only (small: model grid)

    def keep(k: int, item: Any) -> None:
        prepared[usable[k]] = item

    results = predictor.iter_predictions(
        [sources[i].path for i in usable], second_channels=[sources[i].second_channel for i in usable],
        batch_size=args.batch_size, workers=args.workers,
        progress=len(usable) > 1 and not (args.quiet or args.json) and sys.stderr.isatty(),
        on_prepared=keep if args.report else None,
    )
    for k, result in results:
        i = usable[k]
        outcomes[i] = result
        if isinstance(result, Exception):
            rows[i] = _emit_failure(sources[i].path, str(result), args)
        else:
            rows[i] = {**result.to_dict(), "status": "ok", "error": None}
            _emit(result, rows[i], args)
    done = [r for r in rows if r is not None]
    if args.output:
        _write_results(Path(args.output), done)
    if args.report:
        from age2hie_hub.inference.report import write_report

        index = write_report(
            predictor, [s.path for s in sources], args.report, second_channels=[s.second_channel for s in sources],
            predictions=outcomes, prepared=prepared, progress=len(sources) > 1 and not (args.quiet or args.json) and sys.stderr.isatty(),
        )
        if not args.quiet:
            print(f"{PROG}: report written to {index}", file=sys.stderr)
    failed = sum(r["status"] != "ok" for r in done)
    if failed and not args.quiet and len(done) > 1:
        print(f"{PROG}: {failed} of {len(done)} scans failed", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def _emit_failure(source: str, reason: str, args: argparse.Namespace) -> dict[str, Any]:
    row = {"source": source, "status": "error", "error": reason}
    if args.json:
        _say(json.dumps(row))
    else:  # reader errors already start with the path
        _say(f"{PROG}: failed: {reason if reason.startswith(source) else f'{source}: {reason}'}", err=True)
    return row


NO_INTERVAL = "no interval recorded for this model"
NO_CALIBRATION = "no calibration recorded for this model"


def _pct(level: float) -> str:
    return f"{level * 100:g} %"


def format_prediction(p: Any) -> str:
    """One human-readable line for a Prediction, with its interval / calibrated probability and set when the
    model records them (and a note saying it records none when it does not)."""
    name = Path(p.source).name if p.source else "<array>"
    interval = (f"[{_pct(p.interval_level)} interval {p.interval[0]:.1f} - {p.interval[1]:.1f}]"
                if p.interval is not None and p.interval_level is not None else f"[{NO_INTERVAL}]")
    if p.task == "hie_outcome":
        result = f"{p.label}  P(adverse outcome) = {p.probability:.3f}"
        if p.calibrated_probability is not None:
            result += f" (calibrated {p.calibrated_probability:.3f})"
        result += f"  (threshold {p.threshold:.2f})"
        if p.prediction_set is not None and p.set_level is not None:
            result += f"  [{_pct(p.set_level)} prediction set {{{', '.join(p.prediction_set)}}}]"
        elif p.calibrated_probability is None:
            result += f"  [{NO_CALIBRATION}]"
    elif p.task == "brain_age":
        sd = f" ± {p.age_sd:.1f}" if p.age_sd is not None else ""
        result = f"brain age {p.age:.1f}{sd} {p.age_unit} {interval}"
    elif p.task == "classification":
        result = f"{p.label}  (p = {max(p.probabilities):.3f})"
    else:
        result = f"value {p.value:.4g} {interval}"
    return f"{name}: {result}"


def _emit(p: Any, row: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        _say(json.dumps(row))
    if args.quiet:
        return
    for w in p.warnings:  # on stderr, so a pipe that reads the results still shows them to the user
        _say(f"{PROG}: warning: {w}", err=True)
    if args.json:
        return
    lines = [format_prediction(p)]
    if args.verbose:
        lines += [f"  note: {n}" for n in p.notes]
        ran = f"{p.model_file} sha256 {(p.model_file_sha256 or '')[:12]}"
        lines.append(f"  model {p.model} ({p.backend} on {p.device}, {ran})")
    _say("\n".join(lines))


def _write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            interval = row.get("interval") or (None, None)
            writer.writerow({**row, "warnings": "; ".join(row.get("warnings") or ()),
                             "interval_low": interval[0], "interval_high": interval[1],
                             "prediction_set": "{" + "|".join(row["prediction_set"]) + "}"
                             if row.get("prediction_set") is not None else None})
        text = buf.getvalue()
    write_text_atomic(path, text)




def _one_mha(folder: Path) -> Path:
    files = sorted(folder.glob("*.mha"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise FileNotFoundError(f"{folder}: expected exactly one .mha file (one case per run), found {found}")
    return files[0]


def _challenge(predictor: Any, input_dir: Path, output_dir: Path, args: argparse.Namespace) -> int:
    """BONBID-HIE 2024 outcome track: one case in, 0 (favourable) or 1 (adverse) out."""
    if predictor.config.task != "hie_outcome":
        raise ValueError(f"--grand-challenge needs an HIE outcome model; {args.model!r} is a {predictor.config.task} model")
    adc = _one_mha(input_dir / CHALLENGE_ADC)
    # The Z-ADC map is always provided; only a two-channel (ADC + Z-ADC) model reads it.
    z_adc = _one_mha(input_dir / CHALLENGE_ZADC) if predictor.config.preprocess.channels > 1 else None
    prediction = predictor.predict(adc, second_channel=z_adc)
    outcome = int(prediction.label == predictor.config.labels[1])
    write_text_atomic(output_dir / CHALLENGE_OUTPUT, json.dumps(outcome) + "\n")
    _emit(prediction, {**prediction.to_dict(), "status": "ok", "error": None, "outcome": outcome}, args)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
