"""Ctrl-C during a sweep: stop at the next chunk boundary, with the folder resumable.

The first SIGINT sets a flag that each (arm, seed) reads after its chunk is trained and
checkpointed; the sweep then raises :class:`Interrupted` (a ``KeyboardInterrupt``). A
second SIGINT interrupts at once, as Python does by default.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


class Interrupted(KeyboardInterrupt):
    """A sweep stopped at a chunk boundary on request; started again, it resumes."""


@contextlib.contextmanager
def stop_on_sigint(log: Callable[[str], None], stop: threading.Event) -> Iterator[None]:
    """While inside, the first SIGINT sets ``stop`` (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log("interrupted: stopping after the current chunk, with its checkpoint written "
            "(Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
