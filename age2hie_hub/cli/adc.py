"""``age2hie-adc INPUT -o adc.nii.gz``: trace ADC (mm^2/s) from a DWI series, on the scan's own grid."""
from __future__ import annotations

import argparse
import json
import sys

from age2hie_hub.cli._common import EXIT_OK, EXIT_USAGE, add_verbosity, run_main, setup_logging

PROG = "age2hie-adc"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Compute a trace ADC map in mm^2/s from a diffusion series: mean of the b~0 volumes "
                    "(b <= 50 s/mm^2), geometric mean over directions per shell, log-linear fit over shells. "
                    "Voxels without usable signal are 0.",
    )
    p.add_argument("input", help="DICOM folder or .zip of one, or a 4D NIfTI/MetaImage/NRRD series "
                                 "(NIfTI: .bval beside it, or --bvals)")
    p.add_argument("-o", "--output", required=True,
                   help="output file: .nii.gz, .nii, .mha, .mhd or .nrrd (written atomically)")
    p.add_argument("--bvals", metavar="FILE", help="FSL .bval file (overrides one found beside INPUT)")
    p.add_argument("--mask", action="store_true", help="set voxels outside an automatic foreground mask to 0")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_verbosity(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from age2hie_hub.dwi import brain_mask, compute_adc
    from age2hie_hub.errors import DiffusionError, VolumeWriteError
    from age2hie_hub.io import read_volume, write_volume
    from age2hie_hub.io.sidecars import read_bvals
    from age2hie_hub.io.writer import output_suffix

    out = Path(args.output)
    output_suffix(out)  # fail on a bad output name before any work
    if out.exists() and not args.force:
        raise VolumeWriteError(f"{out}: already exists; pass --force to overwrite")
    if not out.parent.is_dir():
        raise VolumeWriteError(f"{out}: output folder {out.parent} does not exist")
    volume = read_volume(args.input)
    if volume.data.ndim != 4:
        raise DiffusionError(f"{args.input}: is a 3D image of shape {volume.shape}; ADC needs a 4D diffusion "
                             "series (b~0 and diffusion-weighted volumes)")
    bvals = read_bvals(Path(args.bvals), volume.n_volumes) if args.bvals else None
    adc = compute_adc(volume, bvals=bvals)
    if args.mask:
        mask = brain_mask(volume)
        adc = adc.with_data(np.where(mask, adc.data, 0).astype(np.float32))
    write_volume(adc, out)
    shown = adc.data[adc.data > 0]
    summary = {
        "input": str(args.input), "output": str(out), "shape": list(adc.shape),
        "spacing_mm": [round(s, 4) for s in adc.spacing], "units": "mm2/s",
        "median_adc": float(np.median(shown)) if shown.size else 0.0, **adc.metadata["adc_method"],
        "warnings": adc.metadata.get("warnings", []),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {out}: {'x'.join(map(str, adc.shape))} ADC in mm^2/s, "
              f"median of non-zero voxels {summary['median_adc']:.3g}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code) if exc.code is not None else EXIT_USAGE
    setup_logging(args.verbose, args.quiet)
    return run_main(_body, args, PROG)


if __name__ == "__main__":
    sys.exit(main())
