"""Synthetic cohorts with documented ground truth (docs/synthetic_data.md): lifespan T1 volumes for brain age
in a BIDS layout and neonatal HIE ADC cases in the BONBID-HIE layout. Everything here is SYNTHETIC DATA.

Heavy modules (torch, the template) load on first use, so importing this package is cheap.
"""
from __future__ import annotations

from age2hie_hub._lazy import lazy_getattr

_LAZY = {
    "make_brain_age_cohort": "age2hie_hub.synth.cohort",
    "make_hie_cohort": "age2hie_hub.synth.cohort",
    "Cohort": "age2hie_hub.synth.cohort",
    "synth_t1": "age2hie_hub.synth.t1",
    "synth_hie_case": "age2hie_hub.synth.hie",
    "make_montage": "age2hie_hub.synth.montage",
    "T1Site": "age2hie_hub.synth.sites",
    "HIESite": "age2hie_hub.synth.sites",
    "T1_SITES": "age2hie_hub.synth.sites",
    "HIE_SITES": "age2hie_hub.synth.sites",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
