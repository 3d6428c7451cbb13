"""What every command shares: the --home option, settings, and parsing of times, symbols and datasets."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from k2.cli.output import OutputFormat
from k2.settings import Settings

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="K2 data directory (env K2_HOME, default ./.k2).", show_default=False)
]
SymbolOption = Annotated[str | None, typer.Option("--symbol", "-s", help="Symbol(s), comma-separated.")]
StartOption = Annotated[str | None, typer.Option(help="From (inclusive), ISO date/time; no zone = UTC.")]
EndOption = Annotated[str | None, typer.Option(help="To (exclusive), ISO date/time; no zone = UTC.")]
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


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """ISO date or datetime; no zone means UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date/time like 2024-01-02 or 2024-01-02T14:30:00Z",
                                 param_hint=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def split_symbols(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [s.strip().upper() for s in value.split(",") if s.strip()]


def choice(value: str, choices: list[str], option: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)
    return value
