"""Helpers shared by the frozen, JSON-serialisable config dataclasses."""
from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and dicts -> JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def check_keys(cls: type, data: dict[str, Any]) -> None:
    """Refuse unknown keys loudly: a typo in a config must not be silently ignored.

    The old names of renamed fields (:func:`renamed_fields`) pass; the class's constructor translates them."""
    known = {f.name for f in dataclasses.fields(cls)} | set(renamed_keys(cls))
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")


# ---- renamed fields ---------------------------------------------------------------------------------------

def renamed_keys(cls: type) -> Mapping[str, str]:
    """``{old name: new name}`` of the fields of ``cls`` that were renamed (empty for most classes)."""
    return getattr(cls, "__renamed_fields__", {})


def renamed_fields(**renames: str) -> Callable[[type[T]], type[T]]:
    """Class decorator for a config dataclass whose fields were renamed: ``@renamed_fields(old="new")``.

    The old names keep working, with a DeprecationWarning naming the new one: as keyword arguments of the
    constructor, in dicts read by :func:`check_keys`, and in files and ``--set`` overrides read by
    ``age2hie_hub.train.config``. Giving both names is an error. Renaming another field is one more keyword.
    """

    def decorate(cls: type[T]) -> type[T]:
        fields = {f.name for f in dataclasses.fields(cls)}
        wrong = {old: new for old, new in renames.items() if old in fields or new not in fields}
        if wrong:
            raise TypeError(f"{cls.__name__}: renamed_fields needs old names that are not fields and new names "
                            f"that are, got {wrong}")
        cls.__renamed_fields__ = {**renamed_keys(cls), **renames}
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **with_current_keys(cls, kwargs, cls.__name__, stacklevel=2))

        cls.__init__ = __init__
        return cls

    return decorate


def with_current_keys(cls: type, data: Mapping[str, Any], where: str, *, stacklevel: int = 2) -> dict[str, Any]:
    """``data`` with the old names of renamed fields of ``cls`` replaced by the current ones.

    Each old name found gives a DeprecationWarning (``stacklevel`` counts from the caller of this function);
    an old name given together with its new one is a ValueError naming ``where`` (a file, a section, a class),
    since it is unclear which value is meant.
    """
    out = dict(data)
    for old, new in renamed_keys(cls).items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{where}: both {old!r} and {new!r} are given; {old!r} is the former name of {new!r}, "
                             f"give only {new!r}")
        warnings.warn(f"{where}: {old!r} is now {new!r}; the old name still works but will be removed",
                      DeprecationWarning, stacklevel=stacklevel + 1)
        out[new] = out.pop(old)
    return out
