"""Lazy package exports: a name is imported from its module on first use (PEP 562 module __getattr__).

Packages use it so that importing plain-data configs, or running a CLI's --help, never pulls in torch,
SimpleITK or scipy.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``; ``exports`` maps a public name to its module."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
