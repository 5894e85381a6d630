"""Stopping a long run cleanly on Ctrl-C (SIGINT) or SIGTERM (what a scheduler or ``docker stop`` sends).

The first signal only sets a flag; the training loop looks at it between steps, so the checkpoint it
then writes is at a step boundary and ``--resume`` continues bit-identically. The handlers are taken
down at once, so a second signal acts immediately (Ctrl-C raises KeyboardInterrupt, SIGTERM
terminates the process): a user who really wants out is never kept waiting. Writes are atomic, so even
then nothing already saved is lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Which signal asked the run to stop, if any (``signum`` is None until one does)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (self.signum or 0)


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
