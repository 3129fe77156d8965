"""Diffusion MRI: trace ADC from a DWI series, a foreground mask, ADC unit conversion."""
from __future__ import annotations

from age2hie_hub.dwi.adc import B0_THRESHOLD, compute_adc
from age2hie_hub.dwi.mask import brain_mask
from age2hie_hub.dwi.units import ADC_UNITS, adc_to_mm2s

__all__ = ["ADC_UNITS", "B0_THRESHOLD", "adc_to_mm2s", "brain_mask", "compute_adc"]
