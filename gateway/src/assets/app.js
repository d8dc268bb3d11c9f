// Agora dashboard. Plain JavaScript, no dependencies. Every piece of text that comes from a
// user or a service is put in the page with textContent (the `h` helper), never as HTML.
"use strict";

// ---------------------------------------------------------------- helpers
const $ = (id) => document.getElementById(id);

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Amounts are i64 minor units: beyond 2^53 a JavaScript number is not exact. Integers that large
// are read as BigInt (from their source text) and sent as their digits (JSON.rawJSON), so no
// amount is ever rounded on its way in or out; the page's arithmetic on amounts takes either.
function parseJson(text) {
  return JSON.parse(text, (_key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?[0-9]+$/.test(context.source)
      ? BigInt(context.source) : value);
}
function toJson(value, space) {
  return JSON.stringify(value, (_key, v) =>
    typeof v === "bigint" ? (JSON.rawJSON ? JSON.rawJSON(String(v)) : String(v)) : v, space);
}
/** A whole number typed in a form, exactly: digits beyond 2^53 go as they are. */
function integer(text) {
  const digits = String(text).trim();
  if (!/^[0-9]+$/.test(digits)) return Number(digits);
  const value = BigInt(digits);
  if (value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  if (!JSON.rawJSON) throw new Error(`${digits} is too large for this browser to send exactly: use the CLI or the API`);
  return JSON.rawJSON(value.toString());
}
/** a - b for amounts that may be numbers or BigInts. */
function minus(a, b) {
  return typeof a === "bigint" || typeof b === "bigint" ? BigInt(a) - BigInt(b) : a - b;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body, headers) {
  const init = { method, headers: Object.assign({}, headers || {}) };
  if (body instanceof Blob) {
    // An upload: the file's bytes as they are.
    init.headers["content-type"] = "application/octet-stream";
    init.body = body;
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = toJson(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? parseJson(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || { code: "http_" + response.status, message: text || response.statusText };
    // The session ended (signed out elsewhere, expired, password changed): sign in again.
    if (response.status === 401 && !path.startsWith("/api/auth/")) auth.signedOut();
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

function toast(text, kind) {
  const el = h("div", { class: "toast " + (kind || "") }, text);
  $("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 6000 : 3000);
}

function failed(error) {
  toast(error.code ? `${error.code}: ${error.message}` : String(error), "error");
}

const money = (cents) => {
  if (typeof cents !== "bigint" && !Number.isInteger(cents)) return "";
  const value = BigInt(cents);
  const abs = value < 0n ? -value : value;
  return `${value < 0n ? "-" : ""}${(abs / 100n).toLocaleString()}.${String(abs % 100n).padStart(2, "0")}`;
};
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
const dateTime = (ms) => (ms ? new Date(ms).toLocaleString() : "");
const bytes = (n) => {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
};
const formData = (form) => Object.fromEntries(new FormData(form).entries());
const newId = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

function pill(text) { return h("span", { class: "pill " + text }, text); }

// ---------------------------------------------------------------- tabs
const tabs = {};
let currentTab = null;

const managerOnly = new Set(["monitoring", "logs"]);

function showTab(name) {
  if (!auth.me) return;
  if (!tabs[name] || (managerOnly.has(name) && !auth.isManager())) name = auth.homeTab();
  currentTab = name;
  document.querySelectorAll(".tab").forEach((el) => el.classList.toggle("active", el.id === "tab-" + name));
  document.querySelectorAll("#nav a").forEach((el) => el.classList.toggle("active", el.dataset.tab === name));
  if (tabs[name].show) tabs[name].show();
}

window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));

// ---------------------------------------------------------------- live events
const listeners = {};
let source = null;
let health = null;

function on(topic, handler) { (listeners[topic] = listeners[topic] || []).push(handler); }

function connectLive() {
  if (source) source.close();
  source = null;
  if (!auth.me) { setStatus(false); return; }
  const params = new URLSearchParams();
  if (chat.session) params.set("session", chat.session.session);
  source = new EventSource("/api/events?" + params.toString());
  source.addEventListener("hello", () => setStatus(true));
  source.onerror = () => setStatus(false);
  for (const topic of ["bank", "chat", "updates", "presence", "tasks", "likes", "prices", "logs", "lagged"]) {
    source.addEventListener(topic, (event) => {
      let payload;
      try { payload = parseJson(event.data); } catch (_) { return; }
      for (const handler of listeners[topic] || []) {
        try { handler(payload.data !== undefined ? payload.data : payload, payload.subject); } catch (e) { console.error(e); }
      }
    });
  }
}

function setStatus(ok) {
  $("status-dot").className = "dot " + (ok ? "ok" : "bad");
  $("status-text").textContent = ok
    ? `live · NATS ${health && health.server ? health.server.version : ""}`
    : auth.me ? "reconnecting…" : "signed out";
}

// ---------------------------------------------------------------- signing in
// The session is an HttpOnly cookie the gateway sets: this page never sees the token.
const auth = {
  me: null,              // {name, role} of the signed-in user
  isManager() { return !!(this.me && this.me.role === "manager"); },
  homeTab() { return this.isManager() ? "monitoring" : "bank"; },
  async check() {
    try { this.signedIn(await api("GET", "/api/auth/me")); } catch (_) { this.signedOut(); }
  },
  signedIn(me) {
    this.me = me;
    document.body.classList.remove("signed-out");
    $("signin").classList.add("hidden");
    $("whoami").classList.remove("hidden");
    $("me-name").textContent = me.name;
    $("me-role").textContent = me.role === "manager" ? "manager" : "";
    document.querySelectorAll("#nav a[data-manager]").forEach((a) => a.classList.toggle("hidden", !this.isManager()));
    // What a user acts on is theirs: fill in their name where a form asks for an account.
    document.querySelectorAll("input.mine").forEach((input) => { if (!input.value) input.value = me.name; });
    $("chat-as").textContent = me.name;
    connectLive();
    showTab(location.hash.slice(1) || this.homeTab());
  },
  signedOut() {
    // Nothing of whoever was signed in (balances, statements, lists, forms filled in with their
    // name) stays on the page for the next person: the page starts over.
    if (this.me) {
      this.me = null;
      history.replaceState(null, "", location.pathname);
      location.reload();
      return;
    }
    chat.forget();
    document.body.classList.add("signed-out");
    $("signin").classList.remove("hidden");
    $("whoami").classList.add("hidden");
    connectLive();
  },
  async submit(action) {
    const body = { name: $("signin-name").value.trim(), password: $("signin-password").value };
    try {
      if (action === "signup") {
        await api("POST", "/api/auth/signup", body);
        toast(`Welcome, ${body.name}`, "ok");
      }
      const me = await api("POST", "/api/auth/login", body);
      $("signin-password").value = "";
      this.signedIn(me);
    } catch (error) { failed(error); }
  },
  async signOut() {
    await chat.logout();
    try { await api("POST", "/api/auth/logout"); } catch (_) { /* the session ended already */ }
    this.signedOut();
  },
};
$("signin-form").addEventListener("submit", (e) => { e.preventDefault(); auth.submit(e.submitter ? e.submitter.value : "login"); });
$("signout").addEventListener("click", () => auth.signOut());

on("lagged", () => { if (currentTab && tabs[currentTab].show) tabs[currentTab].show(); });

// ---------------------------------------------------------------- monitoring
// Reads the gateway's GET /metrics (every instance's Prometheus metrics, gathered over NATS)
// every two seconds; rates and latency quantiles come from the difference between two reads.

/** Parses Prometheus/OpenMetrics text into samples {name, labels, value}. */
function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const row of text.split("\n")) {
    if (!row || row.startsWith("#")) continue;
    const m = line.exec(row);
    if (!m) continue;
    const labels = {};
    for (const [, key, value] of (m[2] || "").matchAll(label)) {
      labels[key] = value.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The q-quantile of cumulative histogram buckets {le: count} (as histogram_quantile does). */
function quantile(q, buckets) {
  const bounds = Object.keys(buckets).map((le) => [le === "+Inf" ? Infinity : Number(le), buckets[le]]).sort((a, b) => a[0] - b[0]);
  if (!bounds.length) return null;
  const total = bounds[bounds.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let previousBound = 0, previousCount = 0;
  for (const [bound, count] of bounds) {
    if (count >= rank) {
      if (bound === Infinity) return previousBound;
      const inBucket = count - previousCount;
      return previousBound + (bound - previousBound) * (inBucket > 0 ? (rank - previousCount) / inBucket : 1);
    }
    previousBound = bound; previousCount = count;
  }
  return previousBound;
}

const palette = ["#4f5bd5", "#1f9d63", "#d08a0b", "#d64545", "#0e9fb8", "#8e44ad", "#6b778c", "#c2185b", "#2e7d32", "#ef6c00", "#3949ab"];

const monitoring = {
  window: 90,      // points kept: three minutes at one read every two seconds
  history: {},     // service -> [{rate, errors, p50, p99}]
  previous: null,  // the last read's per-service totals
  colors: {},
  show() { this.refresh(); },
  color(service) {
    if (!this.colors[service]) this.colors[service] = palette[Object.keys(this.colors).length % palette.length];
    return this.colors[service];
  },
  /** A colour key (set through the style object: the page's CSP allows no style attributes). */
  swatch(service) {
    const el = h("span", { class: "swatch" });
    el.style.background = this.color(service);
    return el;
  },
  async refresh() {
    let text;
    try {
      const response = await fetch("/metrics", { credentials: "same-origin" });
      if (!response.ok) return;
      text = await response.text();
    } catch (e) { return; }
    const samples = parseMetrics(text);
    const now = Date.now();
    // Per service: request and error totals and latency buckets. Per instance: the columns.
    const services = {};
    const instances = {};
    const service = (name) => (services[name] ||= { requests: 0, errors: 0, buckets: {} });
    const instance = (l) => (instances[`${l.service}\u0000${l.instance}`] ||= {
      service: l.service, instance: l.instance, requests: 0, errors: 0, buckets: {}, inFlight: 0,
      queue: null, commit: {}, lag: null, cacheBytes: null, hits: 0, misses: 0, live: null });
    for (const { name, labels, value } of samples) {
      if (!labels.service) continue;
      const i = instance(labels);
      switch (name) {
        case "agora_up": service(labels.service); break;
        case "agora_requests_total": {
          const s = service(labels.service);
          s.requests += value; i.requests += value;
          if (labels.code !== "ok") { s.errors += value; i.errors += value; }
          break;
        }
        case "agora_request_duration_seconds_bucket": {
          const s = service(labels.service);
          s.buckets[labels.le] = (s.buckets[labels.le] || 0) + value;
          i.buckets[labels.le] = (i.buckets[labels.le] || 0) + value;
          break;
        }
        case "agora_requests_in_flight": i.inFlight += value; break;
        case "agora_owner_queue_depth": i.queue = (i.queue || 0) + value; break;
        case "agora_owner_group_seconds_bucket":
          if (labels.phase === "commit" || labels.phase === "append") i.commit[labels.le] = (i.commit[labels.le] || 0) + value;
          break;
        case "agora_jetstream_consumer_pending": i.lag = (i.lag || 0) + value; break;
        case "agora_files_cache_bytes": i.cacheBytes = value; break;
        case "agora_files_cache_hits_total": i.hits = value; break;
        case "agora_files_cache_misses_total": i.misses = value; break;
        case "agora_gateway_live_streams": i.live = value; break;
      }
    }
    const previous = this.previous;
    if (previous) {
      const seconds = Math.max(0.001, (now - previous.at) / 1000);
      let rate = 0, errors = 0;
      for (const [name, s] of Object.entries(services)) {
        const before = previous.services[name];
        // A restarted instance's counters start again at 0: count from there.
        const delta = (a, b) => (b === undefined || a < b ? a : a - b);
        const point = {
          rate: delta(s.requests, before && before.requests) / seconds,
          errors: delta(s.errors, before && before.errors) / seconds,
        };
        const buckets = {};
        for (const [le, count] of Object.entries(s.buckets)) buckets[le] = delta(count, before && before.buckets[le]);
        point.p50 = quantile(0.5, buckets);
        point.p99 = quantile(0.99, buckets);
        if (point.p50 !== null) point.p50 *= 1000;
        if (point.p99 !== null) point.p99 *= 1000;
        rate += point.rate; errors += point.errors;
        const history = (this.history[name] ||= []);
        history.push(point);
        if (history.length > this.window) history.shift();
      }
      $("mon-rate").textContent = rate.toFixed(rate < 10 ? 1 : 0);
      $("mon-errors").textContent = errors.toFixed(errors < 10 ? 1 : 0);
    }
    this.previous = { at: now, services: JSON.parse(JSON.stringify(services)) };
    $("mon-instances").textContent = Object.keys(instances).length;
    $("mon-services").textContent = Object.keys(services).length;
    this.table(Object.values(instances));
    this.draw();
  },
  table(rows) {
    const ms = (seconds) => (seconds === null ? "–" : seconds * 1000 < 10 ? `${(seconds * 1000).toFixed(2)} ms` : `${(seconds * 1000).toFixed(0)} ms`);
    const count = (n) => (n === null ? "–" : Math.round(n).toLocaleString());
    const body = $("mon-table").tBodies[0];
    body.replaceChildren();
    rows.sort((a, b) => a.service.localeCompare(b.service) || a.instance.localeCompare(b.instance));
    for (const r of rows) {
      const reads = r.hits + r.misses;
      const cache = r.cacheBytes === null ? "–" : `${(r.cacheBytes / 1048576).toFixed(1)} MB${reads ? `, ${Math.round((100 * r.hits) / reads)}% hits` : ""}`;
      body.append(h("tr", {},
        h("td", {}, this.swatch(r.service), h("strong", {}, r.service)),
        h("td", { class: "mono" }, r.instance),
        h("td", { class: "num" }, count(r.requests)),
        h("td", { class: "num" }, count(r.errors)),
        h("td", { class: "num" }, ms(quantile(0.5, r.buckets))),
        h("td", { class: "num" }, ms(quantile(0.99, r.buckets))),
        h("td", { class: "num" }, count(r.inFlight)),
        h("td", { class: "num" }, count(r.queue)),
        h("td", { class: "num" }, ms(quantile(0.99, r.commit))),
        h("td", { class: "num" }, count(r.lag)),
        h("td", { class: "num" }, cache),
        h("td", { class: "num" }, count(r.live))));
    }
  },
  draw() {
    const names = Object.keys(this.history).sort();
    $("mon-legend").replaceChildren(...names.map((name) => h("span", {}, this.swatch(name), name)));
    for (const [id, key, unit] of [["mon-chart-rate", "rate", ""], ["mon-chart-errors", "errors", ""], ["mon-chart-p99", "p99", " ms"], ["mon-chart-p50", "p50", " ms"]]) {
      this.chart($(id), names.map((name) => [this.color(name), this.history[name].map((p) => p[key])]), unit);
    }
  },
  /** Draws one line per series (null values leave gaps) on a shared scale. */
  chart(canvas, series, unit) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 420, height = canvas.clientHeight || 150;
    canvas.width = width * ratio; canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const values = series.flatMap(([, points]) => points.filter((v) => v !== null && Number.isFinite(v)));
    const top = Math.max(unit ? 1 : 1, ...values) * 1.15;
    const left = 52, bottom = height - 14;
    g.strokeStyle = "#e3e8ef"; g.fillStyle = "#6b778c"; g.font = "11px sans-serif"; g.lineWidth = 1;
    for (let i = 0; i <= 3; i++) {
      const y = 6 + (bottom - 6) * (i / 3);
      g.beginPath(); g.moveTo(left, y); g.lineTo(width, y); g.stroke();
      const v = top * (1 - i / 3);
      g.fillText((v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString()) + unit, 2, y + 4);
    }
    const step = (width - left - 4) / (this.window - 1);
    canvas.dataset.points = Math.max(0, ...series.map(([, points]) => points.length));
    for (const [color, points] of series) {
      g.beginPath(); g.strokeStyle = color; g.lineWidth = 2;
      let drawing = false;
      points.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) { drawing = false; return; }
        const x = left + (this.window - points.length + i) * step;
        const y = 6 + (bottom - 6) * (1 - v / top);
        if (drawing) g.lineTo(x, y); else g.moveTo(x, y);
        drawing = true;
      });
      g.stroke();
      // The latest value as a dot (a single point draws no line).
      const last = points[points.length - 1];
      if (last !== null && Number.isFinite(last)) {
        g.beginPath(); g.fillStyle = color;
        g.arc(left + (this.window - 1) * step, 6 + (bottom - 6) * (1 - last / top), 3, 0, 2 * Math.PI);
        g.fill();
      }
    }
  },
};
tabs.monitoring = monitoring;

// ---------------------------------------------------------------- logs
const logs = {
  keys: new Set(),  // the records shown, to show each once
  paused: false,
  trace: null,  // the trace whose records alone are shown
  seen: new Set(),
  loaded: false,
  show() { if (!this.loaded) { this.loaded = true; this.load(); } },
  async load() {
    try {
      const reply = await api("GET", "/api/logs?limit=300");
      for (const record of reply.records) this.add(record);
    } catch (e) { failed(e); }
  },
  matches(record, row) {
    const service = $("logs-service").value;
    const level = Number($("logs-level").value);
    const text = $("logs-search").value.toLowerCase();
    const rank = { error: 0, warn: 1, info: 2 }[record.level] ?? 2;
    if (this.trace) return record.trace_id === this.trace;
    return (!service || record.service === service) && rank <= level && (!text || row.textContent.toLowerCase().includes(text));
  },
  add(record) {
    // The same record may come twice: live, and in a page of /api/logs read meanwhile (whose
    // JSON has its keys in another order).
    const key = [record.ts_ms, record.service, record.instance, record.level, record.message,
      toJson(Object.entries(record.fields || {}).sort())].join("|");
    if (this.keys.has(key)) return;
    this.keys.add(key);
    if (this.keys.size > 2000) this.keys = new Set([...this.keys].slice(-1000));
    if (!this.seen.has(record.service)) {
      this.seen.add(record.service);
      $("logs-service").append(h("option", { value: record.service }, record.service));
    }
    if (this.paused) return;
    const fields = Object.entries(record.fields || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : toJson(v)}`).join(" ");
    const row = h("div", { class: "log" },
      h("span", {}, time(record.ts_ms)),
      h("span", { class: "lvl-" + record.level }, record.level.toUpperCase()),
      h("span", {}, `${record.service}/${record.instance}`),
      h("span", {}, record.message, " ", h("span", { class: "fields" }, fields)),
      record.trace_id
        ? h("a", { class: "trace mono", href: "#logs", title: `every record of trace ${record.trace_id}`,
            dataset: { trace: record.trace_id },
            onclick: (e) => { e.preventDefault(); this.showTrace(record.trace_id); } }, record.trace_id.slice(0, 8) + "…")
        : h("span", {}));
    row._record = record;
    row.classList.toggle("hidden", !this.matches(record, row));
    const list = $("logs-list");
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
    list.append(row);
    while (list.childElementCount > 1000) list.firstElementChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  },
  filter() {
    let shown = 0;
    for (const row of $("logs-list").children) {
      const match = this.matches(row._record, row);
      row.classList.toggle("hidden", !match);
      if (match) shown++;
    }
    if (this.trace) $("logs-trace-count").textContent = `${shown} record${shown === 1 ? "" : "s"}, across ${new Set([...$("logs-list").children].filter((r) => !r.classList.contains("hidden")).map((r) => r._record.service)).size} services`;
  },
  /** Shows only the records of one trace: the whole path of a request, across services. */
  async showTrace(id) {
    this.trace = id;
    $("logs-trace-id").textContent = id;
    $("logs-trace").classList.remove("hidden");
    try {
      // Records of the trace that scrolled out of the page are still in the gateway's ring.
      const reply = await api("GET", `/api/logs?trace_id=${encodeURIComponent(id)}&limit=1000`);
      for (const record of reply.records) this.add(record);
    } catch (e) { failed(e); }
    this.filter();
  },
  clearTrace() {
    this.trace = null;
    $("logs-trace").classList.add("hidden");
    this.filter();
  },
};
tabs.logs = logs;
$("logs-trace-clear").addEventListener("click", () => logs.clearTrace());
on("logs", (record) => logs.add(record));
["logs-service", "logs-level", "logs-search"].forEach((id) => $(id).addEventListener("input", () => logs.filter()));
$("logs-pause").addEventListener("click", (e) => { logs.paused = !logs.paused; e.target.textContent = logs.paused ? "Resume" : "Pause"; });
$("logs-clear").addEventListener("click", () => { $("logs-list").replaceChildren(); logs.keys.clear(); });

// ---------------------------------------------------------------- chat
const chat = {
  session: null,         // the registration reply
  rooms: ["all"],
  current: { room: "all" },
  seen: new Set(),       // from + id of messages shown in the current conversation
  oldest: null,          // history seq of the oldest message shown
  more: false,
  loading: false,
  unread: 0,
  show() { this.unread = 0; this.badge(); if (this.session) this.refreshWho(); },
  badge() { const b = $("chat-unread"); b.textContent = this.unread; b.classList.toggle("hidden", !this.unread); },
  async login() {
    try {
      this.session = await api("POST", "/api/chat/sessions", {});
    } catch (e) { failed(e); return; }
    this.rooms = ["all", ...this.session.rooms];
    $("chat-login").classList.add("hidden");
    $("chat-room").classList.remove("hidden");
    $("chat-me").textContent = this.session.name;
    connectLive();
    this.renderRooms();
    this.open({ room: "all" });
    this.refreshWho();
  },
  async logout() {
    if (!this.session) return;
    const token = this.session.session;
    this.forget();
    try { await api("DELETE", "/api/chat/sessions/" + encodeURIComponent(token)); } catch (_) { /* gone already */ }
    connectLive();
  },
  forget() {
    this.session = null;
    $("chat-room").classList.add("hidden");
    $("chat-login").classList.remove("hidden");
  },
  renderRooms() {
    const list = $("chat-rooms");
    list.replaceChildren(...this.rooms.map((room) => h("li", {
      class: this.current.room === room ? "active" : "",
      onclick: () => this.open({ room }),
    }, "# " + room)));
  },
  async refreshWho() {
    try {
      const who = await api("GET", "/api/chat/who");
      $("chat-who").replaceChildren(...who.users.filter((u) => u.online).map((user) => h("li", {
        class: this.current.with === user.name ? "active" : "",
        onclick: () => user.name !== this.session.name && this.open({ with: user.name }),
        dataset: { name: user.name },
      }, h("span", { class: "dot ok" }), user.name, user.name === this.session.name ? h("span", { class: "muted count" }, "you") : null)));
    } catch (e) { /* the chat service may be restarting */ }
  },
  async open(conversation) {
    this.current = conversation;
    this.seen.clear();
    this.oldest = null;
    $("chat-messages").replaceChildren();
    $("chat-title").textContent = conversation.room ? "# " + conversation.room : "@ " + conversation.with;
    this.renderRooms();
    this.refreshWho();
    await this.loadOlder();
    const box = $("chat-messages");
    box.scrollTop = box.scrollHeight;
  },
  historyQuery() {
    const params = new URLSearchParams({ limit: "50" });
    if (this.current.room) params.set("room", this.current.room);
    else { params.set("with", this.current.with); params.set("as", this.session.name); }
    if (this.oldest !== null) params.set("before", String(this.oldest));
    return params;
  },
  async loadOlder() {
    if (this.loading || !this.session) return;
    this.loading = true;
    try {
      const reply = await api("GET", "/api/chat/history?" + this.historyQuery());
      const box = $("chat-messages");
      const before = box.scrollHeight;
      const nodes = [];
      for (const message of reply.messages) {
        const key = message.from + "\u0000" + message.id;
        if (this.seen.has(key)) continue;
        this.seen.add(key);
        nodes.push(this.render(message));
      }
      if (reply.messages.length) this.oldest = reply.messages[0].seq;
      this.more = reply.more;
      box.prepend(...nodes);
      if (!reply.more && !box.querySelector(".notice")) box.prepend(h("div", { class: "notice" }, "Beginning of the conversation"));
      box.scrollTop += box.scrollHeight - before;
    } catch (e) { failed(e); } finally { this.loading = false; }
  },
  render(message) {
    const mine = this.session && message.from === this.session.name;
    const seq = message.seq;
    const notes = [];
    if (message.deleted) notes.push(" · deleted");
    else if (message.edited_ms) notes.push(" · edited");
    if (message.replies) notes.push(` · ${message.replies} ${message.replies === 1 ? "reply" : "replies"}`);
    const reactions = h("div", { class: "reactions" });
    for (const [emoji, names] of Object.entries(message.reactions || {})) {
      const own = this.session && names.includes(this.session.name);
      reactions.append(h("button", { class: "reaction" + (own ? " own" : ""), title: names.join(", "), onclick: () => this.react(seq, emoji, !own) }, `${emoji} ${names.length}`));
    }
    const actions = h("span", { class: "actions" });
    if (seq && !message.deleted) {
      actions.append(h("button", { class: "link react", onclick: () => this.react(seq, "👍", true) }, "👍"));
      if (mine) {
        actions.append(h("button", { class: "link edit", onclick: () => this.edit(seq, message.text) }, "edit"));
        actions.append(h("button", { class: "link delete", onclick: () => this.remove(seq) }, "delete"));
      }
    }
    return h("div", { class: "message" + (mine ? " mine" : "") + (message.deleted ? " deleted" : ""), dataset: { from: message.from, seq: seq || "" } },
      h("div", { class: "meta" }, `${message.from} · ${time(message.at)}${notes.join("")} `, actions),
      h("div", { class: "text" }, message.deleted ? "(deleted)" : message.text),
      reactions);
  },
  // Fetches one message of the current conversation again (after someone changed it).
  async reload(seq) {
    if (!$("chat-messages").querySelector(`.message[data-seq="${seq}"]`)) return;
    const place = this.current.room
      ? "room=" + encodeURIComponent(this.current.room)
      : "with=" + encodeURIComponent(this.current.with) + "&as=" + encodeURIComponent(this.session.name);
    try {
      const reply = await api("GET", `/api/chat/history?${place}&after=${seq - 1}&limit=1`);
      if (reply.messages.length && reply.messages[0].seq === seq) this.replace(reply.messages[0]);
    } catch (_) { /* shown again on the next load */ }
  },
  replace(message) {
    const old = $("chat-messages").querySelector(`.message[data-seq="${message.seq}"]`);
    if (old) old.replaceWith(this.render(message));
  },
  async react(seq, emoji, on) {
    try { this.replace(await api("POST", "/api/chat/react", { seq, emoji, on })); } catch (e) { failed(e); }
  },
  async edit(seq, text) {
    const changed = prompt("Edit your message", text);
    if (changed === null || changed === text) return;
    try { this.replace(await api("POST", "/api/chat/edit", { seq, text: changed })); } catch (e) { failed(e); }
  },
  async remove(seq) {
    try { this.replace(await api("POST", "/api/chat/delete", { seq })); } catch (e) { failed(e); }
  },
  async search(query) {
    const box = $("chat-search-results");
    box.replaceChildren();
    if (!query.trim()) return;
    try {
      const reply = await api("GET", "/api/chat/search?limit=20&query=" + encodeURIComponent(query));
      if (!reply.hits.length) box.append(h("div", { class: "muted" }, "Nothing found"));
      for (const hit of reply.hits) {
        const place = hit.message.room ? "#" + hit.message.room : "@" + (hit.message.from === this.session.name ? hit.message.to : hit.message.from);
        box.append(h("div", { class: "hit" },
          h("div", { class: "meta" }, `${place} · ${hit.message.from} · ${time(hit.message.at)}`),
          h("div", { class: "text" }, ...hit.highlighted.map((piece) => piece.match ? h("mark", {}, piece.text) : piece.text))));
      }
    } catch (e) { failed(e); }
  },
  arrive(message, room, to) {
    const key = message.from + "\u0000" + message.id;
    const me = this.session && this.session.name;
    const here = this.current.room
      ? room === this.current.room
      : to && ((message.from === this.current.with && to === me) || (message.from === me && to === this.current.with));
    if (!here) {
      if (to === me || (room && this.rooms.includes(room) && message.from !== me)) {
        if (currentTab !== "chat") { this.unread += 1; this.badge(); }
        if (to === me) toast(`${message.from}: ${message.text}`);
      }
      return;
    }
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const box = $("chat-messages");
    const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
    box.append(this.render(message));
    if (stick || message.from === me) box.scrollTop = box.scrollHeight;
    if (currentTab !== "chat") { this.unread += 1; this.badge(); }
  },
  async send(text) {
    const body = { session: this.session.session, text };
    if (this.current.room) body.room = this.current.room; else body.to = this.current.with;
    const reply = await api("POST", "/api/chat/send", body);
    this.arrive(reply.message, this.current.room, this.current.with);
  },
};
tabs.chat = chat;
on("chat", (message, subject) => {
  if (!chat.session) return;
  const parts = subject.split(".");
  const kind = parts[2], target = parts.slice(3).join(".");
  if (kind === "room") chat.arrive(message, target, null);
  else if (kind === "dm") chat.arrive(message, null, target);
});
on("presence", () => { if (chat.session && currentTab === "chat") chat.refreshWho(); });
on("updates", (update) => {
  if (!chat.session) return;
  const here = chat.current.room ? update.room === chat.current.room : update.with === chat.current.with;
  if (!here) return;
  if (update.kind === "typing") {
    if (update.from === chat.session.name) return;
    $("chat-title").dataset.typing = `${update.from} is typing…`;
    clearTimeout(chat.typingTimer);
    chat.typingTimer = setTimeout(() => { delete $("chat-title").dataset.typing; }, 3000);
    return;
  }
  if (update.seq && ["edit", "delete", "reaction", "reply"].includes(update.kind)) chat.reload(update.seq);
});
$("chat-login").addEventListener("submit", (e) => { e.preventDefault(); chat.login(); });
$("chat-leave").addEventListener("click", () => chat.logout());
$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("chat-input");
  const text = input.value;
  if (!text.trim()) return;
  input.value = "";
  try { await chat.send(text); } catch (error) { input.value = text; failed(error); if (error.code === "not_registered") chat.logout(); }
});
$("chat-room-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const room = $("chat-room-name").value.trim();
  if (!room) return;
  try {
    const reply = await api("POST", "/api/chat/join", { session: chat.session.session, room });
    chat.rooms = ["all", ...reply.rooms];
    $("chat-room-name").value = "";
    chat.open({ room });
  } catch (error) { failed(error); }
});
$("chat-input").addEventListener("input", () => {
  // Others see "… is typing" (the service sends at most one every 2 s).
  if (!chat.session || Date.now() - (chat.typedAt || 0) < 2000) return;
  chat.typedAt = Date.now();
  const body = chat.current.room ? { room: chat.current.room } : { with: chat.current.with };
  api("POST", "/api/chat/typing", body).catch(() => {});
});
$("chat-search-form").addEventListener("submit", (e) => { e.preventDefault(); chat.search($("chat-search").value); });
$("chat-messages").addEventListener("scroll", (e) => { if (e.target.scrollTop < 40 && chat.more) chat.loadOlder(); });

// ---------------------------------------------------------------- tasks
const OPS = {
  fibonacci: { n: 90 }, sum: { numbers: [1, 2, 3.5] }, average: { numbers: [1, 2, 3, 4] },
  max: { numbers: [3, 9, 4] }, min: { numbers: [3, 9, 4] }, sort: { numbers: [5, 3, 9, 1] },
  count_words: { text: "the quick brown fox" }, count_chars: { text: "hello" },
  uppercase: { text: "hello" }, lowercase: { text: "HELLO" }, sleep: { ms: 3000 }, fail: { message: "on purpose" },
};
const tasks = {
  rows: new Map(),
  fetching: new Set(),
  show() {
    // The workers' status is the manager's (GET /api/workers): a user's page does not offer it.
    $("workers-card").classList.toggle("hidden", !auth.isManager());
    this.load(); this.workers(); schedules.load(); workflows.load(); workflows.refresh();
  },
  async load() {
    try {
      const reply = await api("GET", "/api/tasks?limit=50");
      const body = $("tasks-table").tBodies[0];
      body.replaceChildren();
      this.rows.clear();
      for (const task of reply.tasks) body.append(this.row(task));
    } catch (e) { failed(e); }
  },
  async workers() {
    if (!auth.isManager()) return;
    try {
      const reply = await api("GET", "/api/workers");
      $("workers-table").tBodies[0].replaceChildren(...reply.workers.map((w) => h("tr", {},
        h("td", { class: "mono" }, w.worker), h("td", { class: "num" }, `${w.current.length}/${w.concurrency}`),
        h("td", { class: "num" }, w.done), h("td", { class: "num" }, w.failed))));
    } catch (e) { failed(e); }
  },
  row(task) {
    const bar = h("div", { class: "bar" + (task.state === "completed" ? " complete" : "") }, h("div"));
    const percent = task.state === "completed" ? 100 : task.progress || 0;
    bar.firstChild.style.width = percent + "%";
    const result = task.error ? task.error : task.result !== undefined ? toJson(task.result) : "";
    const shown = task.held ? "scheduled" : task.state;
    const tr = h("tr", { dataset: { id: task.id, state: shown } },
      h("td", { class: "mono" }, task.id),
      h("td", {}, task.op || "", task.schedule ? h("span", { class: "muted" }, " · " + task.schedule) : "",
        task.workflow ? h("span", { class: "muted" }, ` · workflow ${task.workflow} ${task.step}`) : ""),
      h("td", { class: "state" }, pill(shown), task.held ? h("span", { class: "muted" }, " at " + time(task.run_at_ms)) : ""),
      h("td", {}, h("span", { class: "muted" }, `${percent}%`), bar),
      h("td", { class: "mono" }, task.worker || ""),
      h("td", { class: "mono result" }, result.length > 120 ? result.slice(0, 120) + "…" : result),
      h("td", {}, time(task.submitted_ms)),
      h("td", {}, ["queued", "running", "retrying"].includes(task.state)
        ? h("button", { class: "link", onclick: () => this.cancel(task.id) }, "cancel") : ""));
    const old = this.rows.get(task.id);
    if (old) old.replaceWith(tr);
    this.rows.set(task.id, tr);
    return tr;
  },
  async refresh(id) {
    try { this.row(await api("GET", "/api/tasks/" + encodeURIComponent(id))); } catch (_) { /* gone */ }
  },
  async cancel(id) {
    try { await api("POST", `/api/tasks/${encodeURIComponent(id)}/cancel`); this.refresh(id); } catch (e) { failed(e); }
  },
  event(event) {
    if (!event.id) return;
    if (event.event !== "progress") workflows.soon();
    const tr = this.rows.get(event.id);
    if (!tr) {
      // A task submitted elsewhere (the CLI, another browser): show it once it moves.
      if (currentTab === "tasks" && !this.fetching.has(event.id)) {
        this.fetching.add(event.id);
        api("GET", "/api/tasks/" + encodeURIComponent(event.id))
          .then((task) => { if (!this.rows.has(task.id)) $("tasks-table").tBodies[0].prepend(this.row(task)); })
          .catch(() => {})
          .finally(() => this.fetching.delete(event.id));
      }
      return;
    }
    if (event.event === "queued" || event.event === "completed") schedules.soon();
    if (event.event === "progress") {
      const bar = tr.querySelector(".bar > div");
      bar.style.width = event.percent + "%";
      tr.querySelector(".muted").textContent = event.percent + "%";
    } else {
      this.refresh(event.id);
      if (event.event === "completed" || event.event === "failed") this.workers();
    }
  },
};
tabs.tasks = tasks;
on("tasks", (event) => tasks.event(event));
for (const op of Object.keys(OPS)) $("task-op").append(h("option", { value: op }, op));
$("task-op").addEventListener("change", () => { $("task-args").value = JSON.stringify(OPS[$("task-op").value]); });
$("task-args").value = JSON.stringify(OPS.fibonacci);
$("task-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  let args;
  try { args = parseJson($("task-args").value || "{}"); } catch (error) { toast("The arguments are not JSON: " + error.message, "error"); return; }
  try {
    const request = { op: $("task-op").value, args, priority: $("task-priority").value, id: newId("web") };
    const delay = Number($("task-delay").value || 0);
    if (delay > 0) request.delay_ms = Math.round(delay * 1000);
    const task = await api("POST", "/api/tasks", request);
    if (!tasks.rows.has(task.id)) $("tasks-table").tBodies[0].prepend(tasks.row(Object.assign({ op: $("task-op").value }, task)));
    tasks.refresh(task.id);
    toast(`Task ${task.id} submitted`, "ok");
  } catch (error) { failed(error); }
});

const schedules = {
  timer: null,
  // Refreshes at most once a second while runs come in.
  soon() { if (!this.timer) this.timer = setTimeout(() => { this.timer = null; if (currentTab === "tasks") this.load(); }, 1000); },
  async load() {
    try {
      const reply = await api("GET", "/api/tasks/schedules");
      $("schedules-table").tBodies[0].replaceChildren(...reply.schedules.map((s) => this.row(s)));
    } catch (e) { failed(e); }
  },
  row(s) {
    const path = `/api/tasks/schedules/${encodeURIComponent(s.name)}`;
    const owner = `?owner=${encodeURIComponent(s.owner)}`;
    const act = async (method, suffix) => {
      try { await api(method, path + suffix + owner); this.load(); } catch (e) { failed(e); }
    };
    const state = s.paused ? "paused" : "active";
    return h("tr", { dataset: { name: s.name, state } },
      h("td", { class: "mono" }, s.name),
      h("td", {}, s.owner),
      h("td", { class: "mono" }, s.schedule + (s.time_zone ? " " + s.time_zone : "")),
      h("td", {}, s.op),
      h("td", { class: "state" }, pill(state)),
      h("td", { class: "num runs" }, s.runs),
      h("td", {}, time(s.last_run_ms)),
      h("td", {}, time(s.next_run_ms)),
      h("td", {},
        h("button", { class: "link", onclick: () => act("POST", s.paused ? "/resume" : "/pause") }, s.paused ? "resume" : "pause"),
        " ",
        h("button", { class: "link", onclick: () => act("DELETE", "") }, "delete")));
  },
};
$("schedule-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  let args;
  try { args = parseJson($("task-args").value || "{}"); } catch (error) { toast("The arguments are not JSON: " + error.message, "error"); return; }
  const request = { name: $("schedule-name").value, schedule: $("schedule-spec").value, op: $("task-op").value, args, priority: $("task-priority").value };
  if ($("schedule-tz").value) request.time_zone = $("schedule-tz").value;
  try {
    const created = await api("POST", "/api/tasks/schedules", request);
    toast(`Schedule ${created.name}: ${created.schedule}`, "ok");
    schedules.load();
  } catch (error) { failed(error); }
});


// ---------------------------------------------------------------- workflows
const WORKFLOW_EXAMPLE = {
  name: "word-report",
  steps: [
    { name: "a", op: "count_words", args: { text: "the quick brown fox" } },
    { name: "b", op: "count_words", args: { text: "jumps over the lazy dog" } },
    { name: "total", op: "sum", args: { numbers: [] }, after: ["a", "b"], feed: "numbers" },
    { name: "wait", op: "sleep", args: { ms: 2000 }, after: ["total"] },
    { name: "shout", op: "uppercase", args: { text: "done" }, after: ["wait"], on_failure: "skip" },
  ],
};
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}
const workflows = {
  selected: null,
  view: null,
  chosenStep: null,
  timer: null,
  listTimer: null,
  async load() {
    try {
      const reply = await api("GET", "/api/tasks/workflows?limit=20");
      $("workflows-table").tBodies[0].replaceChildren(...reply.workflows.map((w) => this.row(w)));
    } catch (e) { failed(e); }
  },
  row(w) {
    const open = ["running", "compensating"].includes(w.state);
    return h("tr", { dataset: { id: w.id, state: w.state }, class: w.id === this.selected ? "selected" : "" },
      h("td", { class: "mono" }, h("button", { class: "link", onclick: () => this.select(w.id) }, w.id)),
      h("td", {}, w.name || ""),
      h("td", { class: "state" }, pill(w.state)),
      h("td", { class: "num" }, `${w.completed_steps}/${w.step_count}`),
      h("td", {}, time(w.submitted_ms)),
      h("td", {}, open ? h("button", { class: "link", onclick: () => this.cancel(w.id) }, "cancel") : ""));
  },
  async select(id) {
    this.selected = id;
    this.chosenStep = null;
    await this.refresh();
  },
  async refresh() {
    if (!this.selected) return;
    try {
      this.view = await api("GET", "/api/tasks/workflows/" + encodeURIComponent(this.selected));
      this.draw();
    } catch (e) { failed(e); }
  },
  async cancel(id) {
    try { await api("POST", `/api/tasks/workflows/${encodeURIComponent(id)}/cancel`); this.load(); if (id === this.selected) this.refresh(); } catch (e) { failed(e); }
  },
  // A task moved: the workflow shown (and the list) may have too; looked at again at most
  // every 300 ms (the list every second).
  soon() {
    if (currentTab !== "tasks") return;
    if (this.selected && !this.timer) this.timer = setTimeout(() => { this.timer = null; this.refresh(); }, 300);
    if (!this.listTimer) this.listTimer = setTimeout(() => { this.listTimer = null; this.load(); }, 1000);
  },
  draw() {
    const w = this.view;
    $("workflow-view").hidden = false;
    $("workflow-title").replaceChildren(h("span", { class: "mono" }, w.id), " ", w.name || "", " ", pill(w.state),
      h("span", { class: "muted" }, ` ${w.completed_steps}/${w.step_count} steps completed`));
    const steps = w.steps || [];
    const index = new Map(steps.map((s, i) => [s.name, i]));
    // Depth: the longest chain of dependencies before a step; columns by depth.
    const depth = new Array(steps.length).fill(-1);
    const depthOf = (i, seen) => {
      if (depth[i] >= 0) return depth[i];
      if (seen.has(i)) return 0;
      seen.add(i);
      const after = (steps[i].after || []).map((n) => index.get(n)).filter((j) => j !== undefined);
      depth[i] = after.length ? 1 + Math.max(...after.map((j) => depthOf(j, seen))) : 0;
      return depth[i];
    };
    steps.forEach((_, i) => depthOf(i, new Set()));
    const columns = [];
    steps.forEach((s, i) => { (columns[depth[i]] = columns[depth[i]] || []).push(i); });
    const [W, H, GX, GY, PAD] = [150, 46, 60, 16, 10];
    const pos = new Map();
    columns.forEach((column, c) => column.forEach((i, r) => pos.set(i, { x: PAD + c * (W + GX), y: PAD + r * (H + GY) })));
    const width = PAD * 2 + columns.length * (W + GX) - GX;
    const height = PAD * 2 + Math.max(...columns.map((c) => c.length)) * (H + GY) - GY;
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "workflow graph" });
    steps.forEach((s, i) => {
      for (const name of s.after || []) {
        const from = pos.get(index.get(name)), to = pos.get(i);
        if (!from || !to) continue;
        const [x1, y1, x2, y2] = [from.x + W, from.y + H / 2, to.x, to.y + H / 2];
        const mid = (x1 + x2) / 2;
        root.append(svg("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, "data-from": name, "data-to": s.name }));
      }
    });
    steps.forEach((s, i) => {
      const { x, y } = pos.get(i);
      const node = svg("g", { class: `node ${s.state}${s.name === this.chosenStep ? " selected" : ""}`, "data-step": s.name, "data-state": s.state, transform: `translate(${x},${y})` },
        svg("title", {}, `${s.name}: ${s.state}`),
        svg("rect", { width: W, height: H, rx: 8 }),
        svg("text", { x: 10, y: 19 }, s.name.length > 18 ? s.name.slice(0, 17) + "…" : s.name),
        svg("text", { x: 10, y: 36, class: "sub" }, `${s.op} · ${s.state}`));
      node.addEventListener("click", () => { this.chosenStep = s.name; this.draw(); });
      root.append(node);
    });
    $("workflow-graph").replaceChildren(root);
    const chosen = steps.find((s) => s.name === this.chosenStep);
    $("workflow-step").replaceChildren(chosen ? this.describe(chosen) : "Click a step to see its task.");
  },
  describe(s) {
    const lines = [`${s.name} (${s.op}, on failure: ${s.on_failure}) is ${s.state}`];
    if (s.after && s.after.length) lines.push(`after ${s.after.join(", ")}` + (s.feed ? `, fed into ${s.feed}` : ""));
    if (s.task) lines.push(`task ${s.task}`);
    if (s.result !== undefined) lines.push("result " + toJson(s.result));
    if (s.error) lines.push("error: " + s.error);
    if (s.compensation_task) lines.push(`compensation task ${s.compensation_task}`);
    return lines.join("\n");
  },
};
$("workflow-json").value = JSON.stringify(WORKFLOW_EXAMPLE, null, 1);
$("workflow-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  let request;
  try { request = parseJson($("workflow-json").value); } catch (error) { toast("The workflow is not JSON: " + error.message, "error"); return; }
  try {
    const created = await api("POST", "/api/tasks/workflows", request);
    toast(`Workflow ${created.id} running`, "ok");
    await workflows.load();
    workflows.select(created.id);
  } catch (error) { failed(error); }
});

// ---------------------------------------------------------------- bank
const bank = {
  watched: new Map(),
  show() {
    // A person's own account is watched, and its statement shown, from the first look.
    const me = auth.me && auth.me.name;
    if (me && !this.watched.has(me)) this.lookup(me);
    for (const account of this.watched.keys()) this.lookup(account);
    if (me && !statement.query) {
      statement.query = { account: me, asset: "" };
      statement.load(false);
    }
  },
  async lookup(account) {
    try { const reply = await api("GET", "/api/bank/balance/" + encodeURIComponent(account)); this.set(reply.account, reply.balance, reply.pending); } catch (e) { failed(e); }
  },
  set(account, balance, held) {
    let tr = this.watched.get(account);
    if (held === undefined) held = tr ? tr._held || 0 : 0;
    const cells = [h("td", {}, account), h("td", { class: "num" }, money(balance)), h("td", { class: "num" }, money(held)),
      h("td", { class: "num" }, money(minus(balance, held))), h("td", { class: "muted" }, time(Date.now()))];
    if (tr) tr._held = held;
    if (!tr) { tr = h("tr", {}); this.watched.set(account, tr); $("bank-balances").tBodies[0].append(tr); }
    const previous = tr._balance;
    tr.replaceChildren(...cells);
    if (previous !== undefined && previous !== balance) { tr.classList.remove("flash-up", "flash-down"); void tr.offsetWidth; tr.classList.add(balance > previous ? "flash-up" : "flash-down"); }
    tr._balance = balance;
    tr._held = held;
  },
  event(event) {
    if (event.asset) return;
    const signed = signedAmount(event.op, event.amount);
    const feed = $("bank-feed");
    feed.prepend(h("div", { class: "item" },
      h("span", { class: "when" }, time(event.at)),
      h("span", {}, h("strong", {}, event.account), ` ${event.op} `,
        h("span", { class: signed < 0 ? "amount-neg" : "amount-pos" }, money(signed)),
        h("span", { class: "muted" }, ` → ${money(event.balance)}`))));
    while (feed.childElementCount > 200) feed.lastElementChild.remove();
    if (this.watched.has(event.account)) {
      if (/^(pending|void|expire|post)_out$/.test(event.op)) this.lookup(event.account);
      else this.set(event.account, event.balance);
    }
  },
};
tabs.bank = bank;
/** An entry's effect on the posted balance: holds and their release move nothing. */
function signedAmount(kind, amount) {
  if (kind === "withdraw" || kind === "transfer_out" || kind === "post_out") return amount < 0 ? amount : -amount;
  if (kind === "deposit" || kind === "transfer_in" || kind === "post_in" || kind === "set") return amount;
  return 0;
}
const KIND_NAMES = { deposit: "Deposit", withdraw: "Withdrawal", transfer_in: "Transfer in", transfer_out: "Transfer out",
  pending_in: "Hold (incoming)", pending_out: "Hold", post_in: "Hold posted (in)", post_out: "Hold posted",
  void_in: "Hold voided (in)", void_out: "Hold voided", expire_in: "Hold expired (in)", expire_out: "Hold expired", set: "Set" };
const statement = {
  query: null, before: null,
  async load(more) {
    if (!this.query) return;
    const params = new URLSearchParams({ limit: "50" });
    if (this.query.asset) params.set("asset", this.query.asset);
    if (more && this.before) params.set("before", String(this.before));
    try {
      const reply = await api("GET", `/api/bank/history/${encodeURIComponent(this.query.account)}?${params}`);
      const body = $("bank-entries").tBodies[0];
      if (!more) body.replaceChildren();
      for (const entry of reply.entries) {
        const signed = signedAmount(entry.kind, entry.amount);
        body.append(h("tr", {},
          h("td", { class: "muted" }, dateTime(entry.at)),
          h("td", {}, KIND_NAMES[entry.kind] || entry.kind),
          h("td", { class: "num " + (signed < 0 ? "amount-neg" : signed > 0 ? "amount-pos" : "muted") }, signed === 0 ? `(${money(entry.amount)})` : money(signed)),
          h("td", { class: "num" }, money(entry.balance)),
          h("td", { class: "num" }, money(entry.pending)),
          h("td", { class: "muted" }, entry.id || "")));
      }
      this.before = reply.entries.length ? reply.entries[reply.entries.length - 1].seq : this.before;
      $("bank-older").hidden = !reply.more;
      $("bank-statement-status").textContent = `${body.childElementCount} entries of ${reply.account} (${reply.asset})`;
    } catch (e) { failed(e); }
  },
};
$("bank-statement").addEventListener("submit", (e) => {
  e.preventDefault();
  const data = formData(e.target);
  statement.query = { account: data.account.trim(), asset: (data.asset || "").trim() };
  statement.before = null;
  statement.load(false);
});
$("bank-older").addEventListener("click", () => statement.load(true));
on("bank", (event) => bank.event(event));
function bankForm(id, path, build) {
  $(id).addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = formData(e.target);
    try {
      const reply = await api("POST", path, Object.assign(build(data), { id: newId("web") }));
      for (const account of reply.from ? [reply.from, reply.to] : [reply]) bank.set(account.account, account.balance);
      toast("Done", "ok");
      e.target.reset();
    } catch (error) { failed(error); }
  });
}
bankForm("bank-deposit", "/api/bank/deposit", (d) => ({ account: d.account, amount: integer(d.amount) }));
bankForm("bank-withdraw", "/api/bank/withdraw", (d) => ({ account: d.account, amount: integer(d.amount) }));
bankForm("bank-transfer", "/api/bank/transfer", (d) => ({ from: d.from, to: d.to, amount: integer(d.amount) }));
$("bank-lookup").addEventListener("submit", (e) => { e.preventDefault(); const a = $("bank-account").value.trim(); if (a) { bank.lookup(a); $("bank-account").value = ""; } });

// ---------------------------------------------------------------- coins
const coins = {
  rows: new Map(),
  show() {
    this.load();
    this.history();
    // The portfolio asked for last (at first, the person's own) is shown from the first look.
    const user = $("coins-portfolio-user").value.trim();
    if (user) this.portfolio(user);
    $("coins-manager").classList.toggle("hidden", !auth.isManager());
  },
  async load() {
    try {
      const reply = await api("GET", "/api/coins/assets");
      const body = $("coins-assets").tBodies[0];
      body.replaceChildren();
      this.rows.clear();
      const select = $("coins-symbol");
      const chosen = select.value;
      select.replaceChildren();
      for (const asset of reply.assets) {
        const tr = h("tr", { dataset: { symbol: asset.symbol } }, h("td", {}, h("strong", {}, asset.symbol)), h("td", {}, asset.name),
          h("td", { class: "num price" }, money(asset.price)), h("td", { class: "num" }, asset.available.toLocaleString()));
        this.rows.set(asset.symbol, tr);
        body.append(tr);
        select.append(h("option", { value: asset.symbol }, asset.symbol));
      }
      if (chosen) select.value = chosen;
    } catch (e) { failed(e); }
  },
  async history() {
    try {
      const reply = await api("GET", "/api/coins/history?limit=20");
      $("coins-history").tBodies[0].replaceChildren(...reply.orders.map((o) => h("tr", {},
        h("td", {}, o.id), h("td", {}, o.user), h("td", {}, pill(o.side === "buy" ? "done" : "pending"), " ", o.side), h("td", {}, o.symbol),
        h("td", { class: "num" }, o.quantity), h("td", { class: "num" }, money(o.total)), h("td", {}, dateTime(o.settled_ms)))));
    } catch (_) { /* the exchange may be down */ }
  },
  async portfolio(user) {
    try {
      const p = await api("GET", "/api/coins/portfolio/" + encodeURIComponent(user));
      $("coins-portfolio").replaceChildren(
        h("p", {}, "Bank balance ", h("strong", {}, money(p.balance)), " · holdings worth ", h("strong", {}, money(p.value))),
        h("table", { class: "grid" }, h("thead", {}, h("tr", {}, h("th", {}, "Symbol"), h("th", { class: "num" }, "Quantity"), h("th", { class: "num" }, "Value"))),
          h("tbody", {}, p.holdings.map((x) => h("tr", {}, h("td", {}, x.symbol), h("td", { class: "num" }, x.quantity), h("td", { class: "num" }, money(x.value)))))));
    } catch (e) { failed(e); }
  },
  price(event) {
    if (event.event !== "price") { if (currentTab === "coins") this.load(); return; }
    const tr = this.rows.get(event.symbol);
    if (!tr) return;
    tr.querySelector(".price").textContent = money(event.price);
    tr.classList.remove("flash-up", "flash-down"); void tr.offsetWidth;
    tr.classList.add(event.price >= (event.previous || 0) ? "flash-up" : "flash-down");
  },
};
tabs.coins = coins;
on("prices", (event) => coins.price(event));
$("coins-order").addEventListener("submit", async (e) => {
  e.preventDefault();
  const side = e.submitter ? e.submitter.value : "buy";
  const d = formData(e.target);
  try {
    const order = await api("POST", "/api/coins/" + side, { user: d.user, symbol: d.symbol, quantity: integer(d.quantity), id: newId("web") });
    toast(`${order.side} ${order.quantity} ${order.symbol}: ${order.state}, ${money(order.total)}`, order.state === "done" ? "ok" : "error");
    coins.load(); coins.history(); coins.portfolio(d.user);
    // The trade log follows the ledger's events a moment behind the reply.
    setTimeout(() => coins.history(), 500);
    $("coins-portfolio-user").value = d.user;
  } catch (error) { failed(error); }
});
$("coins-portfolio-form").addEventListener("submit", (e) => { e.preventDefault(); const u = $("coins-portfolio-user").value.trim(); if (u) coins.portfolio(u); });
$("coins-add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const d = formData(e.target);
  try {
    await api("POST", "/api/coins/admin/assets", { symbol: d.symbol, name: d.name, price: integer(d.price), quantity: integer(d.quantity) });
    toast(`${d.symbol} listed`, "ok"); e.target.reset(); coins.load();
  } catch (error) { failed(error); }
});
$("coins-update").addEventListener("submit", async (e) => {
  e.preventDefault();
  const d = formData(e.target);
  const change = {};
  try {
    if (d.price) change.price = integer(d.price);
    if (d.quantity) change.quantity = integer(d.quantity);
    await api("PATCH", "/api/coins/admin/assets/" + encodeURIComponent(d.symbol), change);
    toast(`${d.symbol} updated`, "ok"); coins.load();
  } catch (error) { failed(error); }
});
$("coins-remove").addEventListener("click", async () => {
  const symbol = $("coins-update").elements.symbol.value.trim();
  if (!symbol) return;
  try { await api("DELETE", "/api/coins/admin/assets/" + encodeURIComponent(symbol), undefined); toast(`${symbol} delisted`, "ok"); coins.load(); } catch (error) { failed(error); }
});

// ---------------------------------------------------------------- likes
const likes = {
  items: new Map(),
  show() { this.load(); this.nodes(); },
  async load() {
    try {
      const reply = await api("GET", "/api/likes/top?limit=50");
      for (const item of reply.items) this.set(item.item, item.count);
    } catch (e) { failed(e); }
  },
  async nodes() {
    try {
      const reply = await api("GET", "/api/likes/nodes");
      $("likes-leader").textContent = `Leader: ${reply.leader.node} (epoch ${reply.leader.epoch}, since ${time(reply.leader.since_ms)})`;
      $("likes-nodes").tBodies[0].replaceChildren(...reply.nodes.map((n) => h("tr", {},
        h("td", {}, n.node, n.leader ? " ★" : ""), h("td", { class: "num" }, n.items), h("td", { class: "num" }, n.likes), h("td", { class: "num" }, n.accepted_per_sec))));
    } catch (e) { $("likes-leader").textContent = e.message; }
  },
  /** An item's count, and (when a reply of the signed-in person's says) whether they like it. */
  set(item, count, liked) {
    let li = this.items.get(item);
    if (!li) {
      li = h("li", { dataset: { item } }, h("span", { class: "name" }, item), h("span", { class: "count" }, "0"),
        h("button", { class: "heart", onclick: () => this.toggle(item) }, "♥ Like"));
      this.items.set(item, li);
      $("likes-items").append(li);
    }
    const el = li.querySelector(".count");
    if (el.textContent !== String(count)) {
      el.textContent = String(count);
      li.classList.remove("flash-up"); void li.offsetWidth; li.classList.add("flash-up");
    }
    if (liked !== undefined) {
      li._liked = liked;
      const heart = li.querySelector(".heart");
      heart.textContent = liked ? "♥ Liked" : "♥ Like";
      heart.title = liked ? "Unlike" : "Like";
      heart.classList.toggle("on", liked);
    }
  },
  /** Likes the item, or takes back the person's like once they are known to like it. */
  async toggle(item) {
    const li = this.items.get(item);
    await this.like(item, !(li && li._liked));
  },
  async like(item, on = true) {
    try {
      const reply = await api("POST", `/api/likes/items/${encodeURIComponent(item)}/${on ? "like" : "unlike"}`);
      this.set(reply.item, reply.count, reply.liked);
    } catch (e) { failed(e); }
  },
};
tabs.likes = likes;
on("likes", (event) => likes.set(event.item, event.count));
$("likes-form").addEventListener("submit", (e) => { e.preventDefault(); const item = $("likes-item").value.trim(); if (item) { likes.like(item); $("likes-item").value = ""; } });

// ---------------------------------------------------------------- files
const files = {
  show() { $("files-upload").classList.toggle("hidden", !auth.isManager()); this.load(); },
  async load() {
    const params = new URLSearchParams({ limit: "500" });
    const prefix = $("files-prefix").value.trim();
    if (prefix) params.set("prefix", prefix);
    try {
      const reply = await api("GET", "/api/files?" + params);
      $("files-table").tBodies[0].replaceChildren(...reply.files.map((f) => {
        const path = f.name.split("/").map(encodeURIComponent).join("/");
        return h("tr", {}, h("td", { class: "mono" }, f.name), h("td", { class: "num" }, bytes(f.size)), h("td", {}, dateTime(f.modified_ms)),
          h("td", {}, h("a", { href: `/api/files/content/${path}?download=1`, download: f.name.split("/").pop() }, "Download"),
            auth.isManager() ? [" ", h("button", { class: "link remove", dataset: { name: f.name }, onclick: () => files.remove(f.name) }, "Remove")] : []));
      }));
    } catch (e) { failed(e); }
  },
  async remove(name) {
    if (!confirm(`Remove ${name}? Every file server stops serving it.`)) return;
    try {
      const removed = await api("DELETE", "/api/files/content/" + name.split("/").map(encodeURIComponent).join("/"));
      toast(`${removed.name} removed`, "ok");
      files.load();
    } catch (error) { failed(error); }
  },
};
tabs.files = files;
$("files-form").addEventListener("submit", (e) => { e.preventDefault(); files.load(); });
$("files-upload").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("files-upload-file").files[0];
  if (!file) return;
  const name = $("files-upload-name").value.trim() || file.name;
  try {
    const stat = await api("PUT", "/api/files/content/" + name.split("/").map(encodeURIComponent).join("/"), file);
    toast(`${stat.name} uploaded (${bytes(stat.size)})`, "ok");
    e.target.reset();
    files.load();
  } catch (error) { failed(error); }
});

// ---------------------------------------------------------------- start
async function start() {
  try { health = await api("GET", "/api/health"); } catch (e) { health = null; }
  await auth.check();
  setInterval(() => { if (auth.me && currentTab === "monitoring") monitoring.refresh(); }, 2000);
  setInterval(() => { if (!auth.me) return; if (currentTab === "likes") likes.nodes(); if (currentTab === "chat" && chat.session) chat.refreshWho(); }, 5000);
}
start();
