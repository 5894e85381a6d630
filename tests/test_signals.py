"""The signal helper every long command uses (``atelier.signals``): the CLI installs handlers, library
functions take a ``should_stop`` callable. The training loop's use of it is tested in tests/train."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from atelier.signals import StopRequest, Stopped, check_stop, stop_on_signals


def test_a_stop_request_is_a_should_stop_callable_with_the_shells_exit_code() -> None:
    stop = StopRequest()
    assert not stop() and not stop.requested and stop.name is None and stop.exit_code == 0
    check_stop(stop, "anywhere")  # nothing asked: nothing happens
    check_stop(None)
    stop.signum = signal.SIGINT
    assert stop() and stop.name == "SIGINT" and stop.exit_code == 130
    with pytest.raises(Stopped, match="after features") as info:
        check_stop(stop, "after features")
    assert info.value.where == "after features"


def test_sigint_and_sigterm_set_the_flag_once_then_act_at_once() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop() and stop.name == "SIGINT" and stop.exit_code == 130
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler  # a second Ctrl-C interrupts
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_signals_keep_their_effect() -> None:
    seen = {}

    def run() -> None:
        with stop_on_signals() as stop:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["stop"] = stop()

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == {"handler": before, "stop": False}
