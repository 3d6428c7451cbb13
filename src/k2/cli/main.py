"""`k2`: one command for every stage — broker, generate, load, ingest, query, quality, rollback, dlq, demo.

Every failure a user can cause or meet ends as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from types import FrameType

import typer

from k2.cli.output import console
from k2.errors import K2Error
from k2.obs.logs import configure_logging
from k2.settings import SettingsError, get_settings

HELP = "K2 market data platform: CSV/feeds → Kafka (Avro) → Iceberg → DuckDB."

# Every command: its name → (module under k2.cli, attribute, whether it is a group of subcommands), in the order
# `k2 --help` lists them. A command's module is imported only when that command runs (or for the full help): each
# module pulls in its own libraries, and a one-shot `k2 query …` should not pay for `k2 serve`'s.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "broker": ("broker", "app", True),
    "generate": ("load", "generate", False),
    "load": ("load", "load", False),
    "ingest": ("ingest", "ingest", False),
    "query": ("query", "app", True),
    "quality": ("query", "quality", False),
    "snapshots": ("query", "query_snapshots", False),
    "lineage": ("lineage", "lineage", False),
    "replay": ("replay", "replay", False),
    "serve": ("serve", "serve", False),
    "rollback": ("lake", "rollback", False),
    "tag": ("lake", "tag", False),
    "maintain": ("lake", "maintain", False),
    "backup": ("recovery", "backup", False),
    "restore": ("recovery", "restore", False),
    "dlq": ("dlq", "app", True),
    "registry": ("registry", "app", True),
    "apikey": ("apikey", "app", True),
    "demo": ("demo", "demo", False),
    "doctor": ("doctor", "doctor", False),
    "trino": ("engines", "trino_app", True),
    "spark": ("engines", "spark_app", True),
}


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The `k2` app with every command, or with only the one `argv` names (its help and errors are the same)."""
    app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

    @app.callback()
    def _group() -> None:  # a callback keeps `k2 NAME` a group even when it holds one command
        pass

    named = argv[1] if argv and len(argv) > 1 else None
    for name in [named] if named in COMMANDS else COMMANDS:
        module, attribute, group = COMMANDS[name]  # type: ignore[index]
        target = getattr(importlib.import_module(f"k2.cli.{module}"), attribute)
        if group:
            app.add_typer(_only(target, argv[2]) if named == name and argv and len(argv) > 2 else target, name=name)
        else:
            app.command(name)(target)
    return app


def _only(group: typer.Typer, name: str) -> typer.Typer:
    """`group` with only its command `name` (typer builds every command of a group it runs: ~15 ms for `query`'s);
    the whole group when `name` is not one of them (help, or a typo that gets suggestions)."""
    chosen = [command for command in group.registered_commands if command.name == name]
    if not chosen:
        return group
    narrowed = typer.Typer(help=group.info.help, no_args_is_help=True)
    narrowed.registered_commands = chosen
    return narrowed


log = logging.getLogger("k2")


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False, markup=True)
    sys.exit(code)


def _log_level() -> str:
    try:
        return get_settings().log_level
    except SettingsError:
        return "WARNING"  # reported as the command runs, with the other settings


def _problem(location: tuple[int | str, ...], message: str) -> str:
    """One invalid setting, named by its variable; a rule across settings names them itself."""
    message = message.removeprefix("Value error, ")
    return f"K2_{'_'.join(map(str, location)).upper()}: {message}" if location else message


class Interrupted(BaseException):
    """Ctrl-C, raised past click (which would turn a KeyboardInterrupt into "Aborted!" and exit code 1)."""


_interrupted = False


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    global _interrupted  # read by run(): libraries may wrap the exception below into one of their own
    _interrupted = True
    raise Interrupted


def _run_app() -> None:
    """The app; any failure after a Ctrl-C is that Ctrl-C, whatever a library made of it (pydantic, for one,
    turns an exception raised while it builds a schema into a SchemaError)."""
    try:
        build_app(sys.argv)()
    except Exception:
        if _interrupted:
            raise Interrupted from None
        raise


def _exit_now(_signum: int, _frame: FrameType | None) -> None:
    os._exit(130)  # the command is over and its outcome decided: nothing is left to clean up


def run() -> None:
    """Run the command line; map every expected failure to one clear line and an exit code. Usage errors are
    click's (exit code 2); Ctrl-C exits with 130."""
    level = _log_level()
    configure_logging(level)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        _run_app()
    except BaseException as exc:
        # From here on a Ctrl-C must not raise into the reporting below (a second one would escape it).
        signal.signal(signal.SIGINT, _exit_now)
        _report(exc, level)
    signal.signal(signal.SIGINT, _exit_now)


def _report(exc: BaseException, level: str) -> None:
    """Turn the command's failure into one line and an exit code (or re-raise what is not a failure)."""
    if isinstance(exc, Interrupted):
        console.print("interrupted")
        sys.exit(130)
    if isinstance(exc, K2Error):
        _fail(str(exc))
    if isinstance(exc, SettingsError):
        problems = "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors())
        _fail(f"invalid setting: {problems}", 2)
    if isinstance(exc, OSError):  # the environment: a file, directory or permission problem K2 did not foresee
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}")
    if not isinstance(exc, Exception) or level == "DEBUG":
        raise exc  # SystemExit (every command ends with one), or a bug shown in full on request
    log.debug("unexpected error", exc_info=exc)
    _fail(f"unexpected {type(exc).__name__}: {exc} (this is a bug in K2: please report it; "
          "K2_LOG_LEVEL=DEBUG shows the traceback)")
