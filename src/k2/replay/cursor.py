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
from k2.query.adjust import Adjust
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
            request, after = _fields(body)
        except (ValueError, binascii.Error) as exc:
            raise QueryError(f"the replay cursor is damaged ({exc}); copy it whole from the replay's output") from None
        return Cursor(request, after)


def _fields(body: object) -> tuple[ReplayRequest, Position | None]:
    """A token's fields with their types checked: a cursor comes back from a client, and anything can be in it."""
    if not isinstance(body, dict) or set(body) != {"d", "s", "a", "b", "p", "j", "k"}:
        raise ValueError("not a cursor's fields")
    symbols, snapshots, key = body["s"], body["p"], body["k"]
    if not isinstance(body["d"], list) or not (symbols is None or _all(symbols, str)) or \
            not isinstance(snapshots, dict) or not all(s is None or _all([s], int) for s in snapshots.values()) or \
            body["j"] not in {a.value for a in Adjust} or \
            not (key is None or (_all(key, object) and len(key) == 5 and _all(key[:3], int) and _all(key[3:], str))):
        raise ValueError("fields of the wrong type")
    request = ReplayRequest(
        datasets=tuple(Dataset(d) for d in body["d"]),
        symbols=tuple(symbols) if symbols is not None else None,
        start=_moment(body["a"]),
        end=_moment(body["b"]),
        snapshots={Dataset(d): s for d, s in snapshots.items()},
        adjust=body["j"],
    )
    return request, Position(*key) if key else None


def _all(values: object, kind: type) -> bool:
    return isinstance(values, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in values)


def _moment(text: object) -> dt.datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("a time that is not text")
    return dt.datetime.fromisoformat(text)
