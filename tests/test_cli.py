"""The `k2` command as a user runs it: real subprocesses, real broker, real lake."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from k2.kafka.broker import BrokerState
from k2.settings import Settings
from tests.services import brokers_under_test

K2 = [sys.executable, "-m", "k2.cli"]


def run_k2(
    *args: str, home: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*K2, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "K2_HOME": str(home), "COLUMNS": "160", **(env or {})},
    )


@pytest.mark.slow
def test_demo_twice_adds_a_day_and_keeps_the_first(home: Path) -> None:
    first = run_k2("demo", "--trades", "20000", home=home)
    assert first.returncode == 0, first.stderr
    assert "landed 20,000 trades end to end" in first.stdout
    assert "Iceberg snapshot id:" in first.stdout
    assert "1-minute OHLCV bars" in first.stdout
    second = run_k2("demo", "--trades", "20000", home=home)
    assert second.returncode == 0, second.stderr
    assert "2026-01-06" in second.stdout
    symbols = run_k2("query", "symbols", "--format", "json", home=home)
    rows = [json.loads(line) for line in symbols.stdout.splitlines()]
    assert sum(r["trades"] for r in rows) == 40_000
    day_one = run_k2("query", "bars", "-s", "ALPHA", "-i", "1d", "--start", "2026-01-05", "--end", "2026-01-06",
                     "-f", "json", home=home)
    bars = [json.loads(line) for line in day_one.stdout.splitlines()]
    assert len(bars) == 1 and bars[0]["bar_start"].startswith("2026-01-05")


def test_demo_asx_loads_the_bundled_sample(home: Path) -> None:
    result = run_k2("demo", "--asx", home=home)
    assert result.returncode == 0, result.stderr
    assert "landed 243 trades" in result.stdout  # DVN 232 + MWR 11
    trades = run_k2("query", "trades", "-s", "MWR", "-f", "csv", "--limit", "100", home=home)
    assert trades.returncode == 0
    assert len(trades.stdout.strip().splitlines()) == 1 + 11


@pytest.mark.parametrize("kind", brokers_under_test())
def test_broker_lifecycle_and_stage_commands(home: Path, tmp_path: Path, kind: str) -> None:
    assert run_k2("broker", "status", home=home).returncode == 1
    started = run_k2("broker", "start", "--kind", kind, home=home)
    assert started.returncode == 0, started.stderr
    try:
        assert "accepting connections" in run_k2("broker", "status", home=home).stdout
        csv_path = tmp_path / "day.csv"
        generated = run_k2("generate", "--date", "2026-02-02", "--trades", "3000", "--out", str(csv_path), home=home)
        assert generated.returncode == 0, generated.stderr
        with csv_path.open("a") as handle:
            handle.write("K2X,ALPHA,2026-02-02T15:00:00Z,999999,bad,oops,10,BUY,\n")
        loaded = run_k2("load", str(csv_path), home=home)
        assert loaded.returncode == 0, loaded.stderr
        assert "read 3,001 rows, sent 3,000, rejected 1" in loaded.stdout
        assert "line 3002: price 'oops' is not a decimal number" in loaded.stdout
        ingested = run_k2("ingest", "--idle-seconds", "2", home=home, env={"K2_SESSION_TIMEOUT_MS": "6000"})
        assert ingested.returncode == 0, ingested.stderr
        assert "landed 3,000 rows" in ingested.stdout
        bars = run_k2("query", "bars", "-s", "ALPHA,BRAVO", "-i", "1h", "-f", "csv", home=home)
        assert bars.returncode == 0 and bars.stdout.startswith("\"symbol\",\"bar_start\"")
    finally:
        stopped = run_k2("broker", "stop", home=home)
    assert "stopped" in stopped.stdout
    assert run_k2("broker", "status", home=home).returncode == 1


def test_clear_errors_for_bad_input(home: Path, tmp_path: Path) -> None:
    from k2.data import asx_sample_dir

    no_broker = run_k2("load", str(asx_sample_dir() / "trades" / "7181.csv"), home=home)
    assert no_broker.returncode == 1 and "k2 broker start" in no_broker.stderr
    bad_interval = run_k2("query", "bars", "-i", "7x", home=home)
    assert bad_interval.returncode == 1 and "interval '7x'" in bad_interval.stderr
    bad_time = run_k2("query", "trades", "--start", "yesterday", home=home)
    assert bad_time.returncode == 2 and "is not a time" in bad_time.stderr and "-15m" in bad_time.stderr
    assert "Traceback" not in no_broker.stderr + bad_interval.stderr + bad_time.stderr


def test_every_command_has_help(home: Path) -> None:
    for command in (["broker", "start"], ["broker", "stop"], ["broker", "status"], ["generate"], ["load"],
                    ["ingest"], ["query", "trades"], ["query", "bars"], ["demo"]):
        result = run_k2(*command, "--help", home=home)
        assert result.returncode == 0 and "Usage" in result.stdout, command


def test_settings_come_from_k2_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K2_HOME", str(tmp_path))
    monkeypatch.setenv("K2_TOPIC_PARTITIONS", "8")
    monkeypatch.setenv("K2_BROKER", "noida")
    settings = Settings()
    assert settings.home == tmp_path and settings.topic_partitions == 8 and settings.broker == "noida"
    assert settings.resolved_catalog_uri == f"sqlite:///{tmp_path / 'catalog.db'}"


def test_unreachable_broker_is_a_clear_error_after_retries(home: Path) -> None:
    from k2.data import asx_sample_dir
    from k2.kafka.broker import free_port

    result = run_k2(
        "load", str(asx_sample_dir() / "trades" / "7181.csv"), home=home,
        env={"K2_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "K2_KAFKA_CONNECT_TIMEOUT_SECONDS": "2"},
    )
    assert result.returncode == 1
    assert "no Kafka broker answered" in result.stderr and "nothing was sent" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_sigint_during_load_flushes_what_was_read(broker: BrokerState, home: Path, tmp_path: Path) -> None:
    import signal
    import time
    import uuid

    tag = uuid.uuid4().hex[:8]
    env = {"K2_KAFKA_BOOTSTRAP": broker.bootstrap, "K2_TOPIC_TRADES": f"sigint-{tag}", "K2_TOPIC_DLQ": f"dlq-{tag}",
           "K2_CONSUMER_GROUP": f"g-{tag}", "K2_CSV_CHUNK_ROWS": "20000"}
    csv_path = tmp_path / "big.csv"
    assert run_k2("generate", "--trades", "2000000", "--out", str(csv_path), home=home).returncode == 0
    process = subprocess.Popen([*K2, "load", str(csv_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "K2_HOME": str(home), **env})
    # interrupt once the first records are in Kafka: mid-load on a fast or a slow machine alike (a fixed sleep
    # raced the load's end: 2M rows take ~6 s here, the first chunk lands within ~1.5 s)
    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"probe-{tag}"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            topic = probe.list_topics(env["K2_TOPIC_TRADES"], timeout=5).topics[env["K2_TOPIC_TRADES"]]
            if not topic.error and any(
                probe.get_watermark_offsets(TopicPartition(env["K2_TOPIC_TRADES"], p), timeout=5)[1] > 0
                for p in topic.partitions
            ):
                break
        except KafkaException:
            pass
        time.sleep(0.05)
    probe.close()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted" in out
    sent = int(re.search(r"sent ([\d,]+), rejected", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < sent < 2_000_000
    ingested = run_k2("ingest", "--idle-seconds", "2", home=home, env=env)
    assert f"landed {sent:,} rows" in ingested.stdout, ingested.stdout + ingested.stderr


def _topics_env(broker: BrokerState) -> dict[str, str]:
    import uuid

    tag = uuid.uuid4().hex[:8]
    return {"K2_KAFKA_BOOTSTRAP": broker.bootstrap, "K2_TOPIC_TRADES": f"t-{tag}", "K2_TOPIC_QUOTES": f"q-{tag}",
            "K2_TOPIC_REFERENCE": f"r-{tag}", "K2_TOPIC_CORPORATE_ACTIONS": f"c-{tag}", "K2_TOPIC_DLQ": f"d-{tag}",
            "K2_CONSUMER_GROUP": f"g-{tag}", "K2_INGEST_IDLE_SECONDS": "2"}


def test_defaults_a_new_user_meets(broker: BrokerState, home: Path, tmp_path: Path) -> None:
    """The bundled ASX files with default options: quotes are read as quotes, `k2 ingest` lands every dataset, and
    exports are complete."""
    from k2.data import asx_sample_dir

    env = _topics_env(broker)
    sample = asx_sample_dir()
    quotes = run_k2("load", str(sample / "quotes" / "7181.csv"), home=home, env=env)
    assert quotes.returncode == 0, quotes.stderr
    assert "(quotes, asx layout): read 549 rows, sent 549, rejected 0" in quotes.stdout
    trades = run_k2("load", str(sample / "trades" / "7181.csv"), str(sample / "reference-data" / "company_info.csv"),
                    home=home, env=env)
    assert trades.returncode == 0, trades.stderr
    assert "(trades, asx layout): read 232 rows, sent 232, rejected 0" in trades.stdout

    ingested = run_k2("ingest", home=home, env=env)  # no --dataset: every dataset that has a topic
    assert ingested.returncode == 0, ingested.stderr
    for line in ("trades: read 232 records, landed 232 rows", "quotes: read 549 records, landed 549 rows",
                 "reference: read 4 records, landed 4 rows"):
        assert line in ingested.stdout, ingested.stdout

    exported = run_k2("query", "quotes", "-s", "DVN", "-f", "csv", home=home)
    assert len(exported.stdout.splitlines()) == 1 + 549  # every row, not the first 100
    as_json = run_k2("query", "quotes", "-s", "DVN", "-f", "json", home=home)
    assert len(as_json.stdout.splitlines()) == 549
    limited = run_k2("query", "quotes", "-s", "DVN", "-f", "csv", "--limit", "7", home=home)
    assert len(limited.stdout.splitlines()) == 1 + 7
    table = run_k2("query", "trades", home=home)
    assert "showing 100 of 232 rows" in " ".join(table.stderr.split())


def test_a_file_read_in_the_wrong_layout_fails_and_says_how_to_choose(broker: BrokerState, home: Path) -> None:
    from k2.data import asx_sample_dir

    forced = run_k2("load", str(asx_sample_dir() / "quotes" / "7181.csv"), "--dataset", "trades", home=home,
                    env=_topics_env(broker))
    message = " ".join(forced.stderr.split())
    assert forced.returncode == 1, forced.stdout + forced.stderr
    assert "rejected 549" in forced.stdout
    assert "every row was rejected, read as ASX trades (7 columns, no header)" in message
    assert "--dataset trades|quotes|reference" in message and "Traceback" not in message


def test_production_commands_say_what_is_missing(home: Path, tmp_path: Path) -> None:
    """Kafka, Trino and Spark are never fetched behind a user's back: without them the commands say which
    command fetches them; Trino refuses the embedded SQLite catalog and explains why; the catalog file it prints for
    PostgreSQL is the JDBC catalog on the same database and catalog name."""
    empty = {"K2_KAFKA_DIST": str(tmp_path / "no-kafka"), "K2_SPARK_JARS": str(tmp_path / "no-spark")}
    started = run_k2("broker", "start", "--kind", "kafka", home=home, env=empty)
    assert started.returncode == 1 and "k2 broker fetch --kind kafka" in " ".join(started.stderr.split())
    assert not (tmp_path / "no-kafka").exists()  # nothing was downloaded
    spark = run_k2("spark", "conf", home=home, env=empty)
    assert spark.returncode == 1 and "k2 spark fetch" in " ".join(spark.stderr.split())
    embedded = run_k2("trino", "catalog", home=home)
    assert embedded.returncode == 1 and "PostgreSQL or REST catalog" in " ".join(embedded.stderr.split())
    uri = "postgresql+psycopg://k2:s3cret@db.example:5433/lake"
    catalog = run_k2("trino", "catalog", home=home, env={"K2_CATALOG_URI": uri, "K2_CATALOG_NAME": "desk"})
    assert catalog.returncode == 0, catalog.stderr
    properties = dict(line.split("=", 1) for line in catalog.stdout.splitlines())
    assert properties["iceberg.catalog.type"] == "jdbc"
    assert properties["iceberg.jdbc-catalog.connection-url"] == "jdbc:postgresql://db.example:5433/lake"
    assert properties["iceberg.jdbc-catalog.catalog-name"] == "desk"
    assert properties["iceberg.jdbc-catalog.connection-password"] == "s3cret"
    rest = run_k2("trino", "catalog", home=home, env={"K2_CATALOG_TYPE": "rest"})
    assert rest.returncode == 2  # an invalid combination of settings, named as the user wrote them
    assert "invalid setting: K2_CATALOG_TYPE=rest needs K2_CATALOG_URI" in " ".join(rest.stderr.split())


def test_a_read_only_command_exits_fast_with_its_code_output_and_exit_hooks(home: Path, tmp_path: Path) -> None:
    """`k2 query`/`k2 snapshots` skip the interpreter's teardown (~80 ms), and nothing else: the exit code, every
    line of output and the atexit hooks (a tracer flushing its spans) are those of a normal exit."""
    probe = ("import atexit, sys; atexit.register(lambda: print('HOOK RAN', file=sys.stderr))\n"
             "class Teardown:\n    def __del__(self):\n        print('TEARDOWN', file=sys.stderr)\n"
             "watch = Teardown()  # collected only when the interpreter tears its modules down\n"
             "sys.argv = ['k2', *sys.argv[1:]]\nfrom k2.cli.entry import main\nmain()\n")
    script = tmp_path / "probe.py"
    script.write_text(probe)
    env = {**os.environ, "K2_HOME": str(home)}
    missing = subprocess.run([sys.executable, str(script), "query", "trades"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "HOOK RAN" in missing.stderr
    usage = subprocess.run([sys.executable, str(script), "query", "trades", "--start", "yesterday"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "is not a time" in usage.stderr and "HOOK RAN" in usage.stderr
    assert "TEARDOWN" not in missing.stderr + usage.stderr
    with_lake = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['k2', 'query', 'trades']\n"
                                "import atexit; atexit.register(lambda: print('PANDAS', sys.modules.get('pandas', "
                                "'absent'), 'BLOCKED', any(type(f).__name__ == '_WithoutPandas' for f in "
                                "sys.meta_path), file=sys.stderr))\nfrom k2.cli.entry import main\nmain()"],
                               env=env, capture_output=True, text=True, timeout=120)
    # pyarrow's probe for pandas (0.3-0.5 s when it is installed) finds none
    assert "PANDAS absent BLOCKED True" in with_lake.stderr
    other = subprocess.run([sys.executable, str(script), "broker", "status"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert other.returncode == 1 and "HOOK RAN" in other.stderr and "TEARDOWN" in other.stderr  # a normal exit
