// The console's only way to the server: the public API, with the caller's credentials in a header (never in a URL).
// The secret lives in memory; "remembered" for this tab only as AES-GCM ciphertext in sessionStorage, under a
// non-extractable key kept in IndexedDB (never as plain text in any storage).

export class ApiFailure extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let secret = null;
let signInWaiters = [];
let onSignInNeeded = () => {};

export function setSignInHandler(handler) { onSignInNeeded = handler; }
export function signedIn() { return secret !== null; }

function authHeaders() {
  if (secret === null) return {};
  return secret.startsWith("k2_") ? { "X-API-Key": secret } : { Authorization: `Bearer ${secret}` };
}

function url(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function failure(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: a proxy's page */ }
  const error = body && body.error ? body.error : { code: "http_error", message: `${response.status} ${response.statusText}` };
  return new ApiFailure(response.status, error.code, error.message, error.details);
}

// One request; a 401 asks the user to sign in (once, however many requests wait) and then retries.
export async function request(path, { params, accept = "application/json", method = "GET", body, signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: accept, ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url(path, params), {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store",
    });
    if (response.ok) return response;
    const problem = await failure(response);
    if (response.status !== 401 || attempt > 2) throw problem;
    await needSignIn(problem.message);
  }
}

// Iceberg snapshot ids are 64-bit: integers past 2^53 keep their exact digits, as strings (JSON.parse source access).
function exact(key, value, context) {
  return typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
    ? context.source : value;
}

const LONG_INTEGER = /[:[,]\s*-?\d{16,}\s*[,}\]]/;  // a reviver costs on every value: used only when needed

export async function json(path, options) {
  const text = await (await request(path, options)).text();
  return LONG_INTEGER.test(text) ? JSON.parse(text, exact) : JSON.parse(text);
}

// Every row of a table route (following next_cursor), up to `max` rows.
export async function rows(path, params, max = 100000) {
  const found = [];
  let cursor = null;
  do {
    const page = await json(path, { params: { ...params, page_token: cursor } });
    found.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && found.length < max);
  return found;
}

function needSignIn(reason) {
  return new Promise((resolve) => {
    signInWaiters.push(resolve);
    if (signInWaiters.length === 1) onSignInNeeded(reason);
  });
}

// Try a secret: kept only if the server accepts it (GET /v1/me answers).
export async function signIn(candidate, remember = true) {
  const headers = candidate.startsWith("k2_") ? { "X-API-Key": candidate } : { Authorization: `Bearer ${candidate}` };
  const response = await fetch("/v1/me", { headers: { Accept: "application/json", ...headers }, credentials: "omit", cache: "no-store" });
  if (!response.ok) throw await failure(response);
  secret = candidate;
  if (remember) await vault.store(candidate).catch(() => {});
  const waiting = signInWaiters;
  signInWaiters = [];
  waiting.forEach((resolve) => resolve());
  return response.json();
}

export async function signOut() {
  secret = null;
  await vault.clear().catch(() => {});
}

export async function restore() {
  const found = await vault.load().catch(() => null);
  if (found) secret = found;
  return found !== null;
}

// Server-Sent Events read through fetch (EventSource cannot send an auth header): yields {event, data}.
export async function* events(path, params, signal) {
  const response = await request(path, { params, accept: "text/event-stream", signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        yield { event, data: data.join("\n") };
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

const vault = {
  STORE: "keys",
  ITEM: "k2.console.secret",
  available() { return Boolean(globalThis.crypto && crypto.subtle && globalThis.indexedDB && globalThis.sessionStorage); },
  database() {
    return new Promise((resolve, reject) => {
      const opening = indexedDB.open("k2-console", 1);
      opening.onupgradeneeded = () => opening.result.createObjectStore(this.STORE);
      opening.onsuccess = () => resolve(opening.result);
      opening.onerror = () => reject(opening.error);
    });
  },
  async key(create) {
    const db = await this.database();
    const read = (mode, work) => new Promise((resolve, reject) => {
      const step = work(db.transaction(this.STORE, mode).objectStore(this.STORE));
      step.onsuccess = () => resolve(step.result);
      step.onerror = () => reject(step.error);
    });
    let key = await read("readonly", (store) => store.get("secret-key"));
    if (!key && create) {
      key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      await read("readwrite", (store) => store.put(key, "secret-key"));
    }
    db.close();
    return key || null;
  },
  async store(text) {
    if (!this.available()) return;
    const key = await this.key(true);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, new TextEncoder().encode(text)));
    const joined = new Uint8Array(iv.length + sealed.length);
    joined.set(iv);
    joined.set(sealed, iv.length);
    sessionStorage.setItem(this.ITEM, btoa(String.fromCharCode(...joined)));
  },
  async load() {
    if (!this.available()) return null;
    const stored = sessionStorage.getItem(this.ITEM);
    if (!stored) return null;
    const key = await this.key(false);
    if (!key) return null;
    const joined = Uint8Array.from(atob(stored), (c) => c.charCodeAt(0));
    const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: joined.slice(0, 12) }, key, joined.slice(12));
    return new TextDecoder().decode(plain);
  },
  async clear() {
    if (!this.available()) return;
    sessionStorage.removeItem(this.ITEM);
    const db = await this.database();
    await new Promise((resolve) => {
      const step = db.transaction(this.STORE, "readwrite").objectStore(this.STORE).delete("secret-key");
      step.onsuccess = step.onerror = () => resolve();
    });
    db.close();
  },
};

// Times: the console speaks UTC. <input type=datetime-local> values are read and written as UTC.
export function isoOfInput(value) {
  if (!value) return null;
  return `${value.length === 16 ? `${value}:00` : value}Z`;
}

export function inputOfDate(date) {
  return date.toISOString().slice(0, 19);
}

export function seconds(iso) {
  return Date.parse(iso) / 1000;
}

// Prices come as exact decimal strings ("171.24000000"): shown without the padding zeros, at least 2 decimals.
export function price(text) {
  if (text === null || text === undefined) return "";
  const [whole, fraction = ""] = String(text).split(".");
  return `${whole}.${fraction.replace(/0+$/, "").padEnd(2, "0")}`;
}

export function number(text) {
  return text === null || text === undefined ? null : Number(text);
}
