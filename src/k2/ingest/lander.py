"""A single background thread that runs prepared batches through one function, strictly in submission order.

The consumer prepares batch N+1 (consume, decode, validate, sequence checks) while this thread writes and commits
batch N to Iceberg, so the two halves of ingestion overlap. At most one batch waits while one is in progress
(bounded memory, back-pressure on the consumer). The first failure stops all further work and is re-raised to
the submitting thread on its next call: a batch after a failed one is never committed out of order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Work = TypeVar("Work")

_STOP = object()


class Lander(Generic[Work]):
    def __init__(self, land: Callable[[Work], None], name: str = "k2-lander") -> None:
        self._land = land
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    self._land(item)  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the submitting thread, which decides
                self._error = exc
            finally:
                self._queue.task_done()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, work: Work) -> None:
        """Queue `work`; blocks while the previous batch still waits."""
        self.raise_if_failed()
        self._queue.put(work)

    def drain(self) -> None:
        """Wait until everything submitted so far is done (or failed: then raise)."""
        self._queue.join()
        self.raise_if_failed()

    def close(self) -> None:
        """Finish the batch in progress and whatever waits, then stop the thread. Never raises."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
