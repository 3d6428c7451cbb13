"""The monitoring kit in deploy/ checked by the real tools: Prometheus' own rule unit tests and config checks,
Alertmanager's config check and routing, and a real Prometheus (Debian's) scraping a real `k2 serve` and `k2 ingest`:
every dashboard panel's query returns data, and stopping the consumer sends the lag alert to pending."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from k2.ingest.pipeline import produce_table
from k2.kafka.broker import BrokerState, ManagedBroker, free_port
from k2.settings import Settings
from k2.sources.generator import generate_trades

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "k2-overview.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DAY = dt.date(2026, 1, 5)


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: scripts/test installs Debian's prometheus and prometheus-alertmanager"
    return found


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_alert_rules_pass_their_unit_tests() -> None:
    result = _run(_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" / "alerts_test.yml").read_text()))
    defined = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert defined == tested, f"alerts without a unit test: {defined - tested}"


def test_prometheus_config_and_rules_are_valid() -> None:
    result = _run(_tool("promtool"), "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_alertmanager_config_is_valid_and_routes_by_severity() -> None:
    config = str(DEPLOY / "alertmanager" / "alertmanager.yml")
    result = _run(_tool("amtool"), "check-config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    for labels, receiver in ((["alertname=K2NoRowsLanded", "severity=critical"], "k2-oncall"),
                             (["alertname=K2SequenceGaps", "severity=warning"], "k2-team")):
        routed = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={config}", *labels)
        assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_and_rules_use_only_metrics_k2_exports() -> None:
    documented = set(re.findall(r"`(k2_\w+)`", (Path(__file__).resolve().parents[1] / "docs" / "metrics.md")
                                .read_text()))
    exprs = [expr for _, expr in _panel_queries()]
    exprs += [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for expr in exprs for name in re.findall(r"\bk2_\w+", expr)}
    assert used and used <= documented, f"not in docs/metrics.md: {used - documented}"


# ------------------------------------------------------------------------------------------ against Prometheus


class Prometheus:
    """Debian's Prometheus on loopback, scraping every second, evaluating deploy/prometheus/alerts.yml."""

    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        jobs = {job["job_name"] for job in shipped["scrape_configs"]}
        assert set(targets) <= jobs, f"{set(targets) - jobs} are not jobs of the shipped config"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{**job, "static_configs": [{"targets": [targets[job["job_name"]]]}]}
                               for job in shipped["scrape_configs"] if job["job_name"] in targets],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.base = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [_tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={self.base.removeprefix('http://')}"],
            stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("w"),
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("Prometheus did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _api_traffic(base: str, stop: threading.Event) -> None:
    """What users do: bars, ticks, last, VWAP, a bad request, and a paced replay."""
    day = {"start": DAY.isoformat(), "end": (DAY + dt.timedelta(days=1)).isoformat()}
    paths = [
        f"/v1/bars?{urllib.parse.urlencode({'symbols': 'AAA', 'interval': '1m', **day})}",
        f"/v1/trades?{urllib.parse.urlencode({'symbols': 'BBB', 'limit': 100, **day})}",
        f"/v1/trades/last?{urllib.parse.urlencode({'symbols': 'AAA', 'at': DAY.isoformat() + 'T23:00:00Z'})}",
        f"/v1/vwap?{urllib.parse.urlencode({'symbols': 'AAA,BBB', **day})}",
        "/v1/trades?symbols=AAA&start=yesterday",  # 400: the error panels need one
        "/v1/replay?" + urllib.parse.urlencode({"symbols": "AAA", "datasets": "trades", "speed": "1000000",
                                                "limit": 50, **day}),
    ]
    while not stop.is_set():
        for path in paths:
            _get(base + path)
        stop.wait(0.2)


def _feed(settings: Settings, bootstrap: str, stop: threading.Event) -> None:
    """A live feed: a small batch every second, so the ingest keeps committing while panels are read."""
    day = 0
    while not stop.is_set():
        day += 1
        produce_table(settings, bootstrap, generate_trades(DAY + dt.timedelta(days=day), ["DDD"], 200, seed=day))
        stop.wait(1.0)


def _produce_a_dead_letter(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"not avro at all", key=b"AAA")
    assert producer.flush(10) == 0


def _values(data: dict[str, Any]) -> list[float]:
    """The sample values of an instant query's answer (one per series)."""
    return [float(item["value"][1]) for item in data["result"]]


@pytest.fixture
def noida(tmp_path: Path) -> Iterator[BrokerState]:
    # noida-db: Tansu's high watermark counts batches, not records, so lag is meaningful on noida (and Kafka) only
    with ManagedBroker("noida", tmp_path / "broker") as state:
        yield state


@pytest.mark.slow
def test_prometheus_scrapes_k2_every_panel_has_data_and_the_lag_alert_goes_pending(
    tmp_path: Path, noida: BrokerState
) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, kafka_bootstrap=noida.bootstrap)
    env = {**os.environ, "K2_HOME": str(home), "K2_KAFKA_BOOTSTRAP": noida.bootstrap}
    trades = generate_trades(DAY, ["AAA", "BBB"], 20_000, seed=5)
    produce_table(settings, noida.bootstrap, trades.filter(  # a hole in BBB's sequence: a gap to report
        [not (s == "BBB" and 100 <= q < 110) for s, q in zip(trades["symbol"].to_pylist(),
                                                              trades["sequence"].to_pylist(), strict=True)]))
    produce_table(settings, noida.bootstrap, trades.slice(0, 500))  # re-sent: duplicates to drop
    _produce_a_dead_letter(noida.bootstrap, settings.topic_trades)

    ingest_port, api_port = free_port(), free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    ingest = subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades", "--follow",
                               "--metrics-port", str(ingest_port), "--maintain-every", "5"], env=env,
                              stdout=subprocess.DEVNULL, stderr=(logs / "ingest.log").open("w"))
    serve = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve", "--port", str(api_port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=(logs / "serve.log").open("w"))
    prometheus = Prometheus(tmp_path / "prometheus", {"k2-api": f"127.0.0.1:{api_port}",
                                                       "k2-ingest": f"127.0.0.1:{ingest_port}"})
    stop_traffic, stop_feed = threading.Event(), threading.Event()
    traffic = threading.Thread(target=_api_traffic, args=(f"http://127.0.0.1:{api_port}", stop_traffic), daemon=True)
    feed = threading.Thread(target=_feed, args=(settings, noida.bootstrap, stop_feed), daemon=True)
    try:
        prometheus.wait_ready()
        _wait_http(f"http://127.0.0.1:{ingest_port}/metrics")
        _wait_http(f"http://127.0.0.1:{api_port}/health/live")
        _wait_until(lambda: _values(prometheus.api("query", query="sum(k2_consumer_lag)")) == [0.0], 120,
                    "the ingest did not catch up", logs)
        traffic.start()
        feed.start()
        _every_panel_returns_data(prometheus, logs)
        assert not _active_alerts(prometheus, "K2ConsumerLagHigh")  # nothing lags while the ingest runs
        stop_feed.set()
        feed.join(30)

        ingest.send_signal(signal.SIGINT)  # the consumer stops; records keep coming
        assert ingest.wait(60) == 130, (logs / "ingest.log").read_text()
        produce_table(settings, noida.bootstrap, generate_trades(DAY, ["CCC"], 60_000, seed=6))
        _wait_until(lambda: _active_alerts(prometheus, "K2ConsumerLagHigh"), 60, "the lag alert did not go pending",
                    logs)
        lag = _active_alerts(prometheus, "K2ConsumerLagHigh")[0]
        assert lag["state"] in ("pending", "firing") and lag["labels"]["dataset"] == "trades"
        assert float(lag["value"]) >= 60_000
        _wait_until(lambda: any(a["labels"]["job"] == "k2-ingest" for a in _active_alerts(prometheus, "K2TargetDown")),
                    30, "the ingest target was not reported down", logs)
    finally:
        stop_traffic.set()
        stop_feed.set()
        for process in (ingest, serve):
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        prometheus.stop()


def _active_alerts(prometheus: Prometheus, name: str) -> list[dict[str, Any]]:
    return [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


def _wait_until(condition: Any, timeout: float, message: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"{message}; logs:\n" + "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                                                           for p in sorted(logs.iterdir())))


def _every_panel_returns_data(prometheus: Prometheus, logs: Path) -> None:
    """Each panel query, with Grafana's interval variables set, returns at least one series with a number."""
    missing: dict[str, str] = {}
    deadline = time.monotonic() + 90
    pending = _panel_queries()
    while pending and time.monotonic() < deadline:
        missing = {}
        for title, expr in pending:
            query = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            values = _values(prometheus.api("query", query=query))
            if not any(math.isfinite(v) for v in values):
                missing[f"{title}: {expr}"] = str(values)
        pending = [(t, e) for t, e in pending if f"{t}: {e}" in missing]
        time.sleep(1)
    assert not missing, f"panels without data: {json.dumps(missing, indent=1)}; logs in {logs}"


def test_compose_file_references_what_exists_and_prometheus_scrapes_its_services() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in deploy/"
    assert (DEPLOY / compose["x-k2"]["build"] / "Dockerfile").exists()
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            if host == "localhost":
                continue
            assert host in services, f"{job['job_name']} scrapes {host}, not a compose service"
            command = " ".join(services[host]["command"])
            assert f"--port {port}" in command or f"--metrics-port {port}" in command, (host, command)
    alertmanager = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert alertmanager.split(":")[0] in services
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert urllib.parse.urlparse(datasource["datasources"][0]["url"]).hostname in services
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]} == {uid}
