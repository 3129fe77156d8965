"""Reading and writing volumes: NIfTI (nibabel), MetaImage/NRRD (SimpleITK), DICOM (dcm2niix)."""
from __future__ import annotations

from age2hie_hub.io.checks import DEFAULT_MAX_BYTES
from age2hie_hub.io.reader import read_volume
from age2hie_hub.io.volume import Volume
from age2hie_hub.io.writer import write_volume

__all__ = ["DEFAULT_MAX_BYTES", "Volume", "read_volume", "write_volume"]
