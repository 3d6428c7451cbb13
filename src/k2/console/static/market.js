// Market view: candles, volume and VWAP for the selection; trades and the spread when zoomed in; a paged trades
// table; export of the bars shown.
import { ApiFailure, json, price, request, rows, seconds } from "./api.js";
import { compareWith, priceChart, show } from "./charts.js";
import { state } from "./state.js";

const PAGE = 100;
const OVERLAY_SECONDS = 2 * 3600;  // ticks are overlaid when the visible range is at most this long
const OVERLAY_MAX = 10000;

let view = null;
let pages = [null];  // page tokens: pages[i] fetches page i
let overlayTimer = null;
let overlayAbort = null;

export function intervalSeconds(text) {
  const match = /^(\d+)(s|m|h|d)$/.exec(text);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[match[2]];
  return Number(match[1]) * unit;
}

export function init() {
  view = priceChart(document.getElementById("market-chart"));
  view.chart.timeScale().subscribeVisibleTimeRangeChange(() => {
    clearTimeout(overlayTimer);
    overlayTimer = setTimeout(overlayTicks, 250);
  });
  document.getElementById("trades-next").addEventListener("click", () => tradesPage(state.market.page + 1));
  document.getElementById("trades-prev").addEventListener("click", () => tradesPage(state.market.page - 1));
  document.getElementById("export-csv").addEventListener("click", () => exportBars("csv"));
  document.getElementById("export-parquet").addEventListener("click", () => exportBars("parquet"));
}

export function barParams(selection, extra = {}) {
  return { symbols: selection.symbol, interval: selection.interval, start: selection.start, end: selection.end,
    adjust: selection.adjust, ...extra };
}

export async function load(selection) {
  const legend = document.getElementById("market-legend");
  legend.textContent = "Loading…";
  state.market.loading = true;
  try {
    pages = [null];
    state.market.selection = { ...selection };
    const other = selection.compare && selection.compare !== selection.symbol ? selection.compare : null;
    const [bars, , compared] = await Promise.all([rows("/v1/bars", barParams(selection)), tradesPage(0),
      other ? rows("/v1/bars", barParams({ ...selection, symbol: other })) : []]);
    show(view, bars, intervalSeconds(selection.interval));
    compareWith(view, other, compared);
    state.market.compare = { symbol: other, points: compared.length };
    state.market.candles = bars.length;
    state.market.bars = bars.map((bar) => bar.bar_start);
    const last = bars[bars.length - 1];
    legend.textContent = bars.length
      ? `${selection.symbol} · ${selection.interval} bars · ${bars.length.toLocaleString("en")} candles · last close ${price(last.close)} · `
        + `adjustment: ${selection.adjust}`
      : `${selection.symbol}: no trades between ${selection.start} and ${selection.end}`;
    document.getElementById("market-chart").setAttribute("aria-label",
      `Candlestick chart of ${selection.symbol}, ${bars.length} ${selection.interval} bars with volume and VWAP`);
  } catch (error) {
    state.market.candles = 0;
    legend.textContent = describe(error);
  } finally {
    state.market.loading = false;
    state.market.loads += 1;
  }
}

export function describe(error) {
  if (error instanceof ApiFailure && error.status === 403) return `Not available to you: ${error.message}`;
  return error instanceof ApiFailure ? error.message : String(error);
}

async function tradesPage(index) {
  const selection = state.market.selection;
  if (!selection || index < 0 || index >= pages.length) return;
  const body = document.querySelector("#trades-table tbody");
  try {
    const page = await json("/v1/trades", { params: { symbols: selection.symbol, start: selection.start,
      end: selection.end, limit: PAGE, page_token: pages[index] } });
    if (page.next_cursor && pages.length === index + 1) pages.push(page.next_cursor);
    state.market.page = index;
    state.market.tradeRows = page.data.length;
    body.replaceChildren(...page.data.map(tradeRow));
    document.getElementById("trades-prev").disabled = index === 0;
    document.getElementById("trades-next").disabled = !page.next_cursor;
    document.getElementById("trades-page").textContent = page.data.length
      ? `Page ${index + 1}: trades ${(index * PAGE + 1).toLocaleString("en")}–${(index * PAGE + page.data.length).toLocaleString("en")}`
      : "No trades in this range";
  } catch (error) {
    body.replaceChildren(messageRow(describe(error), 5));
  }
}

function tradeRow(trade) {
  const row = document.createElement("tr");
  for (const [text, numeric] of [[trade.ts.replace("T", " ").replace("Z", ""), false], [trade.symbol, false],
    [price(trade.price), true], [Number(trade.size).toLocaleString("en"), true], [trade.sequence, true]]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (numeric) cell.className = "num";
    row.append(cell);
  }
  return row;
}

export function messageRow(text, columns) {
  const row = document.createElement("tr");
  const cell = document.createElement("td");
  cell.colSpan = columns;
  cell.textContent = text;
  row.append(cell);
  return row;
}

async function overlayTicks() {
  const selection = state.market.selection;
  const range = view.chart.timeScale().getVisibleRange();
  if (overlayAbort) overlayAbort.abort();
  if (!selection || !range || range.to - range.from > OVERLAY_SECONDS || view.intervalSeconds > 300) {
    view.overlay.set([], [], view.intervalSeconds);
    state.market.overlay = { trades: 0, quotes: 0 };
    return;
  }
  overlayAbort = new AbortController();
  const span = { symbols: selection.symbol, start: new Date(range.from * 1000).toISOString(),
    end: new Date((range.to + view.intervalSeconds) * 1000).toISOString(), limit: OVERLAY_MAX };
  state.market.visible = { start: span.start, end: span.end };
  try {
    const [trades, quotes] = await Promise.all([
      json("/v1/trades", { params: span, signal: overlayAbort.signal }),
      json("/v1/quotes", { params: span, signal: overlayAbort.signal }).catch(() => ({ data: [] })),
    ]);
    const tradePoints = trades.data.map((t) => [seconds(t.ts), Number(t.price)]);
    const quotePoints = quotes.data.map((q) => [seconds(q.ts), Number(q.bid_price), Number(q.ask_price)]);
    view.overlay.set(tradePoints, quotePoints, view.intervalSeconds);
    state.market.overlay = { trades: tradePoints.length, quotes: quotePoints.length };
  } catch (error) {
    if (error.name !== "AbortError") state.market.overlay = { trades: 0, quotes: 0, error: describe(error) };
  }
}

// What the chart draws (the tests compare it with the API's answer).
export function drawn() {
  return { candles: view.candles.data(), vwap: view.vwap.data(), volume: view.volume.data(),
    compare: view.compare.data() };
}

// Zoom the chart to [from, to) (seconds): what a user does with the mouse wheel; the tests use it too.
export function zoom(from, to) {
  view.chart.timeScale().setVisibleRange({ from, to });
}

async function exportBars(format) {
  const selection = state.market.selection;
  if (!selection) return;
  const name = `${selection.symbol}_${selection.interval}_${selection.start.slice(0, 10)}`;
  try {
    if (format === "parquet") {
      const response = await request("/v1/bars", { params: barParams(selection), accept: "application/vnd.apache.parquet" });
      download(await response.blob(), `${name}.parquet`);
    } else {
      const bars = await rows("/v1/bars", barParams(selection));
      const columns = ["symbol", "bar_start", "open", "high", "low", "close", "volume", "trades", "vwap"];
      const lines = [columns.join(","), ...bars.map((bar) => columns.map((c) => csvField(bar[c])).join(","))];
      download(new Blob([`${lines.join("\n")}\n`], { type: "text/csv" }), `${name}.csv`);
    }
    state.market.exports += 1;
  } catch (error) {
    document.getElementById("market-legend").textContent = describe(error);
  }
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replaceAll("\"", "\"\"")}"` : text;
}

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

