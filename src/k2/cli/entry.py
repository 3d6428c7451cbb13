"""The `k2` console entry point. Importing the CLI (pyarrow, DuckDB, typer …) takes a good part of a second; a
Ctrl-C in that time exits quietly with 130 instead of a KeyboardInterrupt traceback from deep inside an import.
The same holds once the command is over and the process winds down: a Ctrl-C then exits with 130 at once, and
none can arrive after Python starts tearing itself down (it restores the default handler there, and the process
would die of the signal instead of exiting)."""

from __future__ import annotations

import atexit
import os
import signal
from types import FrameType


def _exit_quietly(_signum: int, _frame: FrameType | None) -> None:
    os._exit(130)  # nothing is running: no file, broker or commit to clean up


def _hold_ctrl_c() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # the last step of the process: exit as decided


def main() -> None:
    signal.signal(signal.SIGINT, _exit_quietly)
    from k2.cli.main import run  # installs its own Ctrl-C handling once it runs

    try:
        run()
    finally:
        signal.signal(signal.SIGINT, _exit_quietly)
        atexit.register(_hold_ctrl_c)  # atexit runs after non-daemon threads are joined, before the teardown
