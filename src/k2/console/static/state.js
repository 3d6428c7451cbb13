// What the page shows, as data: the browser tests read it (window.k2console.state) to compare with the API.
export const state = {
  me: null,
  market: { loads: 0, loading: false, candles: 0, bars: [], selection: null, page: 0, tradeRows: 0,
    overlay: { trades: 0, quotes: 0 }, exports: 0 },
  travel: { compared: 0, then: 0, now: 0, added: 0, changed: 0, removed: 0, snapshot: null, asOf: null, error: null },
  replay: { playing: false, events: 0, candles: 0, lastTs: null, cursor: null, error: null, ended: false },
  pipeline: { refreshes: 0, landedLastHour: 0, lag: null, deadLetters: null, gaps: 0, commits: 0, health: null,
    errors: {} },
};
