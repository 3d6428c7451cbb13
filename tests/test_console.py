"""The web console in a real browser: Debian's chromium, driven by Selenium through chromium-driver, against K2's app
served on loopback. What each view draws is read from the page (the chart's own series data) and compared with the
API's answer for the same question; the replay is checked against the engine's bars; auth is checked with real keys.
Screenshots go to test-artifacts/console/ (K2_UPDATE_SCREENSHOTS=1 also refreshes the README's, in docs/img/)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer
from joserfc.jwk import RSAKey
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from k2.api.app import create_app
from k2.api.auth.keys import KeyStore
from k2.ingest import pipeline
from k2.kafka.admin import ensure_topics
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.compaction import compact
from k2.schemas import Dataset, arrow_schema
from k2.settings import Settings
from k2.sources.generator import generate_trades
from tests.test_api import api_server
from tests.test_replay import DAYS, _build, _land
from tests.test_security import AUDIENCE, ISSUER, Jwks
from tests.test_security import _token as oidc_token

ROOT = Path(__file__).parent.parent
ARTIFACTS = Path(os.environ.get("K2_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
SCREENSHOTS = ROOT / "docs" / "img"
DAY = {"start": f"{DAYS[1]}T00:00:00Z", "end": f"{DAYS[1] + dt.timedelta(days=1)}T00:00:00Z"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "the console tests need Debian's chromium and chromium-driver (scripts/test " \
                                     "installs them: apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--lang=en-GB"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two days of trades and quotes of AAA, BBB, CCC in several commits, and a 2:1 split of AAA on day two."""
    settings, _, _ = _build(tmp_path_factory.mktemp("console") / "home")
    schema = arrow_schema(Dataset.CORPORATE_ACTIONS)
    schema = schema.remove(schema.get_field_index("ingest_ts"))
    _land(settings, Dataset.CORPORATE_ACTIONS, pa.Table.from_pylist(
        [{"exchange": "K2X", "symbol": "AAA", "action": "SPLIT", "ex_date": DAYS[1], "ratio": "2:1"}], schema=schema),
        commits=1)
    return settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1", "api_rate_limit": "off"})


@pytest.fixture(scope="module")
def served(lake: Settings) -> Iterator[str]:
    with api_server(create_app(lake)) as base:
        yield base


# ---------------------------------------------------------------------------------------------------------- helpers

def wait_for(driver: WebDriver, script: str, timeout: float = 30, what: str = "") -> Any:
    """Poll a JS expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or script}; page state: {state(driver)}; "
                                 f"browser log: {browser_log(driver)[-5:]}")
        time.sleep(0.1)


def state(driver: WebDriver, part: str = "") -> Any:
    return driver.execute_script(f"return window.k2console ? window.k2console.state{part} : null;")


def drawn(driver: WebDriver, view: str) -> Any:
    return driver.execute_script(f"return window.k2console.drawn.{view}();")


def browser_log(driver: WebDriver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")]


def open_console(driver: WebDriver, base: str) -> None:
    driver.get(base + "/")
    wait_for(driver, "window.k2console && window.k2console.state.ready", what="the console to start")


def api(base: str, path: str, params: dict[str, Any] | None = None, key: str | None = None,
        accept: str = "application/json", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params or {})}"
    headers = {"Accept": accept, **({"X-API-Key": key} if key else {})}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if accept == "application/json" else raw
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def api_bars(base: str, **params: Any) -> list[dict[str, Any]]:
    status, body = api(base, "/v1/bars", {"interval": "1m", **params})
    assert status == 200, body
    return list(body["data"])


def seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def candles_of(bars: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The API's bars as the chart should hold them."""
    return [{"time": seconds(b["bar_start"]), **{k: float(b[k]) for k in ("open", "high", "low", "close")}}
            for b in bars]


def chart_candles(points: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: float(p[k]) for k in ("time", "open", "high", "low", "close")} for p in points]


def show(driver: WebDriver, symbol: str, start: str, end: str, interval: str = "1m", adjust: str = "none",
         compare: str = "") -> None:
    """What a user does: pick the symbol (and one to compare with), range, bar and adjustment, then press Show."""
    Select(driver.find_element(By.ID, "symbol")).select_by_value(symbol)
    Select(driver.find_element(By.ID, "compare")).select_by_value(compare)
    driver.execute_script("document.getElementById('start').value = arguments[0];"
                          "document.getElementById('end').value = arguments[1];", start[:19], end[:19])
    Select(driver.find_element(By.ID, "interval")).select_by_value(interval)
    Select(driver.find_element(By.ID, "adjust")).select_by_value(adjust)
    loads = state(driver, ".market.loads")
    driver.find_element(By.ID, "show").click()
    wait_for(driver, f"window.k2console.state.market.loads > {loads}", what="the market view to load")


def screenshot(driver: WebDriver, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("K2_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / path.name)


def no_script_errors(driver: WebDriver) -> None:
    """No script error and no Content-Security-Policy violation (failed requests the test caused are fine)."""
    bad = [line for line in browser_log(driver) if "Content Security Policy" in line or "Uncaught" in line]
    assert not bad, bad


# ------------------------------------------------------------------------------------------------------ market view

def test_the_market_view_draws_the_apis_bars_vwap_and_trades(browser: WebDriver, served: str) -> None:
    open_console(browser, served)
    assert state(browser, ".market.candles") > 0  # the default view (first symbol, its last day) drew something
    show(browser, "BBB", **DAY)
    bars = api_bars(served, symbols="BBB", **DAY)
    assert len(bars) > 100
    got = drawn(browser, "market")
    assert state(browser, ".market.candles") == len(bars) == len(got["candles"])
    assert chart_candles(got["candles"]) == candles_of(bars)
    assert [v["value"] for v in got["volume"]] == [int(b["volume"]) for b in bars]
    # the VWAP line ends at the day's VWAP as the engine computes it over the raw trades
    _, vwap = api(served, "/v1/vwap", {"symbols": "BBB", **DAY})
    assert got["vwap"][-1]["value"] == pytest.approx(float(vwap["data"][0]["vwap"]), rel=1e-8)

    # the trades table pages through the same trades as the API, page by page
    status, first = api(served, "/v1/trades", {"symbols": "BBB", "limit": 100, **DAY})
    assert status == 200
    rows = browser.find_elements(By.CSS_SELECTOR, "#trades-table tbody tr")
    assert len(rows) == 100
    assert rows[0].find_elements(By.TAG_NAME, "td")[4].text == str(first["data"][0]["sequence"])
    browser.find_element(By.ID, "trades-next").click()
    wait_for(browser, "window.k2console.state.market.page === 1")
    _, second = api(served, "/v1/trades", {"symbols": "BBB", "limit": 100, "page_token": first["next_cursor"], **DAY})
    cells = browser.find_elements(By.CSS_SELECTOR, "#trades-table tbody tr")[0].find_elements(By.TAG_NAME, "td")
    assert (cells[0].text, cells[4].text) == (second["data"][0]["ts"].replace("T", " ").rstrip("Z"),
                                              str(second["data"][0]["sequence"]))
    assert not browser.find_element(By.ID, "trades-prev").get_attribute("disabled")

    # a second symbol to compare with: its closes beside the candles, on the left scale
    show(browser, "BBB", **DAY, compare="CCC")
    other = api_bars(served, symbols="CCC", **DAY)
    got = drawn(browser, "market")
    assert state(browser, ".market.compare") == {"symbol": "CCC", "points": len(other)}
    assert [(p["time"], p["value"]) for p in got["compare"]] == [(seconds(b["bar_start"]), float(b["close"]))
                                                                 for b in other]
    assert chart_candles(got["candles"]) == candles_of(bars)  # the candles are still BBB's
    screenshot(browser, "console-market")
    no_script_errors(browser)


def test_the_adjustment_switch_redraws_split_adjusted_bars(browser: WebDriver, served: str) -> None:
    open_console(browser, served)
    first_day = {"start": f"{DAYS[0]}T00:00:00Z", "end": f"{DAYS[1]}T00:00:00Z"}  # before AAA's 2:1 split
    show(browser, "AAA", **first_day, interval="5m")
    raw = chart_candles(drawn(browser, "market")["candles"])
    show(browser, "AAA", **first_day, interval="5m", adjust="splits")
    adjusted = chart_candles(drawn(browser, "market")["candles"])
    assert adjusted == candles_of(api_bars(served, symbols="AAA", interval="5m", adjust="splits", **first_day))
    assert [a["close"] for a in adjusted] == pytest.approx([r["close"] / 2 for r in raw], rel=1e-9)


def test_zooming_in_overlays_the_trades_and_the_spread(browser: WebDriver, served: str) -> None:
    open_console(browser, served)
    show(browser, "CCC", **DAY)
    bars = api_bars(served, symbols="CCC", **DAY)
    start, end = seconds(bars[40]["bar_start"]), seconds(bars[70]["bar_start"])
    browser.execute_script("window.k2console.zoom(arguments[0], arguments[1]);", start, end)
    overlay = wait_for(browser, "window.k2console.state.market.overlay.trades > 0 && "
                                "window.k2console.state.market.overlay", what="the tick overlay")
    shown = browser.execute_script("return window.k2console.state.market.overlay;")
    visible = browser.execute_script("return window.k2console.state.market.visible;")
    window = {"symbols": "CCC", "start": visible["start"], "end": visible["end"], "limit": 10_000}
    assert overlay["trades"] == len(api(served, "/v1/trades", window)[1]["data"])
    assert shown["quotes"] == len(api(served, "/v1/quotes", window)[1]["data"]) > 0
    browser.execute_script("window.k2console.zoom(arguments[0], arguments[1]);",
                           seconds(bars[0]["bar_start"]), seconds(bars[-1]["bar_start"]))
    wait_for(browser, "window.k2console.state.market.overlay.trades === 0", what="the overlay to go when zoomed out")


def test_the_view_exports_as_csv_and_parquet(browser: WebDriver, served: str, tmp_path: Path) -> None:
    open_console(browser, served)
    show(browser, "AAA", **DAY, interval="15m")
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    browser.find_element(By.ID, "export-csv").click()
    browser.find_element(By.ID, "export-parquet").click()
    name = f"AAA_15m_{DAYS[1]}"
    deadline = time.monotonic() + 30
    while not ((tmp_path / f"{name}.csv").exists() and (tmp_path / f"{name}.parquet").exists()):
        assert time.monotonic() < deadline, list(tmp_path.iterdir())
        time.sleep(0.1)
    bars = api_bars(served, symbols="AAA", interval="15m", **DAY)
    csv = pacsv.read_csv(tmp_path / f"{name}.csv", convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in ("bar_start", "open", "high", "low", "close", "vwap")}))
    assert csv.to_pylist() == [{**b, "volume": int(b["volume"]), "trades": int(b["trades"])} for b in bars]
    _, parquet = api(served, "/v1/bars", {"symbols": "AAA", "interval": "15m", **DAY},
                     accept="application/vnd.apache.parquet")
    assert pq.read_table(tmp_path / f"{name}.parquet").equals(pq.read_table(io.BytesIO(parquet)))


# ------------------------------------------------------------------------------------------------------ time travel

def test_time_travel_shows_an_older_snapshot_beside_now_with_the_differences(browser: WebDriver, served: str) -> None:
    open_console(browser, served)
    show(browser, "AAA", **DAY)
    browser.find_element(By.ID, "tab-travel").click()
    wait_for(browser, "window.k2console.state.travel.compared > 0", what="the first comparison")
    _, snapshots = api(served, "/v1/snapshots", {"dataset": "trades"})
    oldest = str(snapshots["data"][-1]["snapshot_id"])
    Select(browser.find_element(By.ID, "travel-snapshot")).select_by_value(oldest)
    compared = state(browser, ".travel.compared")
    browser.find_element(By.CSS_SELECTOR, "#travel-form button[type=submit]").click()
    wait_for(browser, f"window.k2console.state.travel.compared > {compared}")
    then = api_bars(served, symbols="AAA", snapshot_id=oldest, **DAY)
    now = api_bars(served, symbols="AAA", **DAY)
    charts = drawn(browser, "travel")
    assert [c["time"] for c in charts["then"]] == [c["time"] for c in candles_of(then)]
    assert chart_candles(charts["now"]) == candles_of(now)
    travel = state(browser, ".travel")
    assert (travel["then"], travel["now"]) == (len(then), len(now))
    assert travel["then"] < travel["now"]  # the count changed: the oldest snapshot held one commit of three
    new = {seconds(b["bar_start"]) for b in now} - {seconds(b["bar_start"]) for b in then}
    assert travel["added"] == len(new) > 0
    coloured = {c["time"] for c in charts["now"] if c.get("color") == "#7cc4ff"}
    assert coloured == new  # the new bars are the ones marked
    assert "bars new since" in browser.find_element(By.ID, "travel-diff").text
    screenshot(browser, "console-time-travel")

    # the newest snapshot is now: nothing differs
    Select(browser.find_element(By.ID, "travel-snapshot")).select_by_value(str(snapshots["data"][0]["snapshot_id"]))
    compared = state(browser, ".travel.compared")
    browser.find_element(By.CSS_SELECTOR, "#travel-form button[type=submit]").click()
    wait_for(browser, f"window.k2console.state.travel.compared > {compared}")
    assert state(browser, ".travel")["added"] == state(browser, ".travel")["changed"] == 0

    # "as of" a wall time before the lake existed: it held nothing then, and every bar is new since
    browser.execute_script("document.getElementById('travel-asof').value = '2000-01-01T00:00:00';")
    compared = state(browser, ".travel.compared")
    browser.find_element(By.CSS_SELECTOR, "#travel-form button[type=submit]").click()
    wait_for(browser, f"window.k2console.state.travel.compared > {compared}")
    assert api_bars(served, symbols="AAA", as_of="2000-01-01T00:00:00Z", **DAY) == []
    travel = state(browser, ".travel")
    assert (travel["then"], travel["added"], travel["asOf"]) == (0, len(now), "2000-01-01T00:00:00Z")
    assert browser.find_element(By.ID, "travel-then-caption").text == "As of 2000-01-01T00:00:00Z"
    no_script_errors(browser)


# ----------------------------------------------------------------------------------------------------------- replay

def test_replay_plays_pauses_resumes_exactly_and_seeks(browser: WebDriver, served: str) -> None:
    open_console(browser, served)
    show(browser, "AAA", **DAY)
    browser.find_element(By.ID, "tab-replay").click()
    Select(browser.find_element(By.ID, "replay-speed")).select_by_value("100")
    browser.find_element(By.ID, "replay-play").click()
    wait_for(browser, "window.k2console.state.replay.candles > 1", what="replayed candles")
    first = state(browser, ".replay")
    time.sleep(1.5)
    later = state(browser, ".replay")
    assert later["events"] > first["events"] and seconds(later["lastTs"]) > seconds(first["lastTs"])  # it advances
    screenshot(browser, "console-replay")
    older_cursor = later["cursor"]  # the cursor after an earlier batch: behind the events drawn since
    wait_for(browser, f"window.k2console.state.replay.events > {later['events']}", what="more events")
    browser.find_element(By.ID, "replay-pause").click()
    wait_for(browser, "!window.k2console.state.replay.playing")
    paused = state(browser, ".replay.events")
    time.sleep(1.0)
    assert state(browser, ".replay.events") == paused  # paused means paused
    # a pause that lands inside a batch resumes from a cursor behind the last event drawn: the stream re-sends
    # events the page has; it must draw each of them once (forced here by resuming from the older cursor)
    browser.execute_script("window.k2console.state.replay.cursor = arguments[0];", older_cursor)

    # resumed at full speed to the end: every trade of the day exactly once, the same bars as the engine's
    Select(browser.find_element(By.ID, "replay-speed")).select_by_value("max")
    browser.find_element(By.ID, "replay-play").click()
    wait_for(browser, "window.k2console.state.replay.ended", what="the end of the replay")
    status, trades = api(served, "/v1/trades", {"symbols": "AAA", "limit": 10_000, **DAY})
    assert status == 200 and trades["next_cursor"] is None
    assert state(browser, ".replay.events") == len(trades["data"])
    bars = api_bars(served, symbols="AAA", **DAY)
    assert chart_candles(drawn(browser, "replay")["candles"]) == candles_of(bars)

    # seeking to the middle shows the bars before that time, then plays on from there
    browser.execute_script("return window.k2console.replay.seekTo(0.75);")
    wait_for(browser, "window.k2console.state.replay.seeks === 1")
    position = state(browser, ".replay.lastTs")
    before = api_bars(served, symbols="AAA", start=DAY["start"], end=position)
    assert state(browser, ".replay.candles") == len(before) > 0
    no_script_errors(browser)


# ---------------------------------------------------------------------------------------------------- pipeline view

def test_the_pipeline_view_shows_landed_rows_lag_dead_letters_gaps_and_commits(
    browser: WebDriver, kafka_settings: Settings
) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    settings = kafka_settings.model_copy(update={"api_rate_limit": "off", "ingest_commit_rows": 1_000,
                                                 "consume_batch": 500})  # several commits: a compaction to show
    ensure_topics(settings, bootstrap)
    trades = generate_trades(dt.date(2026, 3, 2), ["AAA", "BBB"], 3_000, seed=3)
    holed = trades.filter([not (s == "BBB" and 100 <= q < 107) for s, q in
                           zip(trades["symbol"].to_pylist(), trades["sequence"].to_pylist(), strict=True)])
    pipeline.produce_table(settings, bootstrap, holed)
    poison = Producer({"bootstrap.servers": bootstrap})
    poison.produce(settings.topic_trades, b"not avro at all", key=b"AAA")
    assert poison.flush(10) == 0
    landed = pipeline.ingest(settings, bootstrap).rows_landed
    assert landed == holed.num_rows
    compacted = compact(ensure_table(open_catalog(settings), settings, Dataset.TRADES))
    assert compacted.files_before > compacted.files_after > 0
    waiting = generate_trades(dt.date(2026, 3, 3), ["CCC"], 500, seed=4)
    pipeline.produce_table(settings, bootstrap, waiting)  # produced, not yet landed: lag

    with api_server(create_app(settings)) as base:
        open_console(browser, base)
        browser.find_element(By.ID, "tab-pipeline").click()
        wait_for(browser, "window.k2console.state.pipeline.refreshes > 0 && "
                          "window.k2console.state.pipeline.deadLetters !== null", what="the pipeline view")
        view = state(browser, ".pipeline")
        assert view["errors"] == {}
        assert view["landedLastHour"] == landed
        assert view["deadLetters"] == 1
        assert "no Confluent wire-format header" in browser.find_element(By.ID, "dlq-table").text
        _, quality = api(base, "/v1/quality")
        gaps = sum(row["gaps"] for row in quality["data"])
        assert view["gaps"] == gaps > 0
        assert "BBB" in browser.find_element(By.CSS_SELECTOR, "#gaps-table tbody tr").text  # worst first
        _, lag = api(base, "/v1/pipeline/lag")
        assert view["lag"] == sum(t["lag"] for t in lag["topics"])  # the page shows what the API measures
        if settings.broker == "noida":  # Tansu's end offset is the last batch's start + 1 (decision 0001; the strict
            assert view["lag"] == waiting.num_rows  # xfail in tests/test_lag.py): exact on noida (and Kafka) only
        assert [row.text.split()[0] for row in browser.find_elements(By.CSS_SELECTOR, "#lag-table tbody tr")] == [
            t["dataset"] for t in lag["topics"]]
        assert view["health"] == {"catalog": "ok", "kafka": "ok"}
        _, history = api(base, "/v1/snapshots", {"dataset": "trades"})
        shown = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#commits-table tbody tr")]
        assert view["commits"] == len(shown) == min(15, len(history["data"])) > 3
        newest = history["data"][0]
        assert newest["compaction"] and f"compaction ({newest['compaction']} files)" in shown[0]
        assert sum(s["added_rows"] for s in history["data"] if s["operation"] == "append") == landed
        screenshot(browser, "console-pipeline")

        # live: the rest lands, and the view follows without a reload
        refreshes = view["refreshes"]
        poison.produce(settings.topic_trades, b"\x00\x00\x00\x03\xe7" + bytes(12), key=b"CCC")  # schema id 999
        assert poison.flush(10) == 0
        assert pipeline.ingest(settings, bootstrap).rows_landed == waiting.num_rows
        wait_for(browser, f"window.k2console.state.pipeline.refreshes > {refreshes} && "
                          f"window.k2console.state.pipeline.landedLastHour === {landed + waiting.num_rows} && "
                          "window.k2console.state.pipeline.deadLetters === 2", timeout=30, what="the live refresh")
        reasons = browser.find_elements(By.CSS_SELECTOR, "#dlq-table tbody tr")
        assert len(reasons) == 2 and "schema id 999 is not registered" in browser.find_element(By.ID, "dlq-table").text
        if settings.broker == "noida":
            wait_for(browser, "window.k2console.state.pipeline.lag === 0", timeout=30)
        no_script_errors(browser)


# ------------------------------------------------------------------------------------------------------------- auth

@pytest.fixture(scope="module")
def guarded(lake: Settings) -> Iterator[tuple[str, dict[str, str]]]:
    """Auth on, with API keys of three roles and an OIDC issuer (its JWKS on loopback): `keys["token"]` is one of
    its access tokens, for the role reader."""
    jwks = Jwks()
    jwks.keys = [RSAKey.generate_key(2048, parameters={"kid": "console"})]
    settings = lake.model_copy(update={"api_auth": "on", "oidc_issuer": ISSUER, "oidc_audience": AUDIENCE,
                                       "oidc_jwks_url": jwks.url})
    store = KeyStore(settings.keys_db)
    keys = {role: store.create(f"console-{role}", (role,), None)[0] for role in ("reader", "trades-reader", "admin")}
    keys["token"] = oidc_token(jwks.keys[0], sub="carol", roles=["reader"])
    with api_server(create_app(settings)) as base:
        yield base, keys


def sign_in(driver: WebDriver, secret: str) -> None:
    wait_for(driver, "document.getElementById('sign-in-dialog').open", what="the sign-in dialog")
    field = driver.find_element(By.ID, "secret")
    field.clear()
    field.send_keys(secret, Keys.ENTER)


def test_with_auth_on_a_wrong_key_is_refused_and_a_read_only_key_cannot_tag(
    browser: WebDriver, guarded: tuple[str, dict[str, str]]
) -> None:
    base, keys = guarded
    browser.get(base + "/")
    browser.execute_script("sessionStorage.clear();")
    browser.get(base + "/")
    sign_in(browser, "k2_this-is-not-a-key")
    wait_for(browser, "document.getElementById('sign-in-error').textContent", what="the refusal")
    assert "unknown, expired or revoked" in browser.find_element(By.ID, "sign-in-error").text
    sign_in(browser, keys["reader"])
    wait_for(browser, "window.k2console.state.ready && window.k2console.state.market.candles > 0")
    assert "(reader)" in browser.find_element(By.ID, "who").text

    # the secret is in no URL the page requested, and in no storage as plain text
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert urls and not any(keys["reader"] in u for u in urls)
    stored = browser.execute_script("return JSON.stringify([Object.entries(localStorage), "
                                    "Object.entries(sessionStorage), document.cookie]);")
    assert keys["reader"] not in stored and "k2.console.secret" in stored  # kept, encrypted
    browser.refresh()  # signed in once: a reload of the tab does not ask again
    wait_for(browser, "window.k2console.state.ready && window.k2console.state.me")
    assert state(browser, ".me.roles") == ["reader"]

    # admin actions: the read-only key sees why not, and the server refuses it whatever the page does
    browser.find_element(By.ID, "tab-travel").click()
    assert browser.find_element(By.ID, "tag-submit").get_attribute("disabled")
    assert "admin action" in browser.find_element(By.ID, "tag-result").text
    _, snapshots = api(base, "/v1/snapshots", {"dataset": "trades"}, key=keys["reader"])
    snapshot = snapshots["data"][-1]["snapshot_id"]
    forged = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/v1/snapshots/tags', {method: 'POST', headers: {'X-API-Key': arguments[0], "
        "'Content-Type': 'application/json'}, body: JSON.stringify({snapshot_id: arguments[1], name: 'x'})})"
        ".then(r => r.json().then(b => done([r.status, b])));", keys["reader"], snapshot)
    assert forged[0] == 403 and forged[1]["error"]["details"]["missing"] == "admin"
    browser.find_element(By.ID, "sign-out").click()

    # an entitlement the caller lacks is said, not hidden: trades-reader has no quotes and no pipeline view
    sign_in(browser, keys["trades-reader"])
    wait_for(browser, "window.k2console.state.ready && window.k2console.state.me")
    assert "do not grant quotes" in browser.find_element(By.ID, "banner").text
    browser.find_element(By.ID, "tab-pipeline").click()
    wait_for(browser, "window.k2console.state.pipeline.errors.lag", what="the refusal of the lag")
    assert "Not available to you" in browser.find_element(By.ID, "lag-table").text
    assert "metrics = true" in state(browser, ".pipeline.errors.lag")
    browser.find_element(By.ID, "sign-out").click()

    # the admin tags the snapshot from the page
    sign_in(browser, keys["admin"])
    wait_for(browser, "window.k2console.state.ready && window.k2console.state.me")
    browser.find_element(By.ID, "tab-travel").click()
    wait_for(browser, "window.k2console.state.travel.snapshots")
    Select(browser.find_element(By.ID, "travel-snapshot")).select_by_value(str(snapshot))
    browser.find_element(By.ID, "tag-name").send_keys("close-of-day-1")
    browser.find_element(By.ID, "tag-submit").click()
    wait_for(browser, "window.k2console.state.travel.tagResult", what="the tag result")
    assert "Tagged" in state(browser, ".travel.tagResult")
    _, after = api(base, "/v1/snapshots", {"dataset": "trades"}, key=keys["admin"])
    assert {s["snapshot_id"]: s["tags"] for s in after["data"]}[snapshot] == "close-of-day-1"
    browser.find_element(By.ID, "sign-out").click()

    # an access token of the identity provider signs in as well (sent as a bearer token, never in a URL)
    sign_in(browser, keys["token"])
    wait_for(browser, "window.k2console.state.ready && window.k2console.state.market.candles > 0")
    assert state(browser, ".me")["caller"] == "token:carol" and "token:carol (reader)" in browser.find_element(
        By.ID, "who").text
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert not any(keys["token"][:40] in u for u in urls)
    browser.find_element(By.ID, "sign-out").click()
    no_script_errors(browser)


# ---------------------------------------------------------------------------------------------------- accessibility

CONTRAST = """
function luminance(rgb) {
  const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function rgba(text) { return text.match(/[\\d.]+/g).map(Number); }
function background(element) {
  for (let e = element; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
  }
  return [255, 255, 255];
}
const failures = [];
for (const element of document.querySelectorAll('body *')) {
  const own = [...element.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || !element.getClientRects().length || element.closest('[hidden]')) continue;
  const style = getComputedStyle(element);
  if (style.visibility === 'hidden') continue;
  const fg = luminance(rgba(style.color).slice(0, 3));
  const bg = luminance(background(element));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.66 && style.fontWeight >= 700);
  if (ratio < (large ? 3 : 4.5)) {
    failures.push(`${element.tagName}#${element.id} "${element.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
}
return failures;
"""

UNLABELLED = """
return [...document.querySelectorAll('input, select, button, [role=tab], [role=img]')].filter((e) => {
  const named = e.labels && e.labels.length ? [...e.labels].some((l) => l.textContent.trim()) : false;
  return !(named || e.getAttribute('aria-label') || (e.tagName === 'BUTTON' && e.textContent.trim()));
}).map((e) => e.outerHTML.slice(0, 80));
"""


def test_accessibility_labels_keyboard_and_contrast(browser: WebDriver, served: str) -> None:
    open_console(browser, served)
    assert browser.execute_script(UNLABELLED) == []
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    for tab in ("market", "travel", "replay", "pipeline"):
        browser.execute_script("window.k2console.selectTab(arguments[0]);", tab)
        time.sleep(0.5)
        assert browser.execute_script(CONTRAST) == [], tab

    # the keyboard alone: skip link first, then the tabs (arrows move between them), then the controls
    browser.execute_script("window.k2console.selectTab('market'); document.activeElement.blur();")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "tab-market"
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle;")
    assert outline not in ("none", "")  # the focus is visible
    browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    assert browser.switch_to.active_element.get_attribute("id") == "tab-travel"
    assert browser.find_element(By.ID, "tab-travel").get_attribute("aria-selected") == "true"
    assert not browser.find_element(By.ID, "view-travel").get_attribute("hidden")
    browser.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    assert browser.switch_to.active_element.get_attribute("id") == "tab-market"
    # Tab on through the selection to Show, and Enter loads the view
    focused: list[str] = []
    for _ in range(40):  # a date-time field takes a Tab per part (day, month, year, hours …)
        browser.switch_to.active_element.send_keys(Keys.TAB)
        now = browser.switch_to.active_element.get_attribute("id") or ""
        if not focused or focused[-1] != now:
            focused.append(now)
        if now == "show":
            break
    assert focused[:7] == ["symbol", "compare", "start", "end", "interval", "adjust", "show"], focused
    loads = state(browser, ".market.loads")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(browser, f"window.k2console.state.market.loads > {loads}", what="Enter on Show")
    no_script_errors(browser)
