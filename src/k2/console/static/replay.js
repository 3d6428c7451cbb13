// Replay: the API's replay stream (SSE, exact event order, paced at 1x/10x/100x) drawn as it arrives. Pause keeps the
// stream's cursor and resumes right after the last event shown; seeking restarts from a chosen time.
import { events, rows, seconds } from "./api.js";
import { priceChart, show } from "./charts.js";
import { describe, intervalSeconds } from "./market.js";
import { state } from "./state.js";

let view = null;
let selection = null;
let abort = null;
let bars = [];
let dirtyFrom = Infinity;
let lastKey = null;  // [micros, sequence] of the last event drawn: events up to it are skipped on resume
let position = null;  // ISO time the next play starts from (when there is no cursor)
let flushTimer = null;

export function drawn() {
  return { candles: chart().candles.data() };
}

// Made when first needed (see travel.js).
function chart() {
  if (!view) {
    view = priceChart(document.getElementById("replay-chart"));
    clear();
  }
  return view;
}

function clear() {
  show(view, [], intervalSeconds(selection.interval));
  view.chart.timeScale().applyOptions({ barSpacing: 8, rightOffset: 4 });
}

export function init() {
  document.getElementById("replay-play").addEventListener("click", () => play());
  document.getElementById("replay-pause").addEventListener("click", () => pause());
  const seek = document.getElementById("replay-seek");
  seek.addEventListener("change", () => seekTo(Number(seek.value) / Number(seek.max)));
}

export function select(chosen) {
  stop();
  selection = { ...chosen };
  position = selection.start;
  state.replay.cursor = null;
  lastKey = null;
  bars = [];
  if (view) clear();
  Object.assign(state.replay, { events: 0, candles: 0, lastTs: null, ended: false, error: null });
  document.getElementById("replay-seek").value = "0";
  status(`Ready: ${selection.symbol} from ${selection.start}. Press Play.`);
}

function shown(iso) { return iso.replace("T", " ").replace(/(\+00:00|Z)$/, ""); }

function status(text) { document.getElementById("replay-status").textContent = text; }

function micros(iso) {
  const fraction = /\.(\d+)/.exec(iso);
  const whole = Date.parse(iso.replace(/\.\d+/, ""));
  return whole * 1000 + (fraction ? Number(fraction[1].padEnd(6, "0").slice(0, 6)) : 0);
}

function after(key, other) {
  return key[0] > other[0] || (key[0] === other[0] && key[1] > other[1]);
}

export async function play() {
  if (!selection || state.replay.playing) return;
  const speed = document.getElementById("replay-speed").value;
  chart();
  abort = new AbortController();
  state.replay.playing = true;
  state.replay.ended = false;
  document.getElementById("replay-play").disabled = true;
  document.getElementById("replay-pause").disabled = false;
  const params = state.replay.cursor
    ? { cursor: state.replay.cursor, speed }
    : { symbols: selection.symbol, datasets: "trades", start: position, end: selection.end, speed };
  status(`Replaying ${selection.symbol} at ${speed === "max" ? "full speed" : `${speed}×`}…`);
  flushTimer = setInterval(flush, 50);
  try {
    for await (const message of events("/v1/replay", params, abort.signal)) {
      if (message.event === "cursor") state.replay.cursor = JSON.parse(message.data);
      else if (message.event === "end") { state.replay.ended = true; break; }
      else if (message.event === "message") take(JSON.parse(message.data));
    }
    flush();
    if (state.replay.ended) status(`End of the range: ${state.replay.events.toLocaleString("en")} trades replayed.`);
  } catch (error) {
    if (error.name !== "AbortError") {
      state.replay.error = describe(error);
      status(state.replay.error);
    }
  } finally {
    clearInterval(flushTimer);
    flush();
    state.replay.playing = false;
    document.getElementById("replay-play").disabled = false;
    document.getElementById("replay-pause").disabled = true;
    if (state.replay.ended) state.replay.cursor = null;
  }
}

function take(trade) {
  const key = [micros(trade.ts), Number(trade.sequence)];
  if (lastKey && !after(key, lastKey)) return;  // already drawn before a pause
  lastKey = key;
  const step = intervalSeconds(selection.interval);
  const time = Math.floor(key[0] / 1e6 / step) * step;
  const price = Number(trade.price);
  const size = Number(trade.size);
  let bar = bars[bars.length - 1];
  if (!bar || bar.time !== time) {
    bar = { time, open: price, high: price, low: price, close: price, volume: 0, value: 0 };
    bars.push(bar);
  }
  bar.high = Math.max(bar.high, price);
  bar.low = Math.min(bar.low, price);
  bar.close = price;
  bar.volume += size;
  bar.value += price * size;
  dirtyFrom = Math.min(dirtyFrom, bars.length - 1);
  state.replay.events += 1;
  state.replay.lastTs = trade.ts;
}

function flush() {
  if (dirtyFrom === Infinity || !view) return;
  for (let i = dirtyFrom; i < bars.length; i += 1) {
    const bar = bars[i];
    view.candles.update({ time: bar.time, open: bar.open, high: bar.high, low: bar.low, close: bar.close });
    view.volume.update({ time: bar.time, value: bar.volume,
      color: bar.close >= bar.open ? "rgba(63,182,139,0.5)" : "rgba(255,107,107,0.5)" });
  }
  dirtyFrom = Infinity;
  state.replay.candles = bars.length;
  if (state.replay.lastTs) {
    const start = seconds(selection.start);
    const end = seconds(selection.end);
    const seek = document.getElementById("replay-seek");
    seek.value = String(Math.round(((seconds(state.replay.lastTs) - start) / (end - start)) * Number(seek.max)));
    seek.setAttribute("aria-valuetext", state.replay.lastTs);
    if (state.replay.playing) status(`Replaying ${selection.symbol}: at ${shown(state.replay.lastTs)} UTC · `
      + `${state.replay.events.toLocaleString("en")} trades · ${bars.length} candles`);
  }
}

export function pause() {
  if (!state.replay.playing) return;
  abort.abort();
  status(`Paused at ${shown(state.replay.lastTs || selection.start)} UTC. Play resumes here.`);
}

function stop() {
  if (abort) abort.abort();
}

// Seek to a fraction of the range: the chart shows the bars before that time, and play continues from it.
export async function seekTo(fraction) {
  if (!selection) return;
  const wasPlaying = state.replay.playing;
  stop();
  while (state.replay.playing) await new Promise((resolve) => setTimeout(resolve, 20));
  const start = seconds(selection.start);
  const end = seconds(selection.end);
  const step = intervalSeconds(selection.interval);
  const target = Math.floor((start + fraction * (end - start)) / step) * step;  // on a bar boundary
  position = new Date(target * 1000).toISOString();
  state.replay.cursor = null;
  try {
    const before = target > start ? await rows("/v1/bars", { symbols: selection.symbol, interval: selection.interval,
      start: selection.start, end: position }) : [];
    bars = before.map((bar) => ({ time: seconds(bar.bar_start), open: Number(bar.open), high: Number(bar.high),
      low: Number(bar.low), close: Number(bar.close), volume: Number(bar.volume), value: 0 }));
    show(chart(), before, step);
    lastKey = [target * 1e6 - 1, Number.MAX_SAFE_INTEGER];
    Object.assign(state.replay, { candles: bars.length, lastTs: position, ended: false });
    state.replay.seeks = (state.replay.seeks || 0) + 1;
    status(`Moved to ${shown(position)} UTC.`);
  } catch (error) {
    state.replay.error = describe(error);
    status(state.replay.error);
  }
  if (wasPlaying) play();
}
