"""How a run stops early: Ctrl-C (SIGINT) from a user, SIGTERM from a scheduler (Slurm at a time limit
or on preemption, Kubernetes on eviction, `kill`), both followed by SIGKILL if the process lingers.

Either signal sets the run's stop event: the running trial ends before its next training step (a
step's time, not an epoch's), is failed with what it trained recorded, and is queued again at once
with its parameters by the worker that ran it (`sweep.run.worker`). A second Ctrl-C is a user who
will not wait: an immediate KeyboardInterrupt. SIGTERM never escalates that way, because a scheduler
may send it to every process of a job and a parent passes it on as well (its SIGKILL is what follows).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

# The convention for a process that ended on a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Stopped(KeyboardInterrupt):
    """A run stopped on a signal; its running trials are failed and queued again (their numbers)."""

    def __init__(self, signum: int, requeued: list[int]) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.requeued = signum, requeued

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Signals:
    """Our handler of SIGINT and SIGTERM: sets ``stop`` and remembers the first signal; ``forward``
    hears each SIGTERM (a parent passes it on to its worker processes)."""

    def __init__(self, stop: threading.Event, forward: Callable[[int], None] | None) -> None:
        self.stop, self.forward = stop, forward
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.stop.is_set() and self.signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # the second Ctrl-C
        if self.signum is None:
            self.signum = signum
        self.stop.set()
        if signum == signal.SIGTERM and self.forward is not None:
            self.forward(signum)

    def stopped(self, requeued: list[int]) -> Stopped:
        return Stopped(self.signum or signal.SIGINT, requeued)  # a stop set by the caller reads as a Ctrl-C


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, forward: Callable[[int], None] | None = None) -> Iterator[Signals]:
    """SIGINT and SIGTERM set ``stop`` while inside; the previous handlers are restored at the end.

    Raising from the handler instead could land inside library callbacks that swallow it. Nested, the
    outer handler stays (a parent's, which forwards SIGTERM) and is the one yielded. Off the main
    thread, where Python cannot install handlers, a handler that no signal reaches is yielded."""
    current = signal.getsignal(signal.SIGTERM)
    if isinstance(current, Signals) and current.stop is stop:
        yield current
        return
    handler = Signals(stop, forward)
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield handler
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
