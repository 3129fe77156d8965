"""The package's error types. Every message says what was wrong and, where it helps, what to do."""
from __future__ import annotations


class Age2HieError(Exception):
    """Base class for errors raised by age2hie-hub on bad input or unusable files."""


class VolumeReadError(Age2HieError, ValueError):
    """A volume could not be read: missing, unknown format, corrupt, or with unusable geometry."""


class VolumeWriteError(Age2HieError, OSError):
    """A volume could not be written."""


class DiffusionError(Age2HieError, ValueError):
    """A diffusion series cannot be turned into ADC (no b-values, no b~0 volume, ...)."""


class CheckpointError(Age2HieError, ValueError):
    """A checkpoint folder is missing files, has the wrong keys, or is in a refused format."""


class ModelNotFoundError(Age2HieError, LookupError):
    """A model name could not be resolved to a checkpoint."""
