// Price charts on TradingView's lightweight-charts (vendored): candles, volume, a session VWAP line, and an overlay
// of individual trades and the quote spread drawn between candles when zoomed in.
import {
  CandlestickSeries, ColorType, HistogramSeries, LineSeries, createChart, createSeriesMarkers,
} from "./vendor/lightweight-charts.standalone.production.mjs";
import { number, seconds } from "./api.js";

const UP = "#3fb68b";
const DOWN = "#ff6b6b";

const BASE_OPTIONS = {
  autoSize: true,
  layout: { background: { type: ColorType.Solid, color: "#0f1419" }, textColor: "#c9d3dc", attributionLogo: false },
  grid: { vertLines: { color: "#1e2730" }, horzLines: { color: "#1e2730" } },
  timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#2c3640" },
  rightPriceScale: { borderColor: "#2c3640" },
  localization: { locale: "en-GB" },
};

export function priceChart(element) {
  const chart = createChart(element, BASE_OPTIONS);
  const candles = chart.addSeries(CandlestickSeries, {
    upColor: UP, downColor: DOWN, wickUpColor: UP, wickDownColor: DOWN, borderVisible: false,
  });
  const vwap = chart.addSeries(LineSeries, {
    color: "#ffcc66", lineWidth: 2, priceLineVisible: false, lastValueVisible: false, crosshairMarkerVisible: false,
    title: "VWAP",
  });
  const compare = chart.addSeries(LineSeries, {  // a second symbol's closes, on its own (left) price scale
    color: "#c9a0ff", lineWidth: 1, priceScaleId: "left", priceLineVisible: false, crosshairMarkerVisible: false,
  });
  const volume = chart.addSeries(HistogramSeries, { priceFormat: { type: "volume" }, priceLineVisible: false }, 1);
  chart.panes()[1].setHeight(90);
  const overlay = new TickOverlay();
  candles.attachPrimitive(overlay);
  const markers = createSeriesMarkers(candles, []);
  return { chart, candles, vwap, compare, volume, overlay, markers, bars: [], intervalSeconds: 60 };
}

export function smallHistogram(element) {
  const chart = createChart(element, { ...BASE_OPTIONS, timeScale: { ...BASE_OPTIONS.timeScale, secondsVisible: false } });
  const series = chart.addSeries(HistogramSeries, { color: "#7cc4ff", priceFormat: { type: "volume" } });
  return { chart, series };
}

// Another symbol's closes beside the candles (its scale on the left), or none.
export function compareWith(view, symbol, bars) {
  view.compare.setData(bars.map((bar) => ({ time: seconds(bar.bar_start), value: number(bar.close) })));
  view.compare.applyOptions({ title: symbol || "" });
  view.chart.applyOptions({ leftPriceScale: { visible: Boolean(symbol && bars.length), borderColor: "#2c3640" } });
}

export function candleOf(bar) {
  return { time: seconds(bar.bar_start), open: number(bar.open), high: number(bar.high), low: number(bar.low), close: number(bar.close) };
}

// The session VWAP: volume-weighted from each UTC day's first bar, from the bars' exact per-bar VWAPs.
export function vwapLine(bars) {
  const line = [];
  let day = null;
  let value = 0;
  let volume = 0;
  for (const bar of bars) {
    const thisDay = bar.bar_start.slice(0, 10);
    if (thisDay !== day) { day = thisDay; value = 0; volume = 0; }
    const size = Number(bar.volume);
    value += number(bar.vwap) * size;
    volume += size;
    if (volume > 0) line.push({ time: seconds(bar.bar_start), value: value / volume });
  }
  return line;
}

export function show(view, bars, intervalSeconds) {
  view.bars = bars;
  view.intervalSeconds = intervalSeconds;
  view.candles.setData(bars.map(candleOf));
  view.vwap.setData(vwapLine(bars));
  view.volume.setData(bars.map((bar) => ({
    time: seconds(bar.bar_start), value: Number(bar.volume),
    color: number(bar.close) >= number(bar.open) ? "rgba(63,182,139,0.5)" : "rgba(255,107,107,0.5)",
  })));
  view.overlay.set([], [], intervalSeconds);
  view.markers.setMarkers([]);
  compareWith(view, null, []);
  view.chart.timeScale().fitContent();
}

// Ticks drawn at their own time inside their bar's slot: x = the bar's centre + (fraction of the interval - 0.5)
// x bar spacing. A series primitive, so the candles keep one slot per bar (adding tick times to the time scale would
// squeeze them to a sliver).
class TickOverlay {
  constructor() {
    this.trades = [];
    this.quotes = [];
    this.intervalSeconds = 60;
    this.requestUpdate = null;
    this.view = { zOrder: () => "top", renderer: () => ({ draw: (target) => this.draw(target) }) };
  }

  attached({ chart, series, requestUpdate }) {
    this.chart = chart;
    this.series = series;
    this.requestUpdate = requestUpdate;
  }

  detached() { this.requestUpdate = null; }

  paneViews() { return [this.view]; }

  updateAllViews() {}

  set(trades, quotes, intervalSeconds) {
    this.trades = trades;
    this.quotes = quotes;
    this.intervalSeconds = intervalSeconds;
    if (this.requestUpdate) this.requestUpdate();
  }

  x(time, spacing) {
    const bucket = Math.floor(time / this.intervalSeconds) * this.intervalSeconds;
    const centre = this.chart.timeScale().timeToCoordinate(bucket);
    if (centre === null) return null;
    return centre + ((time - bucket) / this.intervalSeconds - 0.5) * spacing;
  }

  draw(target) {
    if (!this.chart || (!this.trades.length && !this.quotes.length)) return;
    const spacing = this.chart.timeScale().options().barSpacing;
    target.useMediaCoordinateSpace(({ context }) => {
      context.fillStyle = "rgba(124,196,255,0.18)";
      for (let i = 0; i + 1 < this.quotes.length; i += 1) {  // the spread, from each quote to the next
        const [time, bid, ask] = this.quotes[i];
        const from = this.x(time, spacing);
        const to = this.x(this.quotes[i + 1][0], spacing);
        const top = this.series.priceToCoordinate(ask);
        const bottom = this.series.priceToCoordinate(bid);
        if (from === null || to === null || top === null || bottom === null || to < from) continue;
        context.fillRect(from, top, Math.max(1, to - from), Math.max(1, bottom - top));
      }
      context.fillStyle = "#e6edf3";
      for (const [time, price] of this.trades) {
        const x = this.x(time, spacing);
        const y = this.series.priceToCoordinate(price);
        if (x === null || y === null) continue;
        context.beginPath();
        context.arc(x, y, 2, 0, 2 * Math.PI);
        context.fill();
      }
    });
  }
}
