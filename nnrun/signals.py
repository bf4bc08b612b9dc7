"""Stopping cleanly on signals: SIGINT, SIGTERM and SIGHUP all end work the same way.

Inside `stop_on_signals()` each of the three raises `Interrupted` in the main thread (a
`KeyboardInterrupt`, so Ctrl-C and a scheduler's SIGTERM take one path). Only the first signal
raises: later ones are recorded and the work that is saving state finishes undisturbed. Inside
`shielded()` no signal raises; one that arrives is raised when the block ends (so an epoch's
checkpoint is never half written), unless the caller is already stopping. Once the work has
`settle()`d (a run completed and wrote its summary), a signal deferred until then, or arriving later,
is recorded and raises nothing: the process reports the completed work and exits 0, so its exit code
never contradicts the summary it wrote.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
"""The signals that stop a run and save its state."""


class Interrupted(KeyboardInterrupt):
    """Work was stopped by a signal; `signal_name` says which (SIGINT for Ctrl-C)."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class _State:
    """What the handler needs to know: whether a signal was raised already, whether raising is deferred,
    and whether repeated signals are announced (worker processes stay quiet: their sweep speaks)."""

    def __init__(self) -> None:
        self.raised: str | None = None
        self.pending: str | None = None
        self.shield_depth = 0
        self.quiet = False
        self.settled = False


_state = _State()


def handle(signum: int, frame: object) -> None:
    """The stop-signal handler: raise `Interrupted` once, defer inside `shielded()`, record the rest."""
    name = signal.Signals(signum).name
    if _state.raised is not None:
        if not _state.quiet:
            sys.stderr.write(f"\nnnrun: {name} received; still saving state, stopping when that is done\n")
        return
    if _state.shield_depth or _state.settled:
        _state.pending = _state.pending or name
        return
    _state.raised = name
    raise Interrupted(name)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Make SIGINT, SIGTERM and SIGHUP raise `Interrupted` while the block runs (main thread only).

    After a stop the three stay ignored: the process is exiting, and a late repeat must not kill it
    by signal or print a traceback on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    ignored = {s for s, handler in previous.items() if handler is signal.SIG_IGN}
    _state.raised = _state.pending = None
    _state.settled = False
    for s in STOP_SIGNALS:
        if s not in ignored:  # a process started with a signal ignored (nohup) keeps ignoring it
            signal.signal(s, handle)
    try:
        yield
    finally:
        stopped = _state.raised is not None or _state.pending is not None
        for s, handler in previous.items():
            # Once stopped, the process is on its way out with exit code 1: a late repeat of the signal
            # must not turn that into a traceback or a death by signal.
            signal.signal(s, signal.SIG_IGN if stopped and s not in ignored else handler)
        _state.raised = _state.pending = None
        _state.settled = False


@contextmanager
def shielded() -> Iterator[None]:
    """Defer stop signals while the block runs; raise the first one that arrived when it ends.

    When the process is already stopping (a signal was raised before), nothing is raised again.
    """
    _state.shield_depth += 1
    try:
        yield
    finally:
        _state.shield_depth -= 1
    if _state.shield_depth == 0 and _state.pending is not None and _state.raised is None and not _state.settled:
        name, _state.pending = _state.pending, None
        _state.raised = name
        raise Interrupted(name)


def settle(done: bool = True) -> None:
    """The work is done and its result saved: from now on stop signals (and one deferred by the enclosing
    `shielded()` block) are recorded, never raised, until `stop_on_signals()` ends, `reset()` is called or
    new work starts (`settle(False)`)."""
    _state.settled = done


def stopping() -> str | None:
    """The name of the signal that stopped the work, or None."""
    return _state.raised


def reset(quiet: bool = False) -> None:
    """Forget earlier signals (a worker process starting its next run); `quiet` silences repeat notices."""
    _state.raised = _state.pending = None
    _state.quiet = quiet
    _state.settled = False
