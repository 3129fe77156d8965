"""Threads for the work on one scan.

Predicting one scan reads, checks and preprocesses it on one thread while the machine's other cores wait;
the batch path (`predict_many`) already keeps them busy with one scan per worker. So spreading one scan's
work is asked for per call: inside ``with scan_threads(n):`` the larger pieces of that scan's work (the input
QC beside the preprocessing, the slabs of a Gaussian) may use up to ``n`` threads. Work put beside the scan's
own work can wait for that work's :func:`cue` (its parallel part is over), so that the two do not compete for
the cores. Outside the block, and on the threads this module starts, the allowance is 1, so spreading never
nests and predict_many's workers never spread. The pieces are numpy array loops and BLAS products, which run
without the GIL.

No package imports: any layer may use it.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_ALLOWED: contextvars.ContextVar[int] = contextvars.ContextVar("age2hie_scan_threads", default=1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware: a container's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def allowed_threads() -> int:
    """Threads the current scan's work may use (1 unless inside :func:`scan_threads`)."""
    return _ALLOWED.get()


@contextlib.contextmanager
def scan_threads(n: int) -> Iterator[None]:
    """Let the work inside the block (on this thread) use up to ``n`` threads (at most the usable cores)."""
    token = _ALLOWED.set(max(1, min(int(n), usable_cores())))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there; the next use starts a pool of its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # One shared pool for the process: a few predict() calls at once queue on it instead of each
            # starting threads of its own.
            _pool = ThreadPoolExecutor(max_workers=max(1, usable_cores() - 1), thread_name_prefix="age2hie-scan")
        return _pool


class _Done:
    """A finished call's outcome, with Future's ``result()``."""

    def __init__(self, fn: Callable[..., T], args: tuple) -> None:
        try:
            self._value, self._error = fn(*args), None
        except BaseException as exc:  # handed back at result(), as a Future would
            self._value, self._error = None, exc

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class _Beside:
    """Work put beside the caller's: started on the pool now or at :func:`cue`; ``result()`` does it on the
    calling thread when no pool thread has started it (never cued, or queued behind other callers' work)."""

    def __init__(self, fn: Callable[..., T], args: tuple) -> None:
        self._fn, self._args = fn, args
        self._future: Future | None = None

    def start(self) -> None:
        if self._future is None:
            self._future = _executor().submit(self._fn, *self._args)

    def result(self) -> Any:
        _WAITING.set(tuple(w for w in _WAITING.get() if w is not self))
        if self._future is None or self._future.cancel():
            return _Done(self._fn, self._args).result()
        return self._future.result()


_WAITING: contextvars.ContextVar[tuple[_Beside, ...]] = contextvars.ContextVar("age2hie_scan_waiting", default=())


def beside(fn: Callable[..., T], *args: Any, at_cue: bool = False) -> _Beside | _Done:
    """Start ``fn(*args)`` on another thread when more than one is allowed, else run it now; ``.result()``
    gives its value or raises its error. Call ``result()`` before leaving: the call may still be running.

    ``at_cue``: start it only when the work on this thread calls :func:`cue`, i.e. once its own parts that
    spread over the threads are done, so that the two do not compete for the cores (or at ``result()``, on
    this thread, when nothing cued it)."""
    if allowed_threads() < 2:
        return _Done(fn, args)
    work = _Beside(fn, args)
    if at_cue:
        _WAITING.set(_WAITING.get() + (work,))
    else:
        work.start()
    return work


def cue() -> None:
    """Start the work put beside this thread's work with ``at_cue``: called where that work's own parallel
    part is over and what is left runs on one thread."""
    waiting = _WAITING.get()
    if waiting:
        _WAITING.set(())
        for work in waiting:
            work.start()


def run_all(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Call each task (no arguments) and return their values in order: the first on this thread, the others on
    the pool when more than one thread is allowed. An error is raised once none of the tasks is running: the
    first in order (on one thread, the tasks after a failing one are not started)."""
    if len(tasks) < 2 or allowed_threads() < 2:
        return [task() for task in tasks]
    others = [_executor().submit(task) for task in tasks[1:]]
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException | None] = [None] * len(tasks)
    for i, task in enumerate(tasks):
        # Task 0, then every task no pool thread has started (the pool may be busy with work put beside this):
        # this thread does it itself rather than wait.
        if i == 0 or others[i - 1].cancel():
            try:
                results[i] = task()
            except BaseException as exc:
                errors[i] = exc
    for i, future in enumerate(others, start=1):  # never leave a task running on data the caller reuses
        if not future.cancelled():
            errors[i] = future.exception()
            results[i] = None if errors[i] else future.result()
    first_error = next((e for e in errors if e is not None), None)
    if first_error is not None:
        raise first_error
    return results


def split(n: int, parts: int, least: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges cutting ``range(n)`` into at most ``parts`` near-equal pieces of at least
    ``least`` items each (one piece when ``n`` is small)."""
    parts = max(1, min(parts, n // max(1, least)))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]
