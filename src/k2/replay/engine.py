"""`Replay`: one merged, ordered, paced, resumable stream of trades and quotes, pinned to Iceberg snapshots.

    replay = Replay(settings, ReplayRequest(symbols=("BHP",), start=..., end=...), speed=10)
    for batch in replay.batches():      # Arrow record batches (replay/order.py: SCHEMA), in event order
        ...
    replay.cursor.token()               # resume later: Replay(settings, cursor=token)

`events()` yields one dict per event instead (for callbacks; slower). The cursor always names the last event
handed out (the last row of the last batch, or the last event), so a replay resumed from it loses and repeats
nothing. `pause()`, `resume()` and `stop()` may be called from another thread.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from k2.errors import QueryError
from k2.obs.metrics import REPLAY_EVENTS
from k2.query.adjust import Adjust
from k2.query.engine import QueryEngine
from k2.replay.cursor import Cursor, Position, ReplayRequest
from k2.replay.order import DATASET_COLUMNS, SCHEMA
from k2.replay.pacing import Pacer, PacingStats
from k2.replay.source import MergedSource
from k2.schemas import Dataset
from k2.settings import Settings

__all__ = ["Cursor", "Replay", "ReplayRequest"]

REPLAYABLE = (Dataset.TRADES, Dataset.QUOTES)


class Replay:
    def __init__(
        self, settings: Settings, request: ReplayRequest | None = None, cursor: Cursor | str | None = None,
        speed: float | None = None, skip_gaps: dt.timedelta | None = None, as_of: dt.datetime | None = None,
        engine: QueryEngine | None = None, batch_rows: int = 65_536, limit: int | None = None,
    ) -> None:
        if cursor is not None and request is not None:
            raise QueryError("give a request or a cursor to resume from, not both")
        start = Cursor.parse(cursor) if isinstance(cursor, str) else cursor
        request = start.request if start is not None else (request or ReplayRequest())
        unknown = [d.value for d in request.datasets if d not in REPLAYABLE]
        if unknown or not request.datasets:
            raise QueryError(f"replay covers trades and quotes, not {', '.join(unknown) or 'nothing'}")
        self._engine = engine or QueryEngine(settings.model_copy(update={"query_cache_mb": 0}))
        self._request = self._pinned(request, as_of)
        self._after = start.after if start is not None else None
        self._adjust = Adjust(self._request.adjust)
        self._source = MergedSource(self._engine.planner, self._request, batch_rows, settings.replay_memory_mb)
        self._paced = "no" if speed is None else "yes"
        self._pacer = Pacer(speed, int(skip_gaps.total_seconds() * 1e6) if skip_gaps else None)
        self._running = threading.Event()
        self._running.set()
        self._stopped = False
        self._limit = limit  # at most this many events, then the replay stops (the cursor resumes after them)
        self.events_out = 0
        self.started = time.monotonic()

    def _pinned(self, request: ReplayRequest, as_of: dt.datetime | None) -> ReplayRequest:
        """Every dataset's snapshot fixed now (the current one, the one named, or the newest at `as_of`)."""
        pinned: dict[Dataset, int | None] = {}
        for dataset in request.datasets:
            snapshot = request.snapshots.get(dataset)
            plan = self._engine.planner.plan(dataset, [], None, None, snapshot_id=snapshot,
                                             as_of=as_of if snapshot is None else None)
            pinned[dataset] = plan.snapshot_id
        return request.pinned(pinned)

    @property
    def request(self) -> ReplayRequest:
        return self._request

    @property
    def cursor(self) -> Cursor:
        return Cursor(self._request, self._after)

    @property
    def pacing(self) -> PacingStats:
        return self._pacer.stats

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stopped = True
        self._running.set()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The stream in Arrow batches; the cursor moves past each batch as it is handed out."""
        try:
            for batch in self._source.batches(self._after):
                adjusted = self._adjusted(batch)
                for paced in self._pacer.paced(adjusted, lambda: not self._stopped):
                    self._wait_while_paused()
                    if self._stopped:
                        return
                    piece = self._within_limit(paced)
                    self._after = _position(piece, piece.num_rows - 1)
                    self.events_out += piece.num_rows
                    REPLAY_EVENTS.labels(self._paced).inc(piece.num_rows)
                    yield piece
                    if self._limit is not None and self.events_out >= self._limit:
                        self._stopped = True
                if self._stopped:
                    return
        finally:
            self._source.close()

    def run(self, on_event: Callable[[dict[str, object]], object] | None = None,
            on_batch: Callable[[pa.RecordBatch], object] | None = None) -> int:
        """Drive the replay into a callback (per event, or per Arrow batch: faster); returns the events handed
        out. A callback may call `pause()`, `stop()`, or read `cursor` at any time."""
        if (on_event is None) == (on_batch is None):
            raise QueryError("give one callback: on_event or on_batch")
        if on_batch is not None:
            for batch in self.batches():
                on_batch(batch)
        else:
            assert on_event is not None
            for event in self.events():
                on_event(event)
        return self.events_out

    def _within_limit(self, piece: pa.RecordBatch) -> pa.RecordBatch:
        if self._limit is None or self.events_out + piece.num_rows <= self._limit:
            return piece
        return piece.slice(0, self._limit - self.events_out)

    def events(self) -> Iterator[dict[str, object]]:
        """One event at a time (the columns of its dataset only); the cursor moves past each as it is handed out."""
        for batch in self.batches():
            rows = batch.to_pylist()
            micros = batch.column("ts").cast(pa.int64()).to_pylist()
            self.events_out -= len(rows)  # batches() counted the batch: count (and move the cursor) per event
            for row, ts in zip(rows, micros, strict=True):
                self._after = Position(ts, row["sequence"], row["rank"], row["exchange"], row["symbol"])  # type: ignore[arg-type]
                self.events_out += 1
                yield _trimmed(row)
                if self._stopped:
                    return

    def _wait_while_paused(self) -> None:
        if self._running.is_set():
            return
        paused = time.monotonic()
        self._running.wait()
        self._pacer.hold(time.monotonic() - paused)

    def _adjusted(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._adjust is Adjust.NONE:
            return batch
        table = self._engine.adjusted(
            pa.Table.from_batches([batch]), self._adjust, "ts", step_us=1,
            price_columns=("price", "bid_price", "ask_price"), volume_columns=("size", "bid_size", "ask_size"),
        )
        return table.cast(SCHEMA).combine_chunks().to_batches()[0]


def _position(batch: pa.RecordBatch, row: int) -> Position:
    ts = batch.column("ts").cast(pa.int64())[row].as_py()
    return Position(ts, batch.column("sequence")[row].as_py(), batch.column("rank")[row].as_py(),
                    batch.column("exchange")[row].as_py(), batch.column("symbol")[row].as_py())


_DROPPED = {
    "trade": {"rank", *DATASET_COLUMNS[Dataset.QUOTES]},
    "quote": {"rank", *DATASET_COLUMNS[Dataset.TRADES]},
}


def _trimmed(row: dict[str, object]) -> dict[str, object]:
    dropped = _DROPPED[str(row["kind"])]
    return {k: v for k, v in row.items() if k not in dropped}
