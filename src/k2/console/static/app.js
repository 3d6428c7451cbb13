// The console's entry point: sign-in, the shared selection (symbol, range, bar, adjustment) and the four views.
import * as api from "./api.js";
import * as market from "./market.js";
import * as pipeline from "./pipeline.js";
import * as replay from "./replay.js";
import { state } from "./state.js";
import * as travel from "./travel.js";

const TABS = ["market", "travel", "replay", "pipeline"];
let current = "market";

function banner(text) {
  const element = document.getElementById("banner");
  element.textContent = text || "";
  element.hidden = !text;
}

function selection() {
  return {
    symbol: document.getElementById("symbol").value,
    compare: document.getElementById("compare").value,
    start: api.isoOfInput(document.getElementById("start").value),
    end: api.isoOfInput(document.getElementById("end").value),
    interval: document.getElementById("interval").value,
    adjust: document.getElementById("adjust").value,
  };
}

function selectTab(name, focus = false) {
  current = name;
  for (const tab of TABS) {
    const button = document.getElementById(`tab-${tab}`);
    const chosen = tab === name;
    button.setAttribute("aria-selected", String(chosen));
    button.tabIndex = chosen ? 0 : -1;
    document.getElementById(`view-${tab}`).hidden = !chosen;
    if (chosen && focus) button.focus();
  }
  document.getElementById("selection").hidden = name === "pipeline";
  pipeline.activate(name === "pipeline");
  if (name === "travel") enterTravel();
}

// The first visit compares now with the state before the latest commit: the smallest step back in time.
async function enterTravel() {
  const chosen = document.getElementById("travel-snapshot").value;
  const snapshots = await travel.loadSnapshots();
  if (chosen) document.getElementById("travel-snapshot").value = chosen;
  else if (snapshots && snapshots.length > 1) document.getElementById("travel-snapshot").value = String(snapshots[1].snapshot_id);
  if (state.market.selection && state.travel.compared === 0) await travel.compare(selection());
}

function tabs() {
  const list = document.getElementById("tabs");
  for (const tab of TABS) document.getElementById(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
  list.addEventListener("keydown", (event) => {  // WAI-ARIA tabs: arrows move between tabs, Home/End to the ends
    const at = TABS.indexOf(current);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: TABS.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    selectTab(TABS[(to + TABS.length) % TABS.length], true);
  });
}

function signInDialog(reason) {
  const dialog = document.getElementById("sign-in-dialog");
  document.getElementById("sign-in-error").textContent = reason && api.signedIn() ? reason : "";
  if (!dialog.open) dialog.showModal();
  document.getElementById("secret").focus();
}

function signInForm() {
  const form = document.getElementById("sign-in-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("secret");
    try {
      const me = await api.signIn(input.value.trim());
      input.value = "";
      document.getElementById("sign-in-dialog").close();
      whoAmI(me);
    } catch (error) {
      state.signInError = error.message;
      document.getElementById("sign-in-error").textContent = `Not signed in: ${error.message}`;
    }
  });
  document.getElementById("sign-in-dialog").addEventListener("cancel", (event) => event.preventDefault());
  document.getElementById("sign-in").addEventListener("click", () => signInDialog());
  document.getElementById("sign-out").addEventListener("click", async () => {
    await api.signOut();
    window.location.reload();
  });
}

function whoAmI(me) {
  state.me = me;
  const roles = me.roles.length ? ` (${me.roles.join(", ")})` : "";
  document.getElementById("who").textContent = me.auth_enabled ? `Signed in as ${me.caller}${roles}` : "Open access (auth off)";
  document.getElementById("sign-out").hidden = !me.auth_enabled;
  travel.adminAllowed(me);
  const missing = ["trades", "quotes"].filter((d) => !me.datasets.includes(d));
  banner(missing.length ? `Your roles do not grant ${missing.join(" or ")}: views that need them say so.` : "");
}

async function chooseDefaults() {
  const symbols = (await api.json("/v1/symbols")).data;
  const select = document.getElementById("symbol");
  select.replaceChildren(...symbols.map((s) => {
    const option = document.createElement("option");
    option.value = s.symbol;
    option.textContent = `${s.symbol} (${s.exchange})`;
    return option;
  }));
  const none = document.createElement("option");
  none.value = "";
  none.textContent = "none";
  document.getElementById("compare").replaceChildren(none, ...[...select.options].map((o) => o.cloneNode(true)));
  if (!symbols.length) {
    banner("The lake holds no trades yet: run `k2 demo`, or load and ingest some files.");
    return false;
  }
  const last = new Date(Date.parse(symbols[0].last_ts));
  const day = new Date(Date.UTC(last.getUTCFullYear(), last.getUTCMonth(), last.getUTCDate()));
  document.getElementById("start").value = api.inputOfDate(day);
  document.getElementById("end").value = api.inputOfDate(new Date(day.getTime() + 86400000));
  return true;
}

async function show() {
  const chosen = selection();
  if (!chosen.symbol || !chosen.start || !chosen.end) return;
  replay.select(chosen);
  await market.load(chosen);
  if (current === "travel") await travel.compare(chosen);
}

async function start() {
  tabs();
  signInForm();
  api.setSignInHandler(signInDialog);
  market.init();
  travel.init();
  replay.init();
  pipeline.init();
  document.getElementById("selection").addEventListener("submit", (event) => { event.preventDefault(); show(); });
  document.getElementById("travel-form").addEventListener("submit", (event) => { event.preventDefault(); travel.compare(selection()); });
  await api.restore();
  try {
    const [me, found] = await Promise.all([api.json("/v1/me"), chooseDefaults()]);  // one sign-in serves both
    whoAmI(me);
    if (found) await show();
  } catch (error) {
    banner(market.describe(error));
  }
  state.ready = true;
}

// For scripts and the browser tests: the state, what each chart draws, and the actions a user takes with the mouse.
window.k2console = {
  state, selectTab, zoom: market.zoom,
  drawn: { market: market.drawn, travel: travel.drawn, replay: replay.drawn },
  replay: { play: replay.play, pause: replay.pause, seekTo: replay.seekTo },
};
start();
