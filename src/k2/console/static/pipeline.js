// Pipeline view, refreshed live from the API: rows landed per minute (from the tables' snapshots), consumer lag and
// dead letters (measured at the broker), sequence gaps by symbol (quality counts), the latest commits and
// compactions, and the health of the broker and the catalog.
import { ApiFailure, json } from "./api.js";
import { smallHistogram } from "./charts.js";
import { describe, messageRow } from "./market.js";
import { state } from "./state.js";

const REFRESH_MS = 5000;
const MINUTES = 60;
let landed = null;
let timer = null;
let active = false;

export function init() {
  document.getElementById("pipeline-live").addEventListener("change", schedule);
}

export function activate(on) {
  active = on;
  schedule();
  if (on) refresh();
}

function schedule() {
  clearInterval(timer);
  if (active && document.getElementById("pipeline-live").checked) timer = setInterval(refresh, REFRESH_MS);
}

function cells(values, numeric = []) {
  const row = document.createElement("tr");
  values.forEach((value, i) => {
    const cell = document.createElement("td");
    cell.textContent = value;
    if (numeric.includes(i)) cell.className = "num";
    row.append(cell);
  });
  return row;
}

const n = (value) => Number(value).toLocaleString("en");

async function section(name, work, table, columns) {
  try {
    await work();
    delete state.pipeline.errors[name];
  } catch (error) {
    const text = error instanceof ApiFailure && error.status === 403 ? `Not available to you: ${error.message}` : describe(error);
    state.pipeline.errors[name] = text;
    if (table) document.querySelector(`#${table} tbody`).replaceChildren(messageRow(text, columns));
  }
}

export async function refresh() {
  await Promise.all([
    section("health", health),
    section("snapshots", snapshots, "commits-table", 6),
    section("lag", lag, "lag-table", 5),
    section("deadLetters", deadLetters, "dlq-table", 2),
    section("gaps", gaps, "gaps-table", 5),
  ]);
  state.pipeline.refreshes += 1;
  document.getElementById("pipeline-refreshed").textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC`;
}

async function health() {
  const response = await fetch("/health/ready", { cache: "no-store", credentials: "omit" });
  const body = await response.json();
  state.pipeline.health = body.checks;
  const items = Object.entries(body.checks || {}).map(([name, result]) => {
    const item = document.createElement("li");
    const label = { kafka: "Broker", catalog: "Catalog" }[name] || name;
    item.className = result === "ok" ? "ok" : "bad";
    item.textContent = `${label}: ${result === "ok" ? "up" : result}`;
    return item;
  });
  document.getElementById("health").replaceChildren(...items);
}

async function snapshots() {
  const [trades, quotes] = await Promise.all(["trades", "quotes"].map((dataset) =>
    json("/v1/snapshots", { params: { dataset } }).then((page) => page.data.map((s) => ({ ...s, dataset })))));
  const all = [...trades, ...quotes].sort((a, b) => b.committed_at.localeCompare(a.committed_at));
  const now = Math.floor(Date.now() / 60000) * 60;
  const perMinute = new Map();
  for (let m = now - (MINUTES - 1) * 60; m <= now; m += 60) perMinute.set(m, 0);
  for (const s of all) {
    const minute = Math.floor(Date.parse(s.committed_at) / 60000) * 60;
    if (s.operation === "append" && perMinute.has(minute)) perMinute.set(minute, perMinute.get(minute) + Number(s.added_rows));
  }
  if (!landed) landed = smallHistogram(document.getElementById("landed-chart"));  // made when first needed
  landed.series.setData([...perMinute].map(([time, value]) => ({ time, value })));
  const total = [...perMinute.values()].reduce((a, b) => a + b, 0);
  state.pipeline.landedLastHour = total;
  const latest = all.find((s) => s.operation === "append");
  document.getElementById("landed-total").textContent = `${n(total)} rows landed in the last hour`
    + (latest ? `; latest commit ${latest.committed_at.replace("T", " ").slice(0, 19)} UTC (${latest.dataset})` : "; nothing landed yet");
  const shown = all.slice(0, 15);
  state.pipeline.commits = shown.length;
  document.querySelector("#commits-table tbody").replaceChildren(...shown.map((s) => cells([
    s.committed_at.replace("T", " ").slice(0, 19), s.dataset, s.compaction ? `compaction (${s.compaction} files)` : s.operation,
    n(s.added_rows), n(s.total_rows), `${s.snapshot_id}${s.tags ? ` (tag ${s.tags})` : ""}`], [3, 4])));
}

async function lag() {
  const found = await json("/v1/pipeline/lag");
  state.pipeline.lag = found.topics.reduce((sum, t) => sum + t.lag, 0);
  document.getElementById("lag-note").textContent = found.broker_up ? "" : "The broker did not answer: no lag figure.";
  document.querySelector("#lag-table tbody").replaceChildren(...found.topics.map((t) =>
    cells([t.dataset, t.group, n(t.end_offset), n(t.committed), n(t.lag)], [2, 3, 4])));
}

async function deadLetters() {
  const found = await json("/v1/pipeline/dead-letters", { params: { latest: 5 } });
  state.pipeline.deadLetters = found.count;
  const latest = found.latest[0];
  document.getElementById("dlq-count").textContent = found.count
    ? `${n(found.count)} record${found.count === 1 ? "" : "s"} could not be landed; the latest at `
      + `${latest.failed_at.replace("T", " ").slice(0, 19)} UTC, from ${latest.source}` : "No dead letters.";
  document.querySelector("#dlq-table tbody").replaceChildren(...found.by_reason.slice(0, 10).map((r) => cells([r.reason, n(r.count)], [1])));
}

async function gaps() {
  const quality = (await json("/v1/quality")).data;
  const bySymbol = new Map();
  for (const row of quality) {
    const key = `${row.dataset} ${row.symbol}`;
    const sum = bySymbol.get(key) || { dataset: row.dataset, symbol: row.symbol, gaps: 0, missing: 0, duplicates: 0 };
    sum.gaps += Number(row.gaps);
    sum.missing += Number(row.missing);
    sum.duplicates += Number(row.duplicates);
    bySymbol.set(key, sum);
  }
  const ranked = [...bySymbol.values()].sort((a, b) => b.gaps - a.gaps || b.missing - a.missing || a.symbol.localeCompare(b.symbol));
  state.pipeline.gaps = ranked.reduce((sum, r) => sum + r.gaps, 0);
  const body = document.querySelector("#gaps-table tbody");
  body.replaceChildren(...ranked.slice(0, 20).map((r) => cells([r.dataset, r.symbol, n(r.gaps), n(r.missing), n(r.duplicates)], [2, 3, 4])));
  if (!ranked.length) body.replaceChildren(messageRow("No quality counts yet.", 5));
}
