"""Synthetic cohorts with documented ground truth (docs/synthetic_data.md): lifespan T1 volumes for brain age
in a BIDS layout and neonatal HIE ADC cases in the BONBID-HIE layout. Everything here is SYNTHETIC DATA.

Heavy modules (torch, the template) load on first use, so importing this package is cheap.
"""
from __future__ import annotations

import warnings
from typing import Any

from age2hie_hub._lazy import lazy_getattr

_LAZY = {
    "make_brain_age_cohort": "age2hie_hub.synth.cohort",
    "make_hie_cohort": "age2hie_hub.synth.cohort",
    "SyntheticCohort": "age2hie_hub.synth.cohort",
    "synth_t1": "age2hie_hub.synth.t1",
    "synth_hie_case": "age2hie_hub.synth.hie",
    "make_montage": "age2hie_hub.synth.montage",
    "T1Site": "age2hie_hub.synth.sites",
    "HIESite": "age2hie_hub.synth.sites",
    "T1_SITES": "age2hie_hub.synth.sites",
    "HIE_SITES": "age2hie_hub.synth.sites",
}

__all__ = list(_LAZY)

_lazy = lazy_getattr(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    """The lazy exports, and ``Cohort``, SyntheticCohort's former name (with a DeprecationWarning)."""
    if name == "Cohort":
        warnings.warn("age2hie_hub.synth.Cohort is now SyntheticCohort (age2hie_hub.train.manifest.Cohort is the "
                      "unrelated cohort a training run reads); the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return _lazy("SyntheticCohort")
    return _lazy(name)
