"""A thread that runs for the length of a ``with`` block (a load to apply, a meter to read).

Usage:
    >>> class Meter(Background):
    ...     def _run(self) -> None:
    ...         while not self._stop.wait(0.1):
    ...             ...
    >>> with Meter("meter"):
    ...     work()
"""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Starts ``_run`` in a daemon thread on entry; on exit sets ``_stop`` and joins the thread."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError
