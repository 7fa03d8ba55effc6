"""Waiting in the foreground for SIGINT or SIGTERM, safely.

A signal handler that calls ``threading.Event.set()`` can deadlock the process: the handler runs
in the main thread, and when it interrupts that thread while it holds the event's lock (entering
or leaving ``Event.wait``, or inside an earlier handler's ``set()`` when two signals come close
together) it waits for a lock its own thread holds. A simulated Fleet was left that way, hung
for good after its stack died. Here the handler only sets a flag; the main thread polls it.
"""

from __future__ import annotations

import signal
import time
from typing import Callable

POLL_SECONDS = 0.2


def wait_for_stop(also: Callable[[], bool] = lambda: False, signals=(signal.SIGINT, signal.SIGTERM)) -> int | None:
    """Block until one of ``signals`` arrives (its number is returned) or ``also()`` is true
    (None). The handlers installed here stay: the process is on its way out."""
    received: list[int] = []
    for signum in signals:
        signal.signal(signum, lambda signum, _frame: received.append(signum))  # list.append takes no lock
    while not received:
        if also():
            return None
        time.sleep(POLL_SECONDS)
    return received[0]
