"""age2hie-export onnx --model NAME -o model.onnx: export a checkpoint to ONNX and verify it at once."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from age2hie_hub.cli._common import EXIT_ERROR, EXIT_OK, add_verbosity, run_main, setup_logging

PROG = "age2hie-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Export age2hie-hub checkpoints to other formats.")
    sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    o = sub.add_parser(
        "onnx",
        help="ONNX with a dynamic batch axis, checked and compared with PyTorch in ONNX Runtime",
        description="Export to ONNX: input 'volume' (N, C, X, Y, Z) float32, outputs named after the model's "
        "predictions ('probability', 'age', ...). The file is written only after onnx.checker and an ONNX Runtime "
        "run matching PyTorch (max abs diff <= 1e-4) pass.",
    )
    o.add_argument("--model", default="age2hie", help="alias, hf-hub:org/name[@rev] or checkpoint folder (default: age2hie)")
    o.add_argument("-o", "--output", metavar="FILE", help="output .onnx (default: model.onnx inside a local checkpoint folder)")
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (>= 17; default: the pinned one)")
    o.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo", help="torch.onnx exporter (default: dynamo)")
    o.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    o.add_argument("--local-files-only", action="store_true", help="never contact the Hub")
    add_verbosity(o)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run_main(_onnx, args, PROG)


def _default_output(model: object, name: str) -> Path:
    """model.onnx beside the weights for a local folder; never inside the Hub's cache or a bundled model
    (its files are pinned by SHA256SUMS, and an extra export would make it fail its own check)."""
    from age2hie_hub.hub.resolve import BUNDLED_DIR

    source = getattr(model, "checkpoint_source", None)
    if source is None or getattr(source, "repo_id", None) is not None:
        raise ValueError(f"model {name!r} came from the Hub cache; say where to write with -o FILE.onnx")
    folder = Path(source.folder).resolve()
    if folder.parent == BUNDLED_DIR.resolve():
        raise ValueError(f"model {name!r} is bundled with the package (already exported, pinned by hash); "
                         "say where to write with -o FILE.onnx")
    return folder / "model.onnx"


def _onnx(args: argparse.Namespace) -> int:
    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.onnx.export import OPSET, TOLERANCE, export_onnx

    model = from_pretrained(args.model, revision=args.revision, local_files_only=args.local_files_only, device="cpu")
    output = Path(args.output) if args.output else _default_output(model, args.model)
    report = export_onnx(model, output, opset=args.opset or OPSET, exporter=args.exporter)
    if not args.quiet:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
        print(f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, opset {report.opset}, {report.exporter} exporter)")
        print(f"  input 'volume' (batch, {', '.join(map(str, report.input_shape[1:]))}) -> outputs {', '.join(report.outputs)}")
        print(f"  ONNX Runtime ({report.provider}) vs PyTorch on batch {report.input_shape[0]}: max abs diff {diffs} "
              f"(limit {TOLERANCE:g}) ok")
    return EXIT_OK if report.ok else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
