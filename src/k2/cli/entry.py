"""The `k2` console entry point. Importing the CLI (pyarrow, DuckDB, typer …) takes a good part of a second; a
Ctrl-C in that time exits quietly with 130 instead of a KeyboardInterrupt traceback from deep inside an import.
The same holds once the command is over and the process winds down: a Ctrl-C then exits with 130 at once, and
a Ctrl-C that arrives after Python starts tearing itself down is ignored: Python restores the default disposition
there, and a signal delivered to any native thread (Arrow's, DuckDB's) would kill the process instead of letting it
exit with the code already decided. Blocking the signal is not enough: a mask only covers the thread that sets it."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from types import FrameType


def _exit_quietly(_signum: int, _frame: FrameType | None) -> None:
    os._exit(130)  # nothing is running: no file, broker or commit to clean up


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Python's teardown leaves an ignored signal ignored


def main() -> None:
    signal.signal(signal.SIGINT, _exit_quietly)
    if _read_only(sys.argv):
        # pyarrow looks for pandas on every pa.array()/pa.table() call and imports it when installed (0.3-0.5 s
        # measured here, more than the whole query): a one-shot read never converts to pandas, so it goes without
        sys.meta_path.insert(0, _WithoutPandas())
    from k2.cli.main import run  # installs its own Ctrl-C handling once it runs

    try:
        run()
    except SystemExit as done:
        if _read_only(sys.argv):
            _exit_without_teardown(done.code)
        raise
    finally:
        signal.signal(signal.SIGINT, _exit_quietly)
        atexit.register(_ignore_ctrl_c)  # atexit runs after non-daemon threads are joined, before the teardown


class _WithoutPandas:
    """A `sys.meta_path` finder that makes `import pandas` fail as if it were not installed (pyarrow then goes on
    without it). Not an importlib.abc subclass: importing that module costs ~20 ms."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(f"no {fullname} in a one-shot `k2` read", name=fullname)


# Commands that only read and print: nothing of theirs is left to clean up when they return, and unloading the
# interpreter's modules (pyarrow, numpy, DuckDB, pydantic ...) costs ~80 ms of a ~0.5 s command (measured).
_READ_ONLY = frozenset({"query", "snapshots"})


def _read_only(argv: list[str]) -> bool:
    return len(argv) > 1 and argv[1] in _READ_ONLY


def _exit_without_teardown(code: object) -> None:
    """Exit as Python would, minus the teardown: output flushed, atexit hooks run (a tracer flushes its spans)."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit("message") prints
        code = 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the outcome is decided: a late Ctrl-C must not change it
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`k2 query … | head`): the reader has gone
            stream.flush()
    os._exit(code or 0)
