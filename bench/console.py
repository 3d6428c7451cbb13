"""The web console's page weight and first-render time, in Debian's headless chromium against `k2 serve`'s app on a
generated lake, with the API's own answer time for the same bars as the baseline (the part no page can avoid).

    .venv/bin/python bench/console.py --runs 7

First render = navigation start → the market chart holding its candles (the default view: the first symbol's last
day of 1-minute bars, and its first page of trades). Cold = a new browser profile (nothing cached); warm = a reload.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from tests.test_api import api_server
from tests.test_replay import _build

from k2.api.app import create_app
from k2.console import STATIC

FIRST_RENDER = """
const done = arguments[arguments.length - 1];
const wait = () => {
  const s = window.k2console && window.k2console.state;
  const page = performance.getEntriesByType('navigation')[0];
  if (s && s.market.candles > 0 && s.market.tradeRows > 0) done([performance.now(), page.responseStart]);
  else setTimeout(wait, 5);
};
wait();
"""

BARS_ALONE = """
const done = arguments[arguments.length - 1];
const url = arguments[0];
const started = performance.now();
fetch(url, {cache: 'no-store'}).then(r => r.json()).then(() => done(performance.now() - started));
"""


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    driver.set_script_timeout(60)
    return driver


def weight() -> list[tuple[str, int, int]]:
    files = [STATIC / "index.html", STATIC / "app.css", *sorted(STATIC.glob("*.js")),
             STATIC / "vendor" / "lightweight-charts.standalone.production.mjs"]
    rows = [(f.relative_to(STATIC).as_posix(), f.stat().st_size, len(gzip.compress(f.read_bytes(), 6))) for f in files]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="k2-console-bench-")) / "home"
    settings, trades, quotes = _build(home)
    settings = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1", "api_rate_limit": "off"})
    cold, cold_from_page, warm, alone, transferred = [], [], [], [], []
    with api_server(create_app(settings)) as base:
        for _ in range(args.runs):
            driver = browser()  # a fresh profile: nothing cached
            try:
                driver.get(base + "/")
                rendered, first_byte = driver.execute_async_script(FIRST_RENDER)
                cold.append(rendered)
                cold_from_page.append(rendered - first_byte)
                transferred.append(driver.execute_script(
                    "return performance.getEntriesByType('navigation')[0].transferSize + performance"
                    ".getEntriesByType('resource').filter(e => e.name.includes('/console/'))"
                    ".reduce((a, e) => a + e.transferSize, 0);"))
                selection = driver.execute_script("return window.k2console.state.market.selection;")
                query = f"/v1/bars?symbols={selection['symbol']}&interval=1m&start={selection['start']}" \
                        f"&end={selection['end']}&adjust=none"
                alone.append(driver.execute_async_script(BARS_ALONE, base + query))
                driver.refresh()
                warm.append(driver.execute_async_script(FIRST_RENDER)[0])
            finally:
                driver.quit()
            time.sleep(0.2)
    base_ms = statistics.median(alone)
    print(f"lake: {trades.num_rows:,} trades, {quotes.num_rows:,} quotes; {args.runs} runs, p50\n")
    print("| what | p50 ms | ÷ the bars request alone |")
    print("|---|---|---|")
    print(f"| the API's 1-min bars of the default view, fetched alone (baseline) | {base_ms:.1f} | 1.0 |")
    for name, samples in (("console first render, cold (new browser profile)", cold),
                          ("… of which after the page's first byte arrived", cold_from_page),
                          ("console first render, warm (reload)", warm)):
        print(f"| {name} | {statistics.median(samples):.1f} | {statistics.median(samples) / base_ms:.1f} |")
    kilobytes = statistics.median(transferred) / 1024
    print(f"\ntransferred on a cold load (HTML + assets, gzip on the wire): {kilobytes:.1f} kB")
    print("\n| file | bytes | gzip bytes |")
    print("|---|---|---|")
    rows = weight()
    for name, raw, packed in rows:
        print(f"| {name} | {raw:,} | {packed:,} |")
    print(f"| total | {sum(r[1] for r in rows):,} | {sum(r[2] for r in rows):,} |")


if __name__ == "__main__":
    main()
