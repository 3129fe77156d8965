"""Reading and writing volumes: NIfTI (nibabel), MetaImage/NRRD (SimpleITK), DICOM (dcm2niix)."""
from __future__ import annotations

from age2hie_hub.io.volume import Volume

__all__ = ["Volume"]
