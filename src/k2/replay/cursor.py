"""Where a replay stands: what it replays (pinned to snapshots) and the last event it emitted, as one token.

`k2r1.<base64url JSON>`: a token is everything needed to resume exactly after the event it names, against the
same snapshots, so a resumed replay loses and repeats nothing even after new data lands or compaction runs.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass, field, replace

from k2.errors import QueryError
from k2.schemas import Dataset

_PREFIX = "k2r1."


@dataclass(frozen=True)
class Position:
    """One event's order key (see replay/order.py)."""

    ts: int  # µs since the epoch
    sequence: int
    rank: int
    exchange: str
    symbol: str

    def as_list(self) -> list[object]:
        return [self.ts, self.sequence, self.rank, self.exchange, self.symbol]


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay, pinned: `snapshots` holds the snapshot each dataset is read at (filled in at start)."""

    datasets: tuple[Dataset, ...] = (Dataset.TRADES, Dataset.QUOTES)
    symbols: tuple[str, ...] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    snapshots: dict[Dataset, int | None] = field(default_factory=dict)
    adjust: str = "none"

    def pinned(self, snapshots: dict[Dataset, int | None]) -> ReplayRequest:
        return replace(self, snapshots=dict(snapshots))


@dataclass(frozen=True)
class Cursor:
    request: ReplayRequest
    after: Position | None = None  # the last event emitted (None: nothing yet)

    def token(self) -> str:
        request = self.request
        body = {
            "d": [d.value for d in request.datasets],
            "s": list(request.symbols) if request.symbols is not None else None,
            "a": request.start.isoformat() if request.start else None,
            "b": request.end.isoformat() if request.end else None,
            "p": {d.value: snapshot for d, snapshot in request.snapshots.items()},
            "j": request.adjust,
            "k": self.after.as_list() if self.after else None,
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def parse(token: str) -> Cursor:
        text = token.strip()
        if not text.startswith(_PREFIX):
            raise QueryError(f"{token[:40]!r} is not a replay cursor (they start with {_PREFIX!r})")
        try:
            payload = text[len(_PREFIX):]
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            request = ReplayRequest(
                datasets=tuple(Dataset(d) for d in body["d"]),
                symbols=tuple(body["s"]) if body["s"] is not None else None,
                start=dt.datetime.fromisoformat(body["a"]) if body["a"] else None,
                end=dt.datetime.fromisoformat(body["b"]) if body["b"] else None,
                snapshots={Dataset(d): s for d, s in body["p"].items()},
                adjust=body["j"],
            )
            key = body["k"]
            after = Position(int(key[0]), int(key[1]), int(key[2]), str(key[3]), str(key[4])) if key else None
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error) as exc:
            raise QueryError(f"the replay cursor is damaged ({exc}); copy it whole from the replay's output") from None
        return Cursor(request, after)
