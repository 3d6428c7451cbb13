"""Every failure a user can cause or meet ends as one clear line and a non-zero exit code, never a traceback:
each command is run in each broken setup, as a user would run it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from k2.data import asx_sample_dir
from k2.kafka.broker import BrokerState, free_port, start_broker, stop_process
from tests.test_cli import run_k2

TRADES_CSV = str(asx_sample_dir() / "trades" / "7181.csv")
COMMANDS = {
    "load": ["load", TRADES_CSV],
    "generate": ["generate", "--trades", "10"],
    "ingest": ["ingest"],
    "query": ["query", "trades"],
    "bars": ["query", "bars", "-s", "DVN"],
    "quality": ["quality"],
    "snapshots": ["query", "snapshots"],
    "vwap": ["query", "vwap", "-s", "DVN"],
    "last": ["query", "last", "--at", "2026-01-05"],
    "asof": ["query", "asof", "-s", "DVN"],
    "summary": ["query", "summary"],
    "sql": ["query", "sql", "SELECT count(*) FROM trades"],
    "maintain": ["maintain"],
    "rollback": ["rollback", "--to", "1"],
    "dlq list": ["dlq", "list"],
    "dlq replay": ["dlq", "replay"],
    "broker start": ["broker", "start"],
    "registry subjects": ["registry", "subjects"],
}


def _clean_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    message = " ".join(result.stderr.split())
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "unexpected" not in message, message  # the catch-all for K2 bugs must not be how these end
    assert any(text in message for text in expected), message


@pytest.mark.parametrize("command", list(COMMANDS))
def test_k2_home_that_is_a_file(tmp_path: Path, command: str) -> None:
    home = tmp_path / "home"
    home.write_text("not a directory")
    _clean_failure(run_k2(*COMMANDS[command], home=home), "is a file, not a directory", "no Kafka broker")


@pytest.mark.parametrize("command", ["query", "bars", "quality", "snapshots", "rollback", "vwap", "last", "asof",
                                     "summary", "sql", "maintain"])
def test_k2_home_that_does_not_exist(tmp_path: Path, command: str) -> None:
    home = tmp_path / "nowhere"
    _clean_failure(run_k2(*COMMANDS[command], home=home), "does not exist: nothing has landed there yet")
    assert not home.exists()  # a read must not create an empty home as a side effect


def test_maintain_on_a_lake_with_no_table_yet_says_so_and_nothing_else(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = run_k2("maintain", home=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "nothing to maintain: the lake has no trades or quotes table yet (`k2 ingest` lands them)\n"
    assert result.stderr == ""  # no progress display that never had anything to show (not even its blank line)


@contextlib.contextmanager
def _read_only(directory: Path) -> Iterator[Path]:
    """`directory` mounted read-only at another path (a real read-only file system: root ignores chmod)."""
    view = directory.parent / f"{directory.name}-ro"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(directory), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


@pytest.mark.parametrize("command", ["load", "generate", "ingest", "rollback", "broker start"])
def test_k2_home_that_is_read_only(tmp_path: Path, command: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with _read_only(home) as view:
        _clean_failure(run_k2(*COMMANDS[command], home=view), "is not writable", "does not exist")


def test_a_read_only_lake_can_still_be_queried(tmp_path: Path) -> None:
    import datetime as dt

    from k2.kafka.producer import with_ingest_ts
    from k2.lake import writer
    from k2.lake.catalog import ensure_table, open_catalog
    from k2.schemas import Dataset
    from k2.settings import Settings
    from k2.sources.generator import generate_trades

    settings = Settings(home=tmp_path / "home")
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    writer.append(table, with_ingest_ts(generate_trades(dt.date(2026, 1, 5), ["AAA"], 500, seed=1)))
    with _read_only(settings.home) as view:
        result = run_k2("query", "trades", "-f", "csv", home=view)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 501


@pytest.mark.parametrize("command", ["query", "quality", "snapshots", "bars", "vwap", "last", "asof", "summary", "sql",
                                     "maintain"])
def test_a_corrupt_catalog(tmp_path: Path, command: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "catalog.db").write_bytes(b"this is not an SQLite database\x00" * 100)
    _clean_failure(run_k2(*COMMANDS[command], home=home), "the Iceberg catalog", "cannot be used")


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory, not a CSV file"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("a,b,c\n1,2,3\n"), "cannot tell what this file holds"),
])
def test_files_that_cannot_be_loaded(tmp_path: Path, make: object, expected: str) -> None:
    path = tmp_path / "input.csv"
    make(path)  # type: ignore[operator]
    result = run_k2("load", str(path), home=tmp_path / "home")
    _clean_failure(result, expected)
    assert "no Kafka broker" not in result.stderr  # the file is checked before anything is sent


@pytest.mark.parametrize("command", ["load", "generate", "ingest", "dlq list", "dlq replay"])
def test_no_broker(tmp_path: Path, command: str) -> None:
    _clean_failure(run_k2(*COMMANDS[command], home=tmp_path / "home"), "no Kafka broker: start the local one")


def test_unreachable_broker(tmp_path: Path) -> None:
    env = {"K2_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "K2_KAFKA_CONNECT_TIMEOUT_SECONDS": "2"}
    for command in ("load", "ingest"):
        _clean_failure(run_k2(*COMMANDS[command], home=tmp_path / "home", env=env), "no Kafka broker answered")


@pytest.mark.parametrize(("args", "expected"), [
    (["query", "bars", "-i", "99999999999999999999d"], "is not like 1m"),
    (["query", "bars", "-i", "9999999999h"], "is not like 1m"),
    (["query", "bars", "-i", "400d"], "longer than 366 days"),
    (["query", "bars", "-i", "0m"], "is not like 1m"),
    (["query", "trades", "--snapshot", "1"], "has no snapshot 1"),
    (["query", "trades", "--start", "2026-01-02", "--end", "2026-01-01"], "is not before end"),
    (["query", "snapshots", "--dataset", "nope"], "is not one of"),
    (["query", "trades", "--as-of", "2026-01-05", "--snapshot", "1"], "not both"),
    (["query", "last", "--at", "tomorrowish"], "is not a time"),
    (["query", "summary", "--from", "05/01/2026"], "is not a date"),
    (["query", "bars", "-s", "AAA", "--adjust", "lots"], "is not one of"),
    (["query", "vwap", "-i", "7x"], "is not like 1m"),
    (["query", "sql", "DELETE FROM trades"], "only SELECT"),
    (["query", "sql", "SELECT * FROM read_csv('/etc/passwd')"], "table functions"),
    (["query", "trades", "-s", "AAB"], "did you mean AAA"),
    (["maintain", "--dataset", "reference"], "is not one of"),
])
def test_malformed_query_values(tmp_path: Path, args: list[str], expected: str) -> None:
    import datetime as dt

    from k2.kafka.producer import with_ingest_ts
    from k2.lake import writer
    from k2.lake.catalog import ensure_table, open_catalog
    from k2.schemas import Dataset
    from k2.settings import Settings
    from k2.sources.generator import generate_trades

    settings = Settings(home=tmp_path / "home")
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    writer.append(table, with_ingest_ts(generate_trades(dt.date(2026, 1, 5), ["AAA"], 100, seed=1)))
    _clean_failure(run_k2(*args, home=settings.home), expected)


def test_a_snapshot_error_names_the_snapshots_that_exist(tmp_path: Path) -> None:
    import datetime as dt

    from k2.kafka.producer import with_ingest_ts
    from k2.lake import writer
    from k2.lake.catalog import ensure_table, open_catalog
    from k2.schemas import Dataset
    from k2.settings import Settings
    from k2.sources.generator import generate_trades

    settings = Settings(home=tmp_path / "home")
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    ids = [writer.append(table, with_ingest_ts(generate_trades(dt.date(2026, 1, 5), ["AAA"], 10, seed=s)))
           for s in (1, 2)]
    result = run_k2("query", "bars", "--snapshot", "7", home=settings.home)
    _clean_failure(result, "has no snapshot 7")
    assert all(str(i) in result.stderr.replace("\n", "") for i in ids)


def test_invalid_settings_are_one_line(tmp_path: Path) -> None:
    result = run_k2("query", "trades", home=tmp_path, env={"K2_TOPIC_PARTITIONS": "many"})
    _clean_failure(result, "invalid setting: K2_TOPIC_PARTITIONS")


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.45, 0.55, 0.6, 0.7, 0.8, 1.0])
def test_ctrl_c_while_starting_exits_quietly(tmp_path: Path, delay: float) -> None:
    """SIGINT while the CLI is still importing (its first second) exits with 130 and no traceback."""
    process = subprocess.Popen([sys.executable, "-m", "k2.cli", "load", TRADES_CSV], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "K2_HOME": str(tmp_path)})
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    # On a fast run the command may already have failed (no broker here): then its own exit code stands.
    finished = "no Kafka broker" in err
    assert process.returncode == 130 or (finished and process.returncode == 1), (process.returncode, out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def _hammer_ctrl_c_once_the_error_is_out(tmp_path: Path, after: float) -> tuple[int, str]:
    process = subprocess.Popen([sys.executable, "-m", "k2.cli", "load", TRADES_CSV], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env={**os.environ, "K2_HOME": str(tmp_path)})
    assert process.stderr is not None
    err = process.stderr.read(1)  # the first byte of the error line: the command is reporting and winding down
    time.sleep(after)
    while process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        time.sleep(0.0002)
    return process.returncode, (err + process.stderr.read()).decode()


def test_ctrl_c_as_the_process_winds_down_never_kills_it(tmp_path: Path) -> None:
    """Ctrl-C pressed again and again while a failed command reports and the interpreter tears down: the exit is
    the command's own (1) or 130, never death by the signal (Python restores the default disposition at teardown,
    where a signal landing on a native thread would kill the process) and never a traceback."""
    outcomes = [_hammer_ctrl_c_once_the_error_is_out(tmp_path, after) for after in (0, 0.1, 0.2, 0.3) * 3]
    for code, err in outcomes:
        assert code in (1, 130), (code, err)
        assert "Traceback" not in err and "lost sys.stderr" not in err, err


@pytest.mark.slow
def test_broker_lost_during_ingest(tmp_path: Path) -> None:
    state, process = start_broker("tansu", tmp_path / "broker")
    env = {"K2_KAFKA_BOOTSTRAP": state.bootstrap, "K2_KAFKA_CONNECT_TIMEOUT_SECONDS": "3",
           "K2_INGEST_COMMIT_ROWS": "20000", "K2_CONSUME_BATCH": "2000"}
    home = tmp_path / "home"
    try:
        assert run_k2("generate", "--trades", "300000", home=home, env=env).returncode == 0
        ingest = subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "K2_HOME": str(home), "COLUMNS": "160", **env})
        _wait_for_snapshot(home)
    finally:
        stop_process(state, process)  # the broker goes away mid-ingest, for good
    out, err = ingest.communicate(timeout=120)
    result = subprocess.CompletedProcess(ingest.args, ingest.returncode, out, err)
    _clean_failure(result, "lost the Kafka broker while ingesting")
    assert "Connect to ipv4" not in err  # librdkafka's reconnect lines stay out of the user's way


def _wait_for_snapshot(home: Path) -> None:
    from k2.lake.catalog import ensure_table, open_catalog
    from k2.schemas import Dataset
    from k2.settings import Settings

    settings = Settings(home=home)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ensure_table(open_catalog(settings), settings, Dataset.TRADES).current_snapshot() is not None:
                return
        time.sleep(0.05)
    raise AssertionError("no snapshot landed within 60s")


@pytest.mark.slow
def test_no_partitions_assigned(tmp_path: Path, broker: BrokerState) -> None:
    """Another member of the group holds the only partition: `k2 ingest` says so instead of waiting forever."""
    tag = uuid.uuid4().hex[:8]
    env = {"K2_KAFKA_BOOTSTRAP": broker.bootstrap, "K2_TOPIC_TRADES": f"one-{tag}", "K2_TOPIC_PARTITIONS": "1",
           "K2_CONSUMER_GROUP": f"g-{tag}", "K2_SESSION_TIMEOUT_MS": "6000", "K2_TOPIC_DLQ": f"dlq-{tag}",
           "K2_TOPIC_QUOTES": f"q-{tag}", "K2_TOPIC_REFERENCE": f"r-{tag}", "K2_TOPIC_CORPORATE_ACTIONS": f"c-{tag}",
           # static members: their member ids start with the instance id, and the range assignor hands the one
           # partition to the first in that order, the holder
           "K2_CONSUMER_INSTANCE_ID": "z-k2"}
    home = tmp_path / "home"
    assert run_k2("generate", "--trades", "100", home=home, env=env).returncode == 0
    holder = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{tag}.trades",
                       "group.instance.id": "a-holder", "partition.assignment.strategy": "range",
                       "session.timeout.ms": 6000, "enable.auto.commit": False})
    holder.subscribe([f"one-{tag}"])
    deadline = time.monotonic() + 30
    while not holder.assignment():
        holder.consume(10, timeout=0.2)
        assert time.monotonic() < deadline, "the holder never got the partition"
    ingest = subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "K2_HOME": str(home), "COLUMNS": "160", **env})
    while ingest.poll() is None:  # keep the holder in the group while k2 waits
        holder.consume(10, timeout=0.2)
    out, err = ingest.communicate()
    holder.close()
    _clean_failure(subprocess.CompletedProcess(ingest.args, ingest.returncode, out, err),
                   "no partitions of", "were assigned")
