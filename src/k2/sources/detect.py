"""What a file holds, from its first line: ASX ticks by their column count (trades 7, quotes 6, no header),
generic ticks and reference data by their header. Runs before anything is sent, so a wrong guess costs nothing."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from k2.errors import InputError
from k2.sources.csv_ticks import ASX_QUOTE_COLUMNS, ASX_TRADE_COLUMNS, GENERIC_QUOTE_REQUIRED, GENERIC_REQUIRED
from k2.sources.lines import first_record

_REFERENCE_HEADERS = (
    {"company_id", "symbol", "company_name", "start_date"},
    {"company_id", "ex_date", "net_amount"},
    {"company_id", "effective_date", "ratio"},
    {"symbol", "name", "currency"},
)


@dataclass(frozen=True)
class Detected:
    path: Path
    dataset: str  # trades | quotes | reference
    layout: str | None  # asx | generic for ticks; reference files pick their own

    @property
    def description(self) -> str:
        if self.dataset == "reference":
            return "reference data"
        if self.layout == "asx":
            columns = len(ASX_TRADE_COLUMNS if self.dataset == "trades" else ASX_QUOTE_COLUMNS)
            return f"ASX {self.dataset} ({columns} columns, no header)"
        return f"generic {self.dataset} (header row)"


def _names(line: str) -> list[str]:
    return [c.strip().lower().replace(" ", "_") for c in next(csv.reader([line]), [])]


def detect(path: Path, dataset: str | None = None, layout: str | None = None) -> Detected:
    """The dataset and layout of `path` (either can be forced); InputError if the file cannot be read or told."""
    line = first_record(path)  # InputError for a missing, empty or directory path
    names = _names(line)
    if dataset == "reference" or (dataset is None and any(h <= set(names) for h in _REFERENCE_HEADERS)):
        return Detected(path, "reference", None)
    generic = {"trades": set(GENERIC_REQUIRED) <= set(names), "quotes": set(GENERIC_QUOTE_REQUIRED) <= set(names)}
    if dataset is None:
        dataset = next((d for d, found in generic.items() if found), None)
    if dataset is None and layout != "generic":
        dataset = {len(ASX_TRADE_COLUMNS): "trades", len(ASX_QUOTE_COLUMNS): "quotes"}.get(len(names))
    if dataset is None:
        raise InputError(
            f"{path}: cannot tell what this file holds from its first line ({len(names)} fields: {line[:80]!r}). "
            f"ASX trades have {len(ASX_TRADE_COLUMNS)} columns and ASX quotes {len(ASX_QUOTE_COLUMNS)}, without a "
            f"header; generic files have a header naming {','.join(GENERIC_REQUIRED)} (trades) or "
            f"{','.join(GENERIC_QUOTE_REQUIRED)} (quotes). Choose with --dataset and --layout"
        )
    return Detected(path, dataset, layout or ("generic" if generic.get(dataset) else "asx"))
