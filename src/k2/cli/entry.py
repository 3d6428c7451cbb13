"""The `k2` console entry point. Importing the CLI (pyarrow, pyiceberg, DuckDB …) takes about a second; a Ctrl-C
in that second exits quietly with 130 instead of a KeyboardInterrupt traceback from deep inside an import."""

from __future__ import annotations

import os
import signal
from types import FrameType


def _exit_quietly(_signum: int, _frame: FrameType | None) -> None:
    os._exit(130)  # nothing has started yet: no file, broker or commit to clean up


def main() -> None:
    signal.signal(signal.SIGINT, _exit_quietly)
    from k2.cli.main import run  # installs its own Ctrl-C handling once it runs

    run()
