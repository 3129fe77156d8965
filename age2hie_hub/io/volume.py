"""The one value every reader returns and every writer takes."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D or 4D image in RAS world millimetres.

    data:     float32 array, shape (X, Y, Z) or (X, Y, Z, T); axis order is the file's voxel order.
    affine:   4x4 float64 matrix mapping voxel indices (i, j, k, 1) to RAS world mm (nibabel's convention).
    metadata: plain-data extras, e.g. ``source`` (path), ``bvals`` (list of float, s/mm^2),
              ``bvecs`` (list of [x, y, z], voxel-axis frame as in FSL), ``sidecar`` (BIDS JSON dict),
              ``units`` (e.g. "mm2/s" for ADC), ``modality``.
    """

    data: np.ndarray
    affine: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = np.asarray(self.data, dtype=np.float32)
        affine = np.asarray(self.affine, dtype=np.float64)
        if data.ndim not in (3, 4):
            raise ValueError(f"Volume data must be 3D or 4D, got shape {data.shape}")
        if affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got shape {affine.shape}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each voxel axis (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def n_volumes(self) -> int:
        return 1 if self.data.ndim == 3 else int(self.data.shape[3])

    @property
    def source(self) -> str | None:
        return self.metadata.get("source")

    def with_data(self, data: np.ndarray, **metadata: Any) -> "Volume":
        """Same grid, new voxels (and optionally updated metadata)."""
        return replace(self, data=data, metadata={**self.metadata, **metadata})
