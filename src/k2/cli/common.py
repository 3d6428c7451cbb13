"""What every command shares: the --home option, settings, and parsing of times, symbols and datasets."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

import typer

from k2.cli.output import OutputFormat
from k2.settings import Settings

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="K2 data directory (env K2_HOME, default ./.k2).", show_default=False)
]
SymbolOption = Annotated[str | None, typer.Option("--symbol", "-s", help="Symbol(s), comma-separated.")]
StartOption = Annotated[str | None, typer.Option(help="From (inclusive): ISO date/time (no zone = UTC) or -15m.")]
EndOption = Annotated[str | None, typer.Option(help="To (exclusive): ISO date/time (no zone = UTC), -15m or now.")]
AsOfOption = Annotated[str | None, typer.Option(
    "--as-of", help="Time travel: what the lake held at this wall-clock time (ISO, -1h, ...).", show_default=False
)]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
SnapshotOption = Annotated[int | None, typer.Option(help="Read as of this Iceberg snapshot id (time travel).")]
LimitOption = Annotated[int | None, typer.Option(
    min=1, help="At most this many rows (default: all for csv/json; the table view shows the first 100)."
)]


def settings_for(home: Path | None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if home is not None:
        values["home"] = home
    return Settings(**values)  # type: ignore[arg-type]


def writer_settings(home: Path | None, **overrides: object) -> Settings:
    """Settings for a command that writes to K2_HOME: a home that is a file or read-only fails here, clearly."""
    settings = settings_for(home, **overrides)
    settings.home_dir  # noqa: B018 - creates K2_HOME, or raises ConfigError
    return settings


TIME_FORMATS = "an ISO date (2024-01-02), an ISO time (2024-01-02T14:30:00Z, +10:00 zones), now, or -15m/-2h/-1d"
_RELATIVE = re.compile(r"^-(\d{1,6})(s|m|h|d)$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str | None, name: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """ISO date or datetime (no zone means UTC), `now`, or a time relative to now such as -15m."""
    if value is None:
        return None
    text = value.strip()
    current = now or dt.datetime.now(dt.UTC)
    if text.lower() == "now":
        return current
    if match := _RELATIVE.match(text.lower()):
        return current - dt.timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a time; use {TIME_FORMATS}", param_hint=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def split_symbols(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [s.strip().upper() for s in value.split(",") if s.strip()]


def choice(value: str, choices: list[str], option: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)
    return value
