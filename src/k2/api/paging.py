"""Cursor pagination of ticks: a page token names the query it belongs to, the snapshot its first page read
(so that the pages of one listing are one consistent state), and the last row returned."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from k2.api.errors import ApiError
from k2.arrow_util import micros

_PREFIX = "k2p1."


@dataclass(frozen=True)
class PageToken:
    query: str  # a digest of the query's parameters
    snapshot_id: int | None
    ts: int
    symbol: str
    sequence: int

    def encode(self) -> str:
        raw = json.dumps([self.query, self.snapshot_id, self.ts, self.symbol, self.sequence], separators=(",", ":"))
        return _PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def decode(token: str, query: str) -> PageToken:
        try:
            if not token.startswith(_PREFIX):
                raise ValueError("no prefix")
            payload = token[len(_PREFIX):]
            values = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            parsed = PageToken(*_fields(values))
        except (ValueError, binascii.Error):
            raise ApiError(400, "bad_page_token", "page_token is not a token this API gave out: pass the "
                           "next_cursor of the previous page unchanged") from None
        if parsed.query != query:
            raise ApiError(400, "page_token_mismatch", "page_token belongs to another query: keep the same "
                           "symbols, start and end while paging, or start again without a token")
        return parsed


_MAX_TS_US = 8_000_000_000_000_000  # about the year 2223: past it a microsecond count is no time of any tick


def _fields(values: object) -> tuple[str, int | None, int, str, int]:
    """A token's five fields with their types checked: it comes back from the client, anything can be in it."""
    if not isinstance(values, list) or len(values) != 5:
        raise ValueError("not five fields")
    query, snapshot_id, ts, symbol, sequence = values
    ints = [v for v in (snapshot_id, ts, sequence) if v is not None]
    if not isinstance(query, str) or not isinstance(symbol, str) or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or ts is None or sequence is None:
        raise ValueError("fields of the wrong type")
    if not -_MAX_TS_US < ts < _MAX_TS_US or (snapshot_id is not None and snapshot_id < 0):
        raise ValueError("fields out of range")
    return query, snapshot_id, ts, symbol, sequence


def query_digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def after(rows: pa.Table, token: PageToken | None) -> pa.Table:
    """Rows strictly after the token's row, in (ts, symbol, sequence) order (rows start at or after its ts)."""
    if token is None or rows.num_rows == 0:
        return rows
    ts = micros(rows.column("ts"))
    same = int(np.searchsorted(ts, token.ts, "right"))  # rows [0, same) are at the token's ts
    if same == 0:
        return rows
    head = rows.slice(0, same)
    keys = list(zip(head.column("symbol").to_pylist(), head.column("sequence").to_pylist(), strict=True))
    skip = sum(1 for key in keys if key <= (token.symbol, token.sequence))
    return rows.slice(skip)


def next_token(page: pa.Table, query: str, snapshot_id: int | None) -> str:
    last = page.num_rows - 1
    return PageToken(query, snapshot_id, int(micros(page.column("ts"))[last]), page.column("symbol")[last].as_py(),
                     int(page.column("sequence")[last].as_py())).encode()
