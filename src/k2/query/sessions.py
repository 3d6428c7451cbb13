"""Session dates: the trading day a tick belongs to, in its exchange's own time zone.

An ASX trade at 07:57 Sydney time (20:57 UTC the evening before) belongs to today's session, not to the previous
UTC day. The zone comes from the instrument's reference data (`timezone`, schema v2); an instrument without one
takes its exchange's zone from the same data, then a built-in table of well-known exchanges, else UTC (the
summary names the zone it used). Dates are computed by Arrow's time zone database over whole arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from k2.arrow_util import numpy_of

KNOWN_EXCHANGE_TIMEZONES = {
    "ASX": "Australia/Sydney", "XASX": "Australia/Sydney", "CHIA": "Australia/Sydney",
    "NYSE": "America/New_York", "XNYS": "America/New_York", "NASDAQ": "America/New_York", "XNAS": "America/New_York",
    "LSE": "Europe/London", "XLON": "Europe/London", "TSE": "Asia/Tokyo", "XTKS": "Asia/Tokyo",
    "HKEX": "Asia/Hong_Kong", "XHKG": "Asia/Hong_Kong", "SGX": "Asia/Singapore", "XSES": "Asia/Singapore",
    "NZX": "Pacific/Auckland", "XNZE": "Pacific/Auckland", "K2X": "America/New_York",
}
DEFAULT_TIMEZONE = "UTC"


class Zones:
    """Time zone per (exchange, symbol), from reference rows (the newest valid_from wins)."""

    def __init__(self, reference: pa.Table) -> None:
        self._by_symbol: dict[tuple[str, str], str] = {}
        self._by_exchange: dict[str, str] = {}
        if "timezone" in reference.column_names and reference.num_rows:
            rows = reference.select(["exchange", "symbol", "valid_from", "timezone"]).sort_by("valid_from")
            for exchange, symbol, zone in zip(rows["exchange"].to_pylist(), rows["symbol"].to_pylist(),
                                              rows["timezone"].to_pylist(), strict=True):
                if zone:
                    self._by_symbol[(exchange, symbol)] = zone
                    self._by_exchange[exchange] = zone

    def zone(self, exchange: str, symbol: str) -> str:
        return (self._by_symbol.get((exchange, symbol)) or self._by_exchange.get(exchange)
                or KNOWN_EXCHANGE_TIMEZONES.get(exchange.upper(), DEFAULT_TIMEZONE))

    def of(self, exchanges: npt.NDArray[np.object_], symbols: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
        pairs = {(e, s): self.zone(e, s) for e, s in set(zip(exchanges.tolist(), symbols.tolist(), strict=True))}
        return np.array([pairs[(e, s)] for e, s in zip(exchanges.tolist(), symbols.tolist(), strict=True)], object)


def session_days(micros: npt.NDArray[np.int64], zones: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
    """Local calendar day (days since 1970-01-01) of each UTC instant in its zone: one Arrow pass per zone."""
    days = np.empty(len(micros), np.int64)
    for zone in set(zones.tolist()):
        mask = zones == zone
        instants = pa.array(micros[mask], pa.int64()).cast(pa.timestamp("us", tz=zone))
        local = numpy_of(pc.local_timestamp(instants).cast(pa.int64()))
        days[mask] = np.floor_divide(local, 86_400_000_000)
    return days
