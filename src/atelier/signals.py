"""Stopping a long command cleanly on Ctrl-C (SIGINT) or SIGTERM (what a scheduler or ``docker stop`` sends).

The split of work: a command-line entry point installs the handlers with :func:`stop_on_signals`; the
library function doing the long work only takes a ``should_stop`` callable (the :class:`StopRequest`
is one) and looks at it at clean boundaries (between training steps, optimisation iterations,
images, batches or metrics). Library code never installs handlers, so it behaves the same when
called from Python, a notebook, the service or the CLI.

The first signal only sets a flag. The handlers are taken down at once, so a second signal acts
immediately (Ctrl-C raises KeyboardInterrupt, SIGTERM terminates the process): a user who really
wants out is never kept waiting. Every file is written atomically (:mod:`atelier.io`), so even then
nothing already saved is half-written.

A function that can keep what it has done so far (a training checkpoint, the best style-transfer
image, the images already augmented) returns normally and says it was stopped; one whose partial
result would be meaningless (an evaluation) raises :class:`Stopped` from :func:`check_stop`.
This module sits in the bottom layer beside :mod:`atelier.io` so every layer can use it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: What long library functions accept: called at clean boundaries, True asks them to stop there.
ShouldStop = Callable[[], bool]


class Stopped(Exception):
    """A long computation stopped at a clean boundary because ``should_stop`` asked it to; nothing it
    would have written was written. ``where`` says how far it got, in words."""

    def __init__(self, where: str = "") -> None:
        super().__init__(f"stopped on request{f' ({where})' if where else ''}")
        self.where = where


def check_stop(should_stop: ShouldStop | None, where: str = "") -> None:
    """Raise :class:`Stopped` if ``should_stop`` (which may be None: never stop) says so."""
    if should_stop is not None and should_stop():
        raise Stopped(where)


class StopRequest:
    """Which signal asked the command to stop, if any (``signum`` is None until one does).

    Calling it answers "should I stop?", so it can be passed as a ``should_stop`` argument.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (0 if none came)."""
        return 128 + self.signum if self.signum is not None else 0


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set ``request.signum`` instead of interrupting; outside
    the main thread (where Python cannot install handlers) signals keep their usual effect."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum, frame) -> None:
        request.signum = signum
        for s in SIGNALS:  # a second signal acts at once
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


__all__ = ["SIGNALS", "ShouldStop", "StopRequest", "Stopped", "check_stop", "stop_on_signals"]
