// Time travel: the chart as the lake held it at a snapshot (or a wall time) beside the chart now, differences marked.
import { ApiFailure, isoOfInput, json, request, rows, seconds } from "./api.js";
import { candleOf, priceChart, show } from "./charts.js";
import { barParams, describe, intervalSeconds } from "./market.js";
import { state } from "./state.js";

let then = null;
let now = null;

export function drawn() {
  charts();
  return { then: then.candles.data(), now: now.candles.data(), nowMarkers: now.markers.markers() };
}

export function init() {
  document.getElementById("tag-form").addEventListener("submit", (event) => { event.preventDefault(); tag(); });
}

// Made when first needed: a chart costs a layout and a first paint, which the market view should not wait for.
function charts() {
  if (then) return;
  then = priceChart(document.getElementById("travel-then"));
  now = priceChart(document.getElementById("travel-now"));
}

export async function loadSnapshots() {
  const select = document.getElementById("travel-snapshot");
  try {
    const snapshots = (await json("/v1/snapshots", { params: { dataset: "trades" } })).data;
    const options = snapshots.map((s) => {
      const option = document.createElement("option");
      option.value = s.snapshot_id;
      const what = s.compaction ? `compaction ${s.compaction} files` : `${s.operation} +${Number(s.added_rows).toLocaleString("en")} rows`;
      option.textContent = `${s.committed_at.replace("T", " ").slice(0, 19)} · ${what}${s.tags ? ` · tag ${s.tags}` : ""}`;
      return option;
    });
    const none = document.createElement("option");
    none.value = "";
    none.textContent = "— choose a snapshot —";
    select.replaceChildren(none, ...options);
    state.travel.snapshots = snapshots.map((s) => String(s.snapshot_id));
    return snapshots;
  } catch (error) {
    document.getElementById("travel-diff").textContent = describe(error);
  }
}

export async function compare(selection) {
  const snapshot = document.getElementById("travel-snapshot").value;
  const asOf = isoOfInput(document.getElementById("travel-asof").value);
  const diff = document.getElementById("travel-diff");
  if (!snapshot && !asOf) {
    diff.textContent = "Choose a snapshot or an \"as of\" time to compare with now.";
    return;
  }
  charts();
  const past = asOf ? { as_of: asOf } : { snapshot_id: snapshot };
  diff.textContent = "Loading…";
  try {
    const [old, current] = await Promise.all([rows("/v1/bars", barParams(selection, past)),
      rows("/v1/bars", barParams(selection))]);
    const step = intervalSeconds(selection.interval);
    show(then, old, step);
    show(now, current, step);
    const found = differences(old, current);
    now.candles.setData(current.map((bar) => colouredCandle(bar, found.kinds.get(bar.bar_start))));
    now.markers.setMarkers(found.markersNow.length <= MAX_MARKERS ? found.markersNow : []);
    then.markers.setMarkers(found.markersThen.length <= MAX_MARKERS ? found.markersThen : []);
    if (current.length) {  // the same time window on both sides
      const range = { from: seconds(current[0].bar_start), to: seconds(current[current.length - 1].bar_start) };
      for (const side of [then, now]) if (side.bars.length) side.chart.timeScale().setVisibleRange(range);
    }
    Object.assign(state.travel, { then: old.length, now: current.length, added: found.added, changed: found.changed,
      removed: found.removed, snapshot: snapshot || null, asOf, error: null });
    document.getElementById("travel-then-caption").textContent = asOf ? `As of ${asOf}` : `Snapshot ${snapshot}`;
    diff.textContent = `Then ${old.length.toLocaleString("en")} candles, now ${current.length.toLocaleString("en")}: `
      + `${found.added} bars new since (blue), ${found.changed} changed (amber), ${found.removed} gone (marked on the left).`;
  } catch (error) {
    state.travel.error = describe(error);
    diff.textContent = state.travel.error;
  } finally {
    state.travel.compared += 1;
  }
}

const FIELDS = ["open", "high", "low", "close", "volume", "trades"];
const MAX_MARKERS = 60;  // beyond this many, colour alone marks the differences (markers would hide the candles)
const NEW = "#7cc4ff";
const CHANGED = "#ffcc66";

// Bars new since then are drawn in blue, changed ones in amber.
function colouredCandle(bar, kind) {
  const candle = candleOf(bar);
  if (!kind) return candle;
  const color = kind === "new" ? NEW : CHANGED;
  return { ...candle, color, wickColor: color, borderColor: color };
}

function differences(old, current) {
  const before = new Map(old.map((bar) => [bar.bar_start, bar]));
  const after = new Set(current.map((bar) => bar.bar_start));
  const markersNow = [];
  const kinds = new Map();
  let added = 0;
  let changed = 0;
  for (const bar of current) {
    const was = before.get(bar.bar_start);
    if (!was) {
      added += 1;
      kinds.set(bar.bar_start, "new");
      markersNow.push({ time: seconds(bar.bar_start), position: "aboveBar", color: "#7cc4ff", shape: "arrowDown", text: "new" });
    } else if (FIELDS.some((f) => String(was[f]) !== String(bar[f]))) {
      changed += 1;
      kinds.set(bar.bar_start, "changed");
      markersNow.push({ time: seconds(bar.bar_start), position: "aboveBar", color: "#ffcc66", shape: "circle", text: "changed" });
    }
  }
  const gone = old.filter((bar) => !after.has(bar.bar_start));
  const markersThen = gone.map((bar) => ({ time: seconds(bar.bar_start), position: "belowBar", color: "#ff6b6b", shape: "arrowUp", text: "gone" }));
  return { added, changed, removed: gone.length, markersNow, markersThen, kinds };
}

async function tag() {
  const result = document.getElementById("tag-result");
  const snapshot = document.getElementById("travel-snapshot").value;
  const name = document.getElementById("tag-name").value.trim();
  if (!snapshot || !name) {
    result.textContent = "Choose a snapshot and a tag name first.";
    return;
  }
  try {
    await request("/v1/snapshots/tags", { method: "POST", body: { dataset: "trades", snapshot_id: snapshot, name } });  // the id as its exact digits
    result.textContent = `Tagged snapshot ${snapshot} as ${name}: expiry keeps it.`;
    await loadSnapshots();
    document.getElementById("travel-snapshot").value = snapshot;
  } catch (error) {
    result.textContent = error instanceof ApiFailure && error.status === 403
      ? `Not allowed: ${error.message}` : describe(error);
  }
  state.travel.tagResult = result.textContent;
}

export function adminAllowed(me) {
  const button = document.getElementById("tag-submit");
  const result = document.getElementById("tag-result");
  button.disabled = !me.admin;
  result.textContent = me.admin ? "" : `Tagging snapshots is an admin action; you are ${me.caller} (${me.roles.join(", ") || "no roles"}).`;
}
