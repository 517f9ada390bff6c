"""Ctrl-C that cannot tear what is being written.

A second Ctrl-C soon after the first could land inside the export of model.onnx and leave
the run without one (docs/performance.md). While a run writes its checkpoint or model,
SIGINT is only noted; it is acted on once the write is complete.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_held: list[int] = []
"""Signals that arrived while a deferral was active; only the outermost acts on them."""
_depth = 0


@contextmanager
def deferred(raise_after: bool = True) -> Iterator[None]:
    """Hold SIGINT for the duration of the block; raise KeyboardInterrupt after it when one
    arrived (and `raise_after`), so an interrupted write always finishes first. Nested
    blocks leave the decision to the outermost one."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: FrameType | None) -> None:
        _held.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if _depth == 0:
        arrived = bool(_held)
        _held.clear()
        if arrived and raise_after:
            raise KeyboardInterrupt
