"""The example scan shipped inside the package (synthetic; see age2hie_hub/data/examples/README.md)."""
from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples"
EXAMPLE_ADC = "synthetic_neonatal_adc.nii.gz"


def example_scan() -> Path:
    """Path of the bundled SYNTHETIC neonatal ADC map (1e-6 mm^2/s, NIfTI), for demos and smoke tests."""
    path = EXAMPLES / EXAMPLE_ADC
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the example scan is missing from this installation; reinstall age2hie-hub")
    return path
