// RVM Fleet web view: plain JavaScript, no build step, no framework.
//
// Data flow: on sign-in the page loads the device list, alerts and incidents over REST, then
// keeps them current from the Server-Sent Events stream (GET /api/v1/stream): device summaries
// that changed (at most one per device per second), alert transitions, incident changes and
// command state changes. Views read the shared state `S` and re-render what they show.
//
// Routes (location.hash): #/ overview, #/device/{id}, #/alerts, #/incidents, #/audit, and
// #/notifications (ui/notify.js: channels with a test button, maintenance windows, the outbox),
// #/estate (ui/estate.js: the fleet map, store and retailer pages).
// #/rollouts (ui/rollouts.js: commands awaiting approval, rollouts with resume and abort).
// Views in other files register in `window.__fleetUi.views` and use its helpers.
"use strict";
(() => {
  // ---------------------------------------------------------------------------------------
  // constants

  const ROW_H = 28; // px, must match --row-h in app.css
  const OVERSCAN = 10; // rows rendered above and below the visible ones
  const SPARK_WINDOW_MS = 15 * 60e3;
  const SPARK_STEP_MS = 30e3;
  const SPARK_TTL_MS = 5 * 60e3; // a sparkline's history is fetched again after this
  const SPARK_FETCHES = 4; // concurrent history requests for sparklines
  const POLL_WITHOUT_LIVE_MS = 5000; // refetch devices this often while the stream is down
  const COMMAND_POLL_MS = 1000;
  const STATUS_ORDER = { offline: 0, stale: 1, degraded: 2, online: 3 };
  const FINAL_COMMAND = new Set(["succeeded", "failed", "rejected", "expired", "timed_out"]);
  const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
  const RANGES = [
    { key: "15m", label: "15 min", ms: 15 * 60e3, step: "5s", live: true },
    { key: "1h", label: "1 h", ms: 3600e3, step: "15s", live: true },
    { key: "24h", label: "24 h", ms: 24 * 3600e3, step: "5m", live: false },
    { key: "7d", label: "7 d", ms: 7 * 24 * 3600e3, step: "30m", live: false },
  ];
  const ACTIONS = [
    { name: "restart_unit", label: "Restart unit", field: { key: "unit", label: "systemd unit", value: "vision.service" } },
    { name: "restart_process", label: "Restart process", field: { key: "name", label: "process name", value: "vision" } },
    { name: "drop_caches", label: "Drop caches" },
    { name: "clean_temp", label: "Clean temp" },
    { name: "collect_diagnostics", label: "Collect diagnostics" },
    { name: "reboot", label: "Reboot", danger: true },
  ];

  // ---------------------------------------------------------------------------------------
  // shared state

  const S = {
    token: null,
    me: null, // {name, role}
    devices: new Map(), // id -> DeviceSummary
    alerts: new Map(), // id -> Alert (active and recently resolved)
    alertCounts: new Map(), // device -> active alerts
    incidents: new Map(), // id -> Incident
    sparks: new Map(), // id -> {pts: [[ts, v]], fetched: ms, loading: bool}
    loaded: false,
    live: { es: null, connected: false, queue: null, lastOpen: 0 },
    view: null,
    overview: { site: "", tag: "", status: "", q: "", retailer: "", model: "", group: "", cols: "", sort: "status", dir: 1, scroll: 0 },
  };
  // read by tests and tests/browser/bench-overview.mjs
  window.__fleet = { firstRenderMs: null, rows: 0, liveEvents: 0, deviceUpdates: 0, applyMs: 0 };

  // ---------------------------------------------------------------------------------------
  // helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const fmt = (v, d = 1) => (v === undefined || v === null || Number.isNaN(v) ? "–" : Number(v).toFixed(d));
  const isOperator = () => S.me && ROLE_RANK[S.me.role] >= ROLE_RANK.operator;
  const pad = (n) => String(n).padStart(2, "0");
  // A time as text in the viewer's zone (toasts, titles).
  function timeText(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return today ? t : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
  }
  // A time as HTML: the viewer's zone, and on hover the same instant in UTC with the offset
  // (the server does not know a machine's own zone).
  function time(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    const off = -d.getTimezoneOffset();
    const zone = `UTC${off < 0 ? "−" : "+"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
    const iso = d.toISOString().replace(/\.\d{3}Z$/, "Z");
    return `<time datetime="${iso}" title="${iso.replace("T", " ")} UTC · shown in your zone (${zone})">${timeText(ms)}</time>`;
  }
  // Text from the server with RFC 3339 UTC times in it (probable causes), escaped, its times
  // shown in the viewer's zone.
  const withTimes = (text) => esc(text).replace(/\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\b/g, (t) => time(Date.parse(t)));
  function ago(ms) {
    if (!ms) return "never";
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }
  const badge = (cls, text) => `<span class="st ${esc(cls)}">${esc(text ?? cls)}</span>`;
  const devLink = (id) => `<a href="#/device/${encodeURIComponent(id)}">${esc(id)}</a>`;
  function actionText(a) {
    if (typeof a === "string") return a;
    if (a && typeof a === "object") {
      const [k, v] = Object.entries(a)[0] || ["?", {}];
      const arg = v && typeof v === "object" ? Object.values(v)[0] : v;
      return arg === undefined ? k : `${k}(${arg})`;
    }
    return "?";
  }
  let toastTimer = null;
  function toast(msg, bad = false) {
    const t = $("#toast");
    t.textContent = msg;
    t.className = "toast" + (bad ? " bad" : "");
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), 4000);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Authorization: "Bearer " + S.token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (r.status === 401) {
      signOut("That token was not accepted.");
      throw new ApiError(401, "unauthenticated");
    }
    if (!r.ok) throw new ApiError(r.status, (data && data.message) || r.statusText);
    return data;
  }

  // ---------------------------------------------------------------------------------------
  // confirmation dialog: fields [{key, label, value, type, options, required}] -> values or null

  function ask({ title, html = "", fields = [], ok = "OK", danger = false, submit }) {
    const dlg = $("#dlg");
    $("#dlg-title").textContent = title;
    $("#dlg-err").textContent = "";
    $("#dlg-body").innerHTML =
      html +
      fields
        .map((f) => {
          const id = `dlg-f-${f.key}`;
          if (f.options)
            return `<label>${esc(f.label)}<select id="${id}" name="${esc(f.key)}">${f.options
              .map(([v, l]) => `<option value="${esc(v)}"${v === f.value ? " selected" : ""}>${esc(l)}</option>`)
              .join("")}</select></label>`;
          if (f.type === "checkbox")
            return `<label><input type="checkbox" id="${id}" name="${esc(f.key)}"${f.value ? " checked" : ""} style="display:inline;width:auto"> ${esc(f.label)}</label>`;
          return `<label>${esc(f.label)}<input id="${id}" name="${esc(f.key)}" value="${esc(f.value ?? "")}"${f.required ? " required" : ""} autocomplete="off"></label>`;
        })
        .join("");
    const okBtn = $("#dlg-ok");
    okBtn.textContent = ok;
    okBtn.className = danger ? "danger" : "primary";
    okBtn.disabled = false;
    return new Promise((resolve) => {
      const form = $("#dlg-form");
      const values = () => {
        const v = {};
        for (const f of fields) {
          const el = $(`#dlg-f-${f.key}`);
          v[f.key] = f.type === "checkbox" ? el.checked : el.value.trim();
        }
        return v;
      };
      const onSubmit = async (ev) => {
        if (ev.submitter && ev.submitter.value === "cancel") return; // closes the dialog
        ev.preventDefault();
        const v = values();
        const missing = fields.find((f) => f.required && !v[f.key]);
        if (missing) {
          $("#dlg-err").textContent = `${missing.label} is required`;
          return;
        }
        if (!submit) return finish(v);
        okBtn.disabled = true;
        try {
          finish(await submit(v));
        } catch (e) {
          $("#dlg-err").textContent = e.message;
          okBtn.disabled = false;
        }
      };
      const finish = (v) => {
        cleanup();
        dlg.close();
        resolve(v);
      };
      const onClose = () => {
        cleanup();
        resolve(null);
      };
      const cleanup = () => {
        form.removeEventListener("submit", onSubmit);
        dlg.removeEventListener("close", onClose);
      };
      form.addEventListener("submit", onSubmit);
      dlg.addEventListener("close", onClose);
      dlg.showModal();
      const first = $("#dlg-body input, #dlg-body select");
      if (first) first.focus();
    });
  }

  // ---------------------------------------------------------------------------------------
  // sign-in

  function readTokenFromHash() {
    const m = location.hash.match(/token=([^&]+)/);
    if (!m) return;
    localStorage.setItem("rvmToken", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search + "#/");
  }

  function signOut(msg) {
    localStorage.removeItem("rvmToken");
    S.token = null;
    S.me = null;
    S.loaded = false;
    stopLive();
    if (S.view && S.view.unmount) S.view.unmount();
    S.view = null;
    $("#view").innerHTML = "";
    $("#nav").hidden = true;
    $("#signout").hidden = true;
    $("#me").textContent = "";
    $("#counts").innerHTML = "";
    $("#signin").hidden = false;
    $("#signin-err").textContent = msg || "";
    $("#token").value = "";
    $("#token").focus();
  }

  async function start() {
    readTokenFromHash();
    S.token = localStorage.getItem("rvmToken");
    if (!S.token) return signOut();
    $("#signin").hidden = true;
    try {
      S.me = await api("/api/v1/whoami").catch((e) => {
        if (e.status === 401) throw e;
        return { name: "?", role: "viewer" }; // an older server without whoami
      });
    } catch (e) {
      if (e.status !== 401) $("#view").innerHTML = `<div class="card err">Server unreachable: ${esc(e.message)}</div>`;
      return;
    }
    document.body.dataset.role = S.me.role;
    // a scoped token sees one store or retailer: say which (docs/estate.md, "Scoped access")
    const scope = S.me.scope ? Object.entries(S.me.scope).map(([k, v]) => `${k} ${v}`)[0] : "";
    $("#me").textContent = `${S.me.name} (${S.me.role}${scope ? `, ${scope}` : ""})`;
    $("#signout").hidden = false;
    $("#nav").hidden = false;
    for (const el of document.querySelectorAll(".op-only")) el.hidden = !isOperator();
    startLive();
    await loadAll();
    route();
  }

  // ---------------------------------------------------------------------------------------
  // data loading and live updates

  async function loadDevices() {
    const { devices } = await api("/api/v1/devices");
    const seen = new Set();
    for (const d of devices) {
      S.devices.set(d.id, d);
      seen.add(d.id);
    }
    for (const id of S.devices.keys()) if (!seen.has(id)) S.devices.delete(id);
  }

  async function loadAlerts() {
    const { alerts } = await api("/api/v1/alerts?state=all");
    S.alerts.clear();
    for (const a of alerts) S.alerts.set(a.id, a);
    recountAlerts();
  }

  async function loadIncidents() {
    const list = await api("/api/v1/incidents");
    S.incidents.clear();
    for (const i of [...list.recent, ...list.open]) S.incidents.set(i.id, i);
    updateNav();
  }

  async function loadAll() {
    // Events that arrive while loading are kept and applied after it (they are newer).
    S.live.queue = [];
    try {
      await Promise.all([loadDevices(), loadAlerts(), loadIncidents()]);
    } catch (e) {
      if (e.status !== 401) toast(`Loading failed: ${e.message}`, true);
    }
    const q = S.live.queue || [];
    S.live.queue = null;
    S.loaded = true;
    for (const ev of q) applyEvent(ev);
    updateCounts();
    if (S.view && S.view.refresh) S.view.refresh();
  }

  function startLive() {
    stopLive();
    const es = new EventSource("/api/v1/stream?token=" + encodeURIComponent(S.token));
    S.live.es = es;
    es.onopen = () => {
      const reconnect = S.live.lastOpen !== 0;
      S.live.connected = true;
      S.live.lastOpen = Date.now();
      setConn();
      // Something may have changed while the stream was down.
      if (reconnect) loadAll();
    };
    es.onerror = () => {
      S.live.connected = false;
      setConn();
      if (es.readyState === EventSource.CLOSED) {
        // The server refused (a bad token) or is gone: check the token, then retry later.
        api("/api/v1/whoami")
          .then(() => setTimeout(() => S.token && startLive(), 3000))
          .catch(() => {});
      }
    };
    es.onmessage = (m) => {
      const t0 = performance.now();
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      window.__fleet.liveEvents++;
      if (ev.type === "devices") window.__fleet.deviceUpdates += ev.devices.length;
      if (S.live.queue) S.live.queue.push(ev);
      else applyEvent(ev);
      window.__fleet.applyMs += performance.now() - t0;
    };
    // the benchmark feeds synthetic frames through the same handler
    window.__fleet.inject = (data) => es.onmessage({ data });
  }

  function stopLive() {
    if (S.live.es) S.live.es.close();
    S.live.es = null;
    S.live.connected = false;
    S.live.lastOpen = 0;
    setConn();
  }

  function setConn() {
    const c = $("#conn");
    if (!S.token) {
      c.className = "conn";
      c.textContent = "";
      return;
    }
    c.className = "conn " + (S.live.connected ? "live" : "down");
    c.textContent = S.live.connected ? "live" : "reconnecting";
  }

  function applyEvent(ev) {
    switch (ev.type) {
      case "devices": {
        // compact: metric names once, values in their order, metadata only when it changed
        const names = ev.names;
        const ids = [];
        for (const c of ev.devices) {
          let d = S.devices.get(c.id);
          if (!d) {
            d = { id: c.id, tags: [] };
            S.devices.set(c.id, d);
          }
          d.status = c.status;
          d.status_reason = c.status_reason;
          d.last_seen_ms = c.last_seen_ms;
          d.health = c.health;
          d.items_per_hour = c.items_per_hour;
          if (c.meta) Object.assign(d, c.meta);
          const m = {};
          for (let i = 0; i < names.length; i++) if (c.m[i] !== null) m[names[i]] = c.m[i];
          d.metrics = m;
          ids.push(c.id);
          sparkAppend(d);
        }
        updateCounts();
        if (S.view && S.view.onDevices) S.view.onDevices(ids);
        break;
      }
      case "alert":
      case "acknowledged": {
        const a = ev.alert;
        S.alerts.set(a.id, a);
        recountAlerts();
        if (S.view && S.view.onAlerts) S.view.onAlerts();
        // a member of an open incident came back: its probable cause was rewritten (counts)
        if (a.state === "resolved" && [...S.incidents.values()].some((i) => i.state === "open" && i.members.includes(a.id))) {
          clearTimeout(S.incidentsSoon);
          S.incidentsSoon = setTimeout(() => loadIncidents().then(() => S.view && S.view.onIncidents && S.view.onIncidents()).catch(() => {}), 500);
        }
        break;
      }
      case "silences":
        loadAlerts().then(() => S.view && S.view.onAlerts && S.view.onAlerts(true));
        break;
      case "maintenance":
        if (S.view && S.view.onMaintenance) S.view.onMaintenance();
        break;
      case "incident": {
        S.incidents.set(ev.incident.id, ev.incident);
        updateNav();
        if (S.view && S.view.onIncidents) S.view.onIncidents();
        break;
      }
      case "command":
        if (S.view && S.view.onCommand) S.view.onCommand(ev.command);
        break;
      case "resync":
        loadAll();
        break;
      default:
        break; // hello, and anything newer than this page
    }
  }

  function recountAlerts() {
    S.alertCounts.clear();
    for (const a of S.alerts.values()) {
      if (a.state === "resolved") continue;
      S.alertCounts.set(a.device, (S.alertCounts.get(a.device) || 0) + 1);
    }
    updateNav();
  }

  function updateNav() {
    let firing = 0;
    for (const a of S.alerts.values()) if (a.state === "firing" && !a.ack && !a.silenced_by) firing++;
    let open = 0;
    for (const i of S.incidents.values()) if (i.state === "open") open++;
    $("#nav-alerts").textContent = firing ? String(firing) : "";
    $("#nav-incidents").textContent = open ? String(open) : "";
  }

  let lastCounts = "";
  function updateCounts() {
    const c = { online: 0, degraded: 0, stale: 0, offline: 0 };
    for (const d of S.devices.values()) c[d.status] = (c[d.status] || 0) + 1;
    const html =
      `<button class="st" data-status="" title="all machines">${S.devices.size} machines</button>` +
      Object.entries(c)
        .map(([k, v]) => `<button class="st ${k}" data-status="${k}" title="show ${k} machines">${k} ${v}</button>`)
        .join("");
    if (html !== lastCounts) {
      $("#counts").innerHTML = html;
      lastCounts = html;
    }
  }

  // ---------------------------------------------------------------------------------------
  // sparklines: CPU over the last 15 min, history fetched for visible rows, then live

  const sparkQueue = [];
  let sparkActive = 0;

  function sparkAppend(d) {
    const s = S.sparks.get(d.id);
    const v = d.metrics && d.metrics["cpu.usage_pct"];
    if (!s || v === undefined) return;
    const now = Date.now();
    const bucket = Math.floor(now / SPARK_STEP_MS) * SPARK_STEP_MS;
    const last = s.pts[s.pts.length - 1];
    if (last && last[0] === bucket) {
      last[2] += 1;
      last[1] += (v - last[1]) / last[2];
    } else s.pts.push([bucket, v, 1]);
    while (s.pts.length && s.pts[0][0] < now - SPARK_WINDOW_MS) s.pts.shift();
    s.version++;
  }

  function wantSparks(ids) {
    const now = Date.now();
    for (const id of ids) {
      const s = S.sparks.get(id);
      if (s && (s.loading || now - s.fetched < SPARK_TTL_MS)) continue;
      if (!sparkQueue.includes(id)) sparkQueue.push(id);
    }
    pumpSparks();
  }

  function pumpSparks() {
    while (sparkActive < SPARK_FETCHES && sparkQueue.length) {
      const id = sparkQueue.shift();
      const prev = S.sparks.get(id);
      S.sparks.set(id, { pts: prev ? prev.pts : [], fetched: prev ? prev.fetched : 0, loading: true, version: prev ? prev.version + 1 : 0 });
      sparkActive++;
      const now = Date.now();
      api(`/api/v1/devices/${encodeURIComponent(id)}/metrics?name=cpu.usage_pct&from=${now - SPARK_WINDOW_MS}&to=${now}&step=${SPARK_STEP_MS / 1000}s`)
        .then((r) => {
          S.sparks.set(id, { pts: r.points.map((p) => [p[0], p[3], 1]), fetched: Date.now(), loading: false, version: (S.sparks.get(id)?.version ?? 0) + 1 });
          if (S.view && S.view.onSpark) S.view.onSpark(id);
        })
        .catch(() => S.sparks.set(id, { pts: prev ? prev.pts : [], fetched: Date.now(), loading: false, version: (S.sparks.get(id)?.version ?? 0) + 1 }))
        .finally(() => {
          sparkActive--;
          pumpSparks();
        });
    }
  }

  function drawSpark(canvas, id) {
    const s = S.sparks.get(id);
    const dpr = window.devicePixelRatio || 1;
    const w = 100, h = 20;
    if (canvas.width !== w * dpr) {
      canvas.width = w * dpr;
      canvas.height = h * dpr;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!s || s.pts.length < 2) return;
    // a machine with less history than the window fills the width with what it has
    const t1 = Date.now(), t0 = Math.max(t1 - SPARK_WINDOW_MS, s.pts[0][0]);
    if (t1 - t0 < 1000) return;
    ctx.beginPath();
    ctx.strokeStyle = "#2563eb";
    ctx.lineWidth = 1.2;
    s.pts.forEach(([t, v], i) => {
      const x = ((t - t0) / (t1 - t0)) * (w - 2) + 1;
      const y = h - 1 - (Math.min(100, Math.max(0, v)) / 100) * (h - 2);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  // ---------------------------------------------------------------------------------------
  // overview: counts, filters, sortable virtualised table

  const COLUMNS = [
    { key: "id", label: "Machine", get: (d) => d.id },
    { key: "status", label: "Status", get: (d) => STATUS_ORDER[d.status] ?? 9 },
    { key: "site", label: "Site", get: (d) => d.site || "" },
    { key: "cpu", label: "CPU %", num: true, get: (d) => d.metrics["cpu.usage_pct"] },
    { key: "mem", label: "Mem %", num: true, get: (d) => d.metrics["memory.used_pct"] },
    { key: "gpu", label: "GPU %", num: true, get: (d) => d.metrics["gpu.load_pct"] },
    { key: "gput", label: "GPU °C", num: true, get: (d) => d.metrics["gpu.temp_c"] },
    { key: "power", label: "Power W", num: true, get: (d) => (d.metrics["power.total_mw"] ?? NaN) / 1000 },
    { key: "items", label: "Items/h", num: true, get: (d) => d.items_per_hour },
    { key: "spark", label: "CPU 15 min", nosort: true },
    { key: "alerts", label: "Alerts", num: true, get: (d) => S.alertCounts.get(d.id) || 0 },
    { key: "seen", label: "Last seen", get: (d) => -d.last_seen_ms },
  ];

  // The fixed columns and the extra ones chosen (ui/columns.js: figures of the look inside).
  const columns = () => (UI.overviewColumns ? COLUMNS.concat(UI.overviewColumns.chosen(S.overview)) : COLUMNS);
  const headHtml = (cols) =>
    cols.map((c) => `<div data-key="${c.key}" class="${c.num ? "num " : ""}${c.nosort ? "nosort" : ""}"${c.title ? ` title="${esc(c.title)}"` : ""}>${esc(c.label)}</div>`).join("");

  // The cells of one row, as text; a row element is reused and only changed text is written.
  function rowCells(d) {
    const m = d.metrics || {};
    const power = m["power.total_mw"];
    return [
      null, // machine link
      null, // status badge
      d.site || "",
      fmt(m["cpu.usage_pct"]),
      fmt(m["memory.used_pct"]),
      fmt(m["gpu.load_pct"]),
      fmt(m["gpu.temp_c"]),
      power === undefined ? "–" : fmt(power / 1000, 2),
      d.items_per_hour == null ? "–" : fmt(d.items_per_hour, 0),
      null, // sparkline
      String(S.alertCounts.get(d.id) || 0),
      ago(d.last_seen_ms),
    ];
  }

  function makeRow(cols) {
    const row = document.createElement("div");
    row.className = "vt-row vt-cols";
    row._extra = cols.filter((c) => c.extra);
    row.innerHTML = cols.map((c) => (c.key === "spark" ? `<div><canvas width="100" height="20"></canvas></div>` : `<div${c.num ? ' class="num"' : ""}${c.extra ? ` data-col="${c.key}"` : ""}></div>`)).join("");
    row._cells = [...row.children];
    row._vals = [];
    row._canvas = row.querySelector("canvas");
    const st = document.createElement("span");
    row._cells[1].appendChild(st);
    row._badge = st;
    row._link = row._cells[0].appendChild(document.createElement("a"));
    return row;
  }

  function fillRow(row, d) {
    if (row.dataset.device !== d.id) {
      row.dataset.device = d.id;
      row._link.textContent = d.id;
      row._link.href = "#/device/" + encodeURIComponent(d.id);
      row._spark = null;
    }
    if (row.dataset.status !== d.status) {
      row.dataset.status = d.status;
      row._badge.className = "st " + d.status;
      row._badge.textContent = d.status;
    }
    if (row.title !== d.status_reason) row.title = d.status_reason;
    const vals = rowCells(d);
    for (let i = 0; i < vals.length; i++) {
      const v = vals[i];
      if (v === null || row._vals[i] === v) continue;
      row._vals[i] = v;
      row._cells[i].textContent = v;
    }
    for (let j = 0, i = vals.length; j < row._extra.length; j++, i++) {
      const v = row._extra[j].text(d);
      if (row._vals[i] === v) continue;
      row._vals[i] = v;
      row._cells[i].textContent = v;
    }
    row._cells[10].classList.toggle("alerts-n", vals[10] !== "0");
    const sp = S.sparks.get(d.id);
    const key = sp ? `${sp.version}:${Math.floor(Date.now() / 10000)}` : "none";
    if (row._spark !== key) {
      row._spark = key;
      drawSpark(row._canvas, d.id);
    }
  }

  const Overview = {
    mount(root) {
      const o = S.overview;
      const V = UI.overviewViews; // ui/views.js: retailer, model, group by, the view in the URL
      if (V) V.fromHash(o);
      root.innerHTML = `
        <div class="toolbar">
          <input type="search" id="ov-q" placeholder="Search machine, site, tag, model…" value="${esc(o.q)}">
          <label>Site <select id="ov-site"></select></label>
          <label>Tag <select id="ov-tag"></select></label>
          <label>Status <select id="ov-status">
            ${["", "online", "degraded", "stale", "offline"].map((s) => `<option value="${s}"${s === o.status ? " selected" : ""}>${s || "any"}</option>`).join("")}
          </select></label>
          ${V ? V.toolbar(o) : ""}
          ${UI.overviewColumns ? UI.overviewColumns.toolbar(o) : ""}
          <span class="muted" id="ov-shown"></span>
        </div>
        <div id="ov-groups"></div>
        <div class="vt-wrap" id="ov-wrap">
          <div class="vt-head vt-cols" id="ov-head"></div>
          <div class="vt" id="ov-vt"><div class="vt-spacer" id="ov-spacer"></div><div class="vt-rows" id="ov-rows"></div><div class="empty" id="ov-empty" hidden></div></div>
        </div>`;
      this.vt = $("#ov-vt");
      this.rows = $("#ov-rows");
      this.spacer = $("#ov-spacer");
      this.empty = $("#ov-empty");
      this.pool = [];
      this.list = [];
      this.optionsKey = "";
      this.pending = null;
      this.vt.addEventListener("scroll", () => this.schedule(false), { passive: true });
      $("#ov-q").addEventListener("input", (e) => {
        o.q = e.target.value;
        this.schedule(true);
      });
      for (const k of ["site", "tag", "status"])
        $(`#ov-${k}`).addEventListener("change", (e) => {
          o[k] = e.target.value;
          this.vt.scrollTop = 0;
          this.schedule(true);
        });
      $("#ov-head").addEventListener("click", (e) => {
        const k = e.target.closest("[data-key]");
        if (!k || k.classList.contains("nosort")) return;
        if (o.sort === k.dataset.key) o.dir = -o.dir;
        else {
          o.sort = k.dataset.key;
          o.dir = 1;
        }
        this.schedule(true);
      });
      this.rows.addEventListener("click", (e) => {
        const r = e.target.closest("[data-device]");
        if (r) location.hash = "#/device/" + encodeURIComponent(r.dataset.device);
      });
      this.onResize = () => this.schedule(false);
      window.addEventListener("resize", this.onResize);
      this.timer = setInterval(() => this.schedule(false), 1000); // ages ("12 s ago")
      if (V) V.mount(this, o);
      if (UI.overviewColumns) UI.overviewColumns.mount(this, o, () => S.devices.values());
      this.setColumns(false);
      this.refilter();
      this.vt.scrollTop = o.scroll;
      this.render();
    },
    unmount() {
      S.overview.scroll = this.vt ? this.vt.scrollTop : 0;
      window.removeEventListener("resize", this.onResize);
      clearInterval(this.timer);
      if (this.pending) cancelAnimationFrame(this.pending.raf);
      this.pending = null;
    },
    // Coalesces work into one animation frame: refilter (sort, filter) and/or render.
    schedule(refilter) {
      if (this.pending) {
        this.pending.refilter ||= refilter;
        return;
      }
      this.pending = { refilter, raf: requestAnimationFrame(() => {
        const p = this.pending;
        this.pending = null;
        if (p.refilter) this.refilter();
        this.render();
      }) };
    },
    refresh() {
      this.schedule(true);
    },
    // The header and the rows for the columns chosen now: rows are built again.
    setColumns(again = true) {
      const cols = columns();
      this.cols = cols;
      $("#ov-head").innerHTML = headHtml(cols);
      for (const row of this.pool) row.remove();
      this.pool = [];
      if (UI.overviewColumns) UI.overviewColumns.layout($("#ov-wrap"), cols.length - COLUMNS.length);
      if (again) this.schedule(true);
    },
    onDevices() {
      this.schedule(true);
    },
    onAlerts() {
      this.schedule(S.overview.sort === "alerts");
    },
    onSpark() {
      this.schedule(false);
    },
    updateOptions() {
      const sites = new Set(), tags = new Set();
      for (const d of S.devices.values()) {
        if (d.site) sites.add(d.site);
        for (const t of d.tags || []) tags.add(t);
      }
      const key = [...sites].sort().join("\u0001") + "\u0002" + [...tags].sort().join("\u0001");
      if (key === this.optionsKey) return;
      this.optionsKey = key;
      const o = S.overview;
      const opts = (set, cur) =>
        `<option value="">any</option>` + [...set].sort().map((v) => `<option value="${esc(v)}"${v === cur ? " selected" : ""}>${esc(v)}</option>`).join("");
      $("#ov-site").innerHTML = opts(sites, o.site);
      $("#ov-tag").innerHTML = opts(tags, o.tag);
    },
    refilter() {
      const o = S.overview;
      this.updateOptions();
      const q = o.q.trim().toLowerCase();
      const out = [];
      for (const d of S.devices.values()) {
        if (o.site && d.site !== o.site) continue;
        if (o.tag && !(d.tags || []).includes(o.tag)) continue;
        if (o.status && d.status !== o.status) continue;
        if (UI.overviewViews && !UI.overviewViews.matches(d, o)) continue;
        if (q) {
          const hay = `${d.id} ${d.site || ""} ${(d.tags || []).join(" ")} ${d.board || ""} ${d.vision_model_version || ""} ${d.agent_version || ""} ${d.status} ${d.status_reason}`.toLowerCase();
          if (!hay.includes(q)) continue;
        }
        out.push(d);
      }
      const col = this.cols.find((c) => c.key === o.sort) || COLUMNS[1];
      const dir = o.dir;
      const key = (d) => {
        const v = col.get(d);
        return v === undefined || v === null || Number.isNaN(v) ? null : v;
      };
      const keyed = out.map((d) => [key(d), d]);
      keyed.sort((a, b) => {
        // missing values sort last whatever the direction
        if (a[0] === null || b[0] === null) return a[0] === b[0] ? cmpId(a[1], b[1]) : a[0] === null ? 1 : -1;
        const c = typeof a[0] === "string" ? a[0].localeCompare(b[0]) : a[0] - b[0];
        return c ? c * dir : cmpId(a[1], b[1]);
      });
      this.list = keyed.map((k) => k[1]);
      if (UI.overviewViews) this.list = UI.overviewViews.after(this.list, S.devices.values(), o);
      this.spacer.style.height = this.list.length * ROW_H + "px";
      for (const el of document.querySelectorAll("#ov-head [data-key]")) {
        el.classList.toggle("sorted", el.dataset.key === o.sort);
        el.classList.toggle("desc", el.dataset.key === o.sort && dir < 0);
      }
      $("#ov-shown").textContent =
        this.list.length === S.devices.size ? `${S.devices.size} machines` : `${this.list.length} of ${S.devices.size} machines`;
    },
    render() {
      const top = this.vt.scrollTop;
      const height = this.vt.clientHeight || 600;
      const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
      const last = Math.min(this.list.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
      const slice = this.list.slice(first, last);
      this.rows.style.transform = `translateY(${first * ROW_H}px)`;
      const pool = this.pool;
      while (pool.length < slice.length) pool.push(this.rows.appendChild(makeRow(this.cols)));
      for (let i = 0; i < pool.length; i++) {
        const row = pool[i];
        const d = slice[i];
        if (!d) {
          if (!row.hidden) row.hidden = true;
          continue;
        }
        if (row.hidden) row.hidden = false;
        fillRow(row, d);
      }
      this.empty.hidden = slice.length > 0;
      this.empty.textContent = S.loaded ? "No machine matches." : "Loading…";
      wantSparks(slice.map((d) => d.id));
      if (S.loaded && window.__fleet.firstRenderMs === null) {
        window.__fleet.firstRenderMs = performance.now();
        window.__fleet.rows = this.list.length;
        performance.mark("fleet:first-render");
      }
    },
  };
  const cmpId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

  // ---------------------------------------------------------------------------------------
  // machine page: header, commands, charts over a range, health, events, delivery

  function chartSpecs(d) {
    const m = d ? d.metrics || {} : {};
    const has = (k) => k in m;
    const rails = Object.keys(m).filter((k) => k.startsWith("power.rail.")).sort();
    const palette = ["#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#14b8a6"];
    return [
      { id: "cpu", title: "CPU and memory (%)", scales: { "%": [0, 100] }, series: [
        { m: "cpu.usage_pct", label: "CPU %", color: "#2563eb", scale: "%" },
        { m: "memory.used_pct", label: "Memory %", color: "#9333ea", scale: "%" },
      ] },
      { id: "gpu", title: "GPU load (%) and temperature (°C)", scales: { "%": [0, 100] }, series: [
        { m: "gpu.load_pct", label: "GPU load %", color: "#059669", scale: "%" },
        { m: "gpu.temp_c", label: "GPU °C", color: "#dc2626", scale: "°C" },
        { m: "temp.max_c", label: "Hottest °C", color: "#fb923c", scale: "°C", dash: true },
      ] },
      { id: "power", title: "Power (W)", series: [
        // the total is the input rail when there is one: then that rail is the total
        ...(rails.some((r) => /^power\.rail\.(VDD_IN|POM_5V_IN)_mw$/.test(r)) ? [] : [{ m: "power.total_mw", label: "Total W", color: "#64748b", scale: "W", div: 1000 }]),
        ...rails.map((r, i) => ({ m: r, label: r.slice("power.rail.".length).replace(/_mw$/, "") + " W", color: palette[i % palette.length], scale: "W", div: 1000 })),
      ] },
      { id: "app", title: "Vision service", series: [
        { m: "app.inference_ms", label: "Inference ms", color: "#7c3aed", scale: "ms" },
        { m: "app.camera_fps", label: "Camera fps", color: "#0891b2", scale: "fps" },
      ] },
      { id: "items", title: "Items recognised per hour", series: [
        { m: "app.items_recognised", label: "Items/h", color: "#16a34a", scale: "n", rate: true },
      ] },
      // the machine's own figures (docs/kpis.md): counters as rates, the bin as it fills
      { id: "returns", title: "Returns per hour", series: [
        { m: "app.rvm.accepted_total", label: "Accepted/h", color: "#16a34a", scale: "n", rate: true },
        { m: "app.rvm.rejected_total", label: "Rejected/h", color: "#dc2626", scale: "n", rate: true },
        { m: "app.rvm.jams_total", label: "Jams/h", color: "#f59e0b", scale: "n", rate: true },
      ] },
      { id: "bin", title: "Bin fill (%)", scales: { "%": [0, 100] }, series: [
        { m: "app.rvm.bin_fill_pct", label: "Bin %", color: "#ca8a04", scale: "%" },
      ] },
    ]
      .map((c) => ({ ...c, series: c.series.filter((s) => has(s.m)) }))
      .filter((c) => c.series.length);
  }

  // Series of one chart -> uPlot data [[x s], [y]...] on the union of the buckets.
  function chartData(spec, answers) {
    const xs = new Set();
    const maps = answers.map((pts, i) => {
      const s = spec.series[i];
      const mp = new Map();
      let prev = null;
      for (const p of pts) {
        let v = p[3];
        if (s.rate) {
          // counter -> rise per hour between consecutive buckets (a drop is a restart)
          const r = prev && v >= prev[1] ? ((v - prev[1]) * 3600e3) / (p[0] - prev[0]) : null;
          prev = [p[0], v];
          v = r;
          if (v === null) continue;
        } else if (s.div) v = v / s.div;
        mp.set(p[0], v);
        xs.add(p[0]);
      }
      return mp;
    });
    const x = [...xs].sort((a, b) => a - b);
    return [x.map((t) => t / 1000), ...maps.map((mp) => x.map((t) => (mp.has(t) ? mp.get(t) : null)))];
  }

  function makeChart(el, spec, data) {
    const scales = { x: { time: true } };
    const css = getComputedStyle(document.documentElement);
    const ink = css.getPropertyValue("--muted").trim() || "#667085";
    const grid = css.getPropertyValue("--grid").trim() || "#eef0f3";
    const axes = [{ stroke: ink, grid: { stroke: grid } }];
    const seen = [];
    for (const s of spec.series) {
      if (seen.includes(s.scale)) continue;
      seen.push(s.scale);
      const r = spec.scales && spec.scales[s.scale];
      scales[s.scale] = r ? { range: r } : {};
      axes.push({ scale: s.scale, label: s.scale, side: seen.length === 1 ? 3 : 1, stroke: ink, size: 50, grid: { show: seen.length === 1, stroke: grid } });
    }
    const opts = {
      width: Math.max(300, el.clientWidth - 4),
      height: 200,
      scales,
      axes,
      legend: { live: false },
      cursor: { drag: { x: true, y: false } },
      series: [{}, ...spec.series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, scale: s.scale, dash: s.dash ? [4, 3] : undefined, spanGaps: false, points: { show: false } }))],
    };
    el.innerHTML = "";
    return new window.uPlot(opts, data, el);
  }

  const Device = {
    mount(root, id) {
      this.id = id;
      this.range = RANGES.find((r) => r.key === (sessionStorage.getItem("rvmRange") || "1h")) || RANGES[1];
      this.charts = new Map(); // spec id -> {plot, spec, data}
      this.commands = new Map();
      this.polls = new Map();
      this.detail = null;
      this.alive = true;
      root.innerHTML = `
        <div class="card" id="dv-head"><div class="muted">Loading ${esc(id)}…</div></div>
        ${isOperator() ? `<div class="card"><h3>Commands</h3><div class="cmds" id="dv-cmds">${ACTIONS.map((a) => `<button data-action="${a.name}" class="${a.danger ? "danger" : ""}">${esc(a.label)}</button>`).join("")}</div>
          <div id="dv-cmdlist" style="margin-top:8px"><span class="muted">Loading…</span></div></div>` : ""}
        <div class="card">
          <div class="toolbar"><h3 style="margin:0">Metrics</h3><div class="ranges" id="dv-ranges">${RANGES.map((r) => `<button data-range="${r.key}">${r.label}</button>`).join(" ")}</div><span class="muted" id="dv-range-note"></span></div>
          <div class="grid2" id="dv-charts"></div>
        </div>
        <div class="card" id="dv-inside"></div>
        <div class="grid2">
          <div class="card"><h3>Health checks</h3><div id="dv-health"></div></div>
          <div class="card"><h3>Alerts</h3><div id="dv-alerts"></div></div>
        </div>
        ${isOperator() ? "" : `<div class="card"><h3>Command history</h3><div id="dv-cmdlist"><span class="muted">Loading…</span></div></div>`}
        <div class="grid2">
          <div class="card"><h3>Recent events</h3><div id="dv-events"></div></div>
          <div class="card"><h3>Delivery</h3><div id="dv-delivery"></div></div>
        </div>
        <div class="card"><h3>Now</h3><div id="dv-now"></div></div>`;
      $("#dv-ranges").addEventListener("click", (e) => {
        const b = e.target.closest("[data-range]");
        if (!b) return;
        this.range = RANGES.find((r) => r.key === b.dataset.range);
        sessionStorage.setItem("rvmRange", this.range.key);
        this.loadCharts();
      });
      const cmds = $("#dv-cmds");
      if (cmds)
        cmds.addEventListener("click", (e) => {
          const b = e.target.closest("[data-action]");
          if (b) this.command(ACTIONS.find((a) => a.name === b.dataset.action));
        });
      root.addEventListener("click", (e) => this.onAlertButton(e));
      this.onResize = () => {
        for (const c of this.charts.values()) if (c.plot) c.plot.setSize({ width: Math.max(300, c.el.clientWidth - 4), height: 200 });
      };
      window.addEventListener("resize", this.onResize);
      this.detailTimer = setInterval(() => this.loadDetail(), 5000);
      this.refetchTimer = setInterval(() => !this.range.live && this.loadCharts(), 60e3);
      // Processes, Network and Disks tabs (ui/inside.js)
      this.inside = UI.inside ? UI.inside.mount($("#dv-inside"), id) : null;
      this.loadDetail().then(() => this.loadCharts());
      this.loadCommands();
    },
    unmount() {
      this.alive = false;
      clearInterval(this.detailTimer);
      clearInterval(this.refetchTimer);
      for (const t of this.polls.values()) clearTimeout(t);
      window.removeEventListener("resize", this.onResize);
      for (const c of this.charts.values()) if (c.plot) c.plot.destroy();
      if (this.inside) this.inside.unmount();
    },
    refresh() {
      this.loadDetail();
      this.renderAlerts();
    },
    async loadDetail() {
      try {
        this.detail = await api(`/api/v1/devices/${encodeURIComponent(this.id)}`);
      } catch (e) {
        if (this.alive) $("#dv-head").innerHTML = `<div class="err">${esc(e.status === 404 ? `No machine ${this.id}.` : e.message)}</div>`;
        return;
      }
      if (!this.alive) return;
      S.devices.set(this.id, summaryOf(this.detail, S.devices.get(this.id)));
      this.renderHead();
      this.renderHealth();
      this.renderEvents();
      this.renderDelivery();
      this.renderNow();
      this.renderAlerts();
      if (this.inside) this.inside.update(this.detail);
    },
    renderHead() {
      const d = S.devices.get(this.id) || this.detail;
      const b = (this.detail && this.detail.birth) || {};
      const t = this.detail && this.detail.telemetry;
      $("#dv-head").innerHTML = `
        <div class="dev-head"><a href="#/">← Machines</a><h2>${esc(this.id)}</h2>${badge(d.status)}
          <span class="muted">${esc(d.status_reason)}</span></div>
        <div class="kv" style="margin-top:6px">
          <span>Site <b>${esc(d.site || "–")}</b></span><span>Tags <b>${esc((d.tags || []).join(", ") || "–")}</b></span>
          <span>Board <b>${esc(d.board || "–")}</b></span><span>JetPack <b>${esc(d.jetpack || "–")}</b></span>
          <span>Agent <b>${esc(d.agent_version || "–")}</b></span><span>Model <b>${esc(d.vision_model_version || "–")}</b></span>
          <span>Last seen <b>${ago(d.last_seen_ms)}</b></span>
          <span>Uptime <b>${t ? fmt(t.uptime_s / 3600, 1) + " h" : "–"}</b></span>
          <span>Booted <b>${time(b.started_ms)}</b></span>
          <span>Items/h <b>${d.items_per_hour == null ? "–" : fmt(d.items_per_hour, 0)}</b></span>
          ${d.simulated ? "<span><b>simulated</b></span>" : ""}
        </div>`;
    },
    renderHealth() {
      const h = this.detail.health_report;
      if (!h) return ($("#dv-health").innerHTML = `<span class="muted">No health report yet.</span>`);
      $("#dv-health").innerHTML =
        `<table><tr><th>Check</th><th>Status</th><th>Message</th></tr>${h.checks
          .map((c) => `<tr><td>${esc(c.name)}</td><td>${badge(c.status)}</td><td>${esc(c.message)}</td></tr>`)
          .join("") || `<tr><td colspan="3" class="muted">no checks</td></tr>`}</table>` +
        (h.actors && h.actors.length
          ? `<table style="margin-top:8px"><tr><th>Agent actor</th><th>Alive</th><th>Restarts</th><th>Last exit</th></tr>${h.actors
              .map((a) => `<tr><td>${esc(a.name)}</td><td>${a.alive ? badge("ok", "alive") : badge("critical", "dead")}</td><td class="num">${a.restarts}</td><td>${esc(a.last_exit || "")}</td></tr>`)
              .join("")}</table>`
          : "");
    },
    renderEvents() {
      const ev = this.detail.recent_events || [];
      $("#dv-events").innerHTML = ev.length
        ? `<table><tr><th>Time</th><th>Severity</th><th>Kind</th><th>Message</th></tr>${ev
            .slice(0, 30)
            .map((e) => {
              const [kind, body] = typeof e.kind === "string" ? [e.kind, null] : Object.entries(e.kind)[0];
              const extra = body ? Object.entries(body).filter(([, v]) => v !== null && v !== "").map(([k, v]) => `${k}=${v}`).join(" ") : "";
              return `<tr><td>${time(e.ts_ms)}</td><td>${badge(e.severity)}</td><td>${esc(kind)}<div class="muted">${esc(extra)}</div></td><td>${esc(e.message)}</td></tr>`;
            })
            .join("")}</table>`
        : `<span class="muted">No events.</span>`;
    },
    renderDelivery() {
      const d = this.detail.delivery || {};
      const gaps = d.gaps || [];
      $("#dv-delivery").innerHTML = `
        <div class="kv"><span>Received <b>${d.received ?? 0}</b></span><span>Last seq <b>${d.last_seq ?? 0}</b></span>
        <span>Missing <b>${d.missing ?? 0}</b></span><span>Duplicates dropped <b>${d.duplicates_dropped ?? 0}</b></span>
        <span>Dropped by the agent <b>${d.reported_dropped ?? 0}</b></span><span>Reordered <b>${d.reordered ?? 0}</b></span></div>
        ${gaps.length
          ? `<table style="margin-top:8px"><tr><th>Gap (seq)</th><th class="num">Records</th></tr>${gaps
              .slice(-20)
              .reverse()
              .map(([a, b]) => `<tr><td>${a} – ${b}</td><td class="num">${b - a + 1}</td></tr>`)
              .join("")}</table>`
          : `<p class="muted">No delivery gaps.</p>`}`;
    },
    renderNow() {
      const t = this.detail.telemetry;
      if (!t) return ($("#dv-now").innerHTML = `<span class="muted">No telemetry yet.</span>`);
      const g = t.gpu || {};
      const rails = (g.rails || [])
        .map((r) => `<tr><td>${esc(r.name)}</td><td class="num">${fmt(r.voltage_mv / 1000, 2)}</td><td class="num">${fmt(r.current_ma, 0)}</td><td class="num">${fmt(r.power_mw / 1000, 2)}</td></tr>`)
        .join("");
      const app = (t.app || []).map((r) => `<tr><td>${esc(r.name)}</td><td class="num">${fmt(r.value, 2)}</td></tr>`).join("");
      const temps = (t.temperatures || []).map((r) => `${esc(r.name)} ${fmt(r.value)} °C`).join(", ");
      const disks = (t.disks || []).map((d) => `${esc(d.mount)} ${fmt((d.used_bytes * 100) / Math.max(1, d.total_bytes), 0)} %`).join(", ");
      $("#dv-now").innerHTML = `
        <div class="kv">
          <span>CPU per core <b>${(t.cpu.per_core_pct || []).map((v) => fmt(v, 0)).join(" / ") || "–"} %</b></span>
          <span>Load <b>${fmt(t.cpu.load1, 2)} ${fmt(t.cpu.load5, 2)} ${fmt(t.cpu.load15, 2)}</b></span>
          <span>Memory <b>${fmt(t.memory.used_bytes / 2 ** 30, 2)} / ${fmt(t.memory.total_bytes / 2 ** 30, 2)} GiB</b></span>
          <span>Disks <b>${disks || "–"}</b></span><span>Temperatures <b>${temps || "–"}</b></span>
          <span>GPU <b>${esc(g.backend || "none")}${g.freq_mhz ? `, ${fmt(g.freq_mhz, 0)} MHz` : ""}${g.nvpmodel ? `, ${esc(g.nvpmodel)}` : ""}${g.fan_pct != null ? `, fan ${fmt(g.fan_pct, 0)} %` : ""}</b></span>
        </div>
        <div class="grid2" style="margin-top:8px">
          <div>${rails ? `<table><tr><th>Power rail</th><th class="num">V</th><th class="num">mA</th><th class="num">W</th></tr>${rails}</table>` : `<span class="muted">No power rails.</span>`}</div>
          <div>${app ? `<table><tr><th>Application metric</th><th class="num">Value</th></tr>${app}</table>` : `<span class="muted">No application metrics.</span>`}</div>
        </div>`;
    },
    renderAlerts() {
      const list = [...S.alerts.values()].filter((a) => a.device === this.id && a.state !== "resolved");
      const el = $("#dv-alerts");
      if (el) el.innerHTML = list.length ? alertTable(list) : `<span class="muted">No active alerts.</span>`;
    },
    onAlerts() {
      this.renderAlerts();
    },
    onAlertButton(e) {
      alertButtons(e);
    },
    onDevices(ids) {
      if (!ids.includes(this.id)) return;
      this.renderHead();
      if (!this.range.live) return;
      const d = S.devices.get(this.id);
      const now = Date.now();
      for (const c of this.charts.values()) {
        if (!c.plot) continue;
        const x = c.data[0];
        const t = now / 1000;
        if (x.length && t <= x[x.length - 1]) continue;
        x.push(t);
        c.spec.series.forEach((s, i) => {
          let v = s.rate ? d.items_per_hour : d.metrics[s.m];
          if (v !== undefined && v !== null && s.div) v = v / s.div;
          c.data[i + 1].push(v ?? null);
        });
        const cut = (now - this.range.ms) / 1000;
        while (x.length && x[0] < cut) for (const col of c.data) col.shift();
        c.plot.setData(c.data);
      }
    },
    async loadCharts() {
      for (const b of document.querySelectorAll("#dv-ranges [data-range]")) b.classList.toggle("active", b.dataset.range === this.range.key);
      const specs = chartSpecs(S.devices.get(this.id));
      const box = $("#dv-charts");
      const now = Date.now();
      const from = now - this.range.ms;
      $("#dv-range-note").textContent = this.range.live ? "live" : "refreshed every minute";
      const seq = (this.loadSeq = (this.loadSeq || 0) + 1);
      const results = await Promise.all(
        specs.map((spec) =>
          Promise.all(
            spec.series.map((s) =>
              api(`/api/v1/devices/${encodeURIComponent(this.id)}/metrics?name=${encodeURIComponent(s.m)}&from=${from}&to=${now}&step=${this.range.step}`)
                .then((r) => r.points)
                .catch(() => []),
            ),
          ),
        ),
      );
      if (!this.alive || seq !== this.loadSeq) return;
      for (const c of this.charts.values()) if (c.plot) c.plot.destroy();
      this.charts.clear();
      if (!specs.length) {
        box.innerHTML = `<div class="muted">No metrics yet.</div>`;
        return;
      }
      box.innerHTML = specs.map((s) => `<div><div class="muted">${esc(s.title)}</div><div class="chart" data-chart="${s.id}"></div></div>`).join("");
      specs.forEach((spec, i) => {
        const el = box.querySelector(`[data-chart="${spec.id}"]`);
        const data = chartData(spec, results[i]);
        if (!data[0].length) {
          el.innerHTML = `<div class="none">No data in this range.</div>`;
          this.charts.set(spec.id, { spec, data, el, plot: null });
          return;
        }
        this.charts.set(spec.id, { spec, data, el, plot: window.uPlot ? makeChart(el, spec, data) : null });
      });
    },
    async loadCommands() {
      try {
        const r = await api(`/api/v1/devices/${encodeURIComponent(this.id)}/commands`);
        for (const c of r.commands || []) this.commands.set(c.id, c);
        this.renderCommands();
        for (const c of this.commands.values()) if (!FINAL_COMMAND.has(c.state)) this.poll(c.id);
      } catch (e) {
        $("#dv-cmdlist").innerHTML = `<span class="muted">${esc(e.status === 404 ? "The command API is not available on this server." : e.message)}</span>`;
      }
    },
    renderCommands() {
      const el = $("#dv-cmdlist");
      if (!el) return;
      const list = [...this.commands.values()].sort((a, b) => b.created_ms - a.created_ms);
      el.innerHTML = list.length
        ? `<table><tr><th>Created</th><th>Action</th><th>State</th><th>By</th><th>Reason</th><th>Output</th></tr>${list
            .map(
              (c) =>
                `<tr data-command="${esc(c.id)}" data-state="${esc(c.state)}"><td>${time(c.created_ms)}</td><td>${esc(actionText(c.action))}</td>` +
                `<td>${badge(c.state, c.state.replace("_", " "))}${c.dry_run ? " <b>dry run</b>" : ""}${FINAL_COMMAND.has(c.state) ? "" : ' <span class="muted">…</span>'}<div class="muted">${time(c.updated_ms)}</div>` +
                `${c.state === "awaiting_approval" ? '<div><a href="#/rollouts">approve on the Rollouts page</a></div>' : ""}</td>` +
                `<td>${esc(c.issued_by || "")}${c.approved_by ? `<div class="muted">approved by ${esc(c.approved_by)}</div>` : ""}</td><td>${esc(c.reason)}</td>` +
                `<td>${c.detail ? `<div>${esc(c.detail)}</div>` : ""}${c.output ? `<pre>${esc(c.output)}</pre>` : ""}</td></tr>`,
            )
            .join("")}</table>`
        : `<span class="muted">No commands sent to this machine.</span>`;
    },
    onCommand(c) {
      if (c.device !== this.id) return;
      this.commands.set(c.id, { ...(this.commands.get(c.id) || {}), ...c });
      this.renderCommands();
    },
    // Until the command is final: GET it every second (live events may be faster).
    poll(id) {
      if (this.polls.has(id) || !this.alive) return;
      const tick = async () => {
        try {
          const c = await api(`/api/v1/commands/${encodeURIComponent(id)}`);
          this.onCommand(c);
          if (FINAL_COMMAND.has(c.state)) {
            this.polls.delete(id);
            return;
          }
        } catch (e) {
          if (e.status === 404 || e.status === 401) {
            this.polls.delete(id);
            return;
          }
        }
        if (this.alive) this.polls.set(id, setTimeout(tick, COMMAND_POLL_MS));
      };
      this.polls.set(id, setTimeout(tick, COMMAND_POLL_MS));
    },
    async command(a) {
      const fields = [];
      if (a.field) fields.push({ key: "arg", label: a.field.label, value: a.field.value, required: true });
      fields.push({ key: "reason", label: "Reason (goes to the audit log)", value: "", required: true });
      fields.push({ key: "ttl", label: "Give up if the machine has not taken it within", value: "300", options: [["60", "1 min"], ["300", "5 min"], ["3600", "1 h"], ["86400", "24 h"]] });
      fields.push({ key: "dry", label: "Dry run (the agent checks it and says what it would do)", value: "no", options: [["no", "no: run it"], ["yes", "yes: only check"]] });
      const res = await ask({
        title: `${a.label} on ${this.id}?`,
        html: a.danger ? `<p class="err">The machine stops serving while it reboots.</p>` : `<p>The agent runs <code>${esc(a.name)}</code> and reports the result here.</p>`,
        fields,
        ok: a.label,
        danger: !!a.danger,
        submit: (v) => {
          const action = a.field ? { [a.name]: { [a.field.key]: v.arg } } : a.name;
          return api(`/api/v1/devices/${encodeURIComponent(this.id)}/commands`, {
            method: "POST",
            body: { action, ttl_s: Number(v.ttl), reason: v.reason, dry_run: v.dry === "yes" },
          });
        },
      });
      if (!res) return;
      toast(`${a.label}: ${res.state}`);
      this.onCommand({ device: this.id, action: res.action ?? a.name, created_ms: res.created_ms ?? Date.now(), updated_ms: res.updated_ms ?? Date.now(), reason: res.reason ?? "", output: "", ...res });
      if (!FINAL_COMMAND.has(res.state)) this.poll(res.id);
    },
  };

  // Keeps a summary current from a detail (same fields, flattened).
  function summaryOf(detail, prev) {
    const s = { ...(prev || {}) };
    for (const k of ["id", "status", "status_reason", "site", "tags", "last_seen_ms", "agent_version", "board", "jetpack", "vision_model_version", "simulated", "metrics", "health", "items_per_hour"])
      if (k in detail) s[k] = detail[k];
    return s;
  }

  // ---------------------------------------------------------------------------------------
  // alerts: table, acknowledge, silence

  function alertState(a) {
    if (a.state === "resolved") return "resolved";
    if (a.silenced_by) return "silenced";
    if (a.ack) return "acknowledged";
    return a.state;
  }

  function alertTable(list, withDevice = false) {
    const op = isOperator();
    return `<table class="alerts"><tr><th>Severity</th><th>State</th><th>Rule</th>${withDevice ? "<th>Machine</th>" : ""}<th>Summary</th><th class="num">Value</th><th>Since</th><th>Handled</th>${op ? "<th></th>" : ""}</tr>${list
      .map((a) => {
        const st = alertState(a);
        const handled =
          (a.resolved_by ? `<div data-resolved-by="${esc(a.resolved_by.by)}">resolved by ${esc(a.resolved_by.by)} ${time(a.resolved_by.at_ms)}: ${esc(a.resolved_by.comment)}</div>` : "") +
          (a.ack ? `ack by ${esc(a.ack.by)} ${time(a.ack.at_ms)}${a.ack.comment ? `: ${esc(a.ack.comment)}` : ""}` : a.silenced_by ? `silenced (${esc(a.silenced_by)})` : "") +
          (a.muted_by ? `<div class="muted" data-muted="${esc(a.muted_by)}">muted by maintenance window ${esc(a.muted_by)}</div>` : "");
        const active = a.state !== "resolved";
        const buttons = op && active
          ? `<td class="actions">${a.ack ? "" : `<button data-ack="${esc(a.id)}">Ack</button>`}${a.silenced_by ? "" : `<button data-silence="${esc(a.id)}">Silence</button>`}${a.state === "firing" ? `<button data-resolve="${esc(a.id)}">Resolve</button>` : ""}</td>`
          : op ? "<td></td>" : "";
        return `<tr data-alert="${esc(a.id)}" data-state="${esc(st)}"><td>${badge(a.severity)}</td><td>${badge(st)}</td><td>${esc(a.rule)}</td>${withDevice ? `<td>${devLink(a.device)}</td>` : ""}` +
          `<td class="sum">${esc(a.summary)}</td><td class="num">${fmt(a.value, 2)}</td><td>${time(a.fired_ms || a.started_ms)}${a.resolved_ms ? `<div class="muted">resolved ${time(a.resolved_ms)}</div>` : ""}</td><td class="sum">${handled}</td>${buttons}</tr>`;
      })
      .join("")}</table>`;
  }

  async function alertButtons(e) {
    const ackId = e.target.closest("[data-ack]")?.dataset.ack;
    const silId = e.target.closest("[data-silence]")?.dataset.silence;
    const resId = e.target.closest("[data-resolve]")?.dataset.resolve;
    if (resId) {
      const a = S.alerts.get(resId);
      const res = await ask({
        title: "Resolve alert by hand",
        html: `<p><b>${esc(a ? a.rule : resId)}</b> on ${esc(a ? a.device : "")}: ${esc(a ? a.summary : "")}</p><p class="muted">If the condition still holds, a new alert opens.</p>`,
        fields: [{ key: "comment", label: "Why (required, kept in the audit log)", value: "" }],
        ok: "Resolve",
        submit: (v) => {
          if (!v.comment.trim()) throw new Error("say why it is resolved");
          return api(`/api/v1/alerts/${encodeURIComponent(resId)}/resolve`, { method: "POST", body: { comment: v.comment } });
        },
      });
      if (res) {
        S.alerts.set(res.id, res);
        recountAlerts();
        if (S.view && S.view.onAlerts) S.view.onAlerts();
        toast("Resolved");
      }
    } else if (ackId) {
      const a = S.alerts.get(ackId);
      const res = await ask({
        title: "Acknowledge alert",
        html: `<p><b>${esc(a ? a.rule : ackId)}</b> on ${esc(a ? a.device : "")}: ${esc(a ? a.summary : "")}</p>`,
        fields: [{ key: "comment", label: "Comment (optional)", value: "" }],
        ok: "Acknowledge",
        submit: (v) => api(`/api/v1/alerts/${encodeURIComponent(ackId)}/ack`, { method: "POST", body: { comment: v.comment } }),
      });
      if (res) {
        S.alerts.set(res.id, res);
        recountAlerts();
        if (S.view && S.view.onAlerts) S.view.onAlerts();
        toast("Acknowledged");
      }
    } else if (silId) {
      const a = S.alerts.get(silId);
      if (!a) return;
      const res = await ask({
        title: "Silence alerts",
        html: `<p>No notifications for alerts that match, until the silence expires.</p>`,
        fields: [
          { key: "device", label: `machine = ${a.device}`, type: "checkbox", value: true },
          { key: "rule", label: `rule = ${a.rule}`, type: "checkbox", value: true },
          { key: "duration", label: "For", value: "3600", options: [["900", "15 min"], ["3600", "1 h"], ["14400", "4 h"], ["86400", "24 h"], ["604800", "7 d"]] },
          { key: "comment", label: "Comment", value: "" },
        ],
        ok: "Silence",
        submit: (v) => {
          const matchers = [];
          if (v.device) matchers.push({ label: "device", value: a.device });
          if (v.rule) matchers.push({ label: "rule", value: a.rule });
          if (!matchers.length) throw new Error("choose at least one of machine and rule");
          return api("/api/v1/silences", { method: "POST", body: { matchers, duration_s: Number(v.duration), comment: v.comment } });
        },
      });
      if (res) {
        toast(`Silence ${res.id} until ${timeText(res.expires_ms)}`);
        await loadAlerts();
        if (S.view && S.view.onAlerts) S.view.onAlerts(true);
      }
    }
  }

  const Alerts = {
    mount(root) {
      this.tab = sessionStorage.getItem("rvmAlertTab") || "active";
      root.innerHTML = `<div class="card" id="al-filter"></div><div class="card"><div class="tabs" id="al-tabs"></div><div id="al-list"></div></div>
        <div class="card"><h3>Silences</h3><div id="al-silences"><span class="muted">Loading…</span></div></div>`;
      $("#al-tabs").addEventListener("click", (e) => {
        const b = e.target.closest("[data-tab]");
        if (!b) return;
        this.tab = b.dataset.tab;
        sessionStorage.setItem("rvmAlertTab", this.tab);
        this.render();
      });
      root.addEventListener("click", (e) => {
        alertButtons(e);
        const sid = e.target.closest("[data-unsilence]")?.dataset.unsilence;
        if (sid)
          ask({ title: `Remove silence ${sid}?`, ok: "Remove", submit: () => api(`/api/v1/silences/${encodeURIComponent(sid)}`, { method: "DELETE" }) }).then(
            (r) => r !== null && this.loadSilences(),
          );
      });
      if (UI.alertFilter) this.filter = UI.alertFilter.mount($("#al-filter"));
      this.render();
      this.loadSilences();
    },
    refresh() {
      this.render();
      this.loadSilences();
      if (this.filter) this.filter.refresh();
    },
    onAlerts(silencesChanged) {
      this.render();
      if (this.filter) this.filter.refresh();
      if (silencesChanged) this.loadSilences();
    },
    onDevices() {},
    async loadSilences() {
      try {
        const { silences } = await api("/api/v1/silences");
        const op = isOperator();
        $("#al-silences").innerHTML = silences.length
          ? `<table><tr><th>Id</th><th>Matches</th><th>Until</th><th>By</th><th>Comment</th>${op ? "<th></th>" : ""}</tr>${silences
              .map(
                (s) =>
                  `<tr><td>${esc(s.id)}</td><td>${s.matchers.map((m) => `${esc(m.label)} = ${esc(m.value)}`).join(", ")}</td><td>${time(s.expires_ms)}</td>` +
                  `<td>${esc(s.created_by)}</td><td>${esc(s.comment)}</td>${op ? `<td class="actions"><button data-unsilence="${esc(s.id)}">Remove</button></td>` : ""}</tr>`,
              )
              .join("")}</table>`
          : `<span class="muted">No silences.</span>`;
      } catch (e) {
        $("#al-silences").innerHTML = `<span class="err">${esc(e.message)}</span>`;
      }
    },
    render() {
      const all = [...S.alerts.values()];
      const groups = {
        active: all.filter((a) => a.state !== "resolved" && !a.ack && !a.silenced_by),
        acknowledged: all.filter((a) => a.state !== "resolved" && a.ack),
        silenced: all.filter((a) => a.state !== "resolved" && a.silenced_by && !a.ack),
        resolved: all.filter((a) => a.state === "resolved").sort((a, b) => (b.resolved_ms || 0) - (a.resolved_ms || 0)).slice(0, 300),
      };
      const sev = { critical: 0, warning: 1, info: 2 };
      for (const k of ["active", "acknowledged", "silenced"])
        groups[k].sort((a, b) => (sev[a.severity] ?? 3) - (sev[b.severity] ?? 3) || (b.fired_ms || b.started_ms) - (a.fired_ms || a.started_ms));
      $("#al-tabs").innerHTML = Object.entries(groups)
        .map(([k, v]) => `<button data-tab="${k}" class="${k === this.tab ? "active" : ""}">${k[0].toUpperCase() + k.slice(1)} (${v.length})</button>`)
        .join("");
      const list = groups[this.tab] || [];
      $("#al-list").innerHTML = list.length ? alertTable(list, true) : `<div class="empty">No ${esc(this.tab)} alerts.</div>`;
    },
  };

  // ---------------------------------------------------------------------------------------
  // incidents

  const Incidents = {
    mount(root) {
      this.root = root;
      this.render();
    },
    refresh() {
      this.render();
    },
    onIncidents() {
      this.render();
    },
    onAlerts() {
      this.render();
    },
    render() {
      const list = [...S.incidents.values()].sort((a, b) => (a.state === "open") - (b.state === "open") || a.updated_ms - b.updated_ms).reverse();
      this.root.innerHTML = list.length
        ? list
            .map((i) => {
              const members = i.members
                .map((id) => {
                  const a = S.alerts.get(id);
                  const active = i.active_members.includes(id);
                  return a
                    ? `<tr><td>${devLink(a.device)}</td><td>${esc(a.rule)}</td><td>${badge(alertState(a))}</td><td>${esc(a.summary)}</td><td>${time(a.fired_ms || a.started_ms)}</td><td>${active ? "" : "left"}</td></tr>`
                    : `<tr><td colspan="4">${esc(id)}</td><td></td><td>${active ? "" : "left"}</td></tr>`;
                })
                .join("");
              return `<div class="card incident ${esc(i.state)}" data-incident="${esc(i.id)}">
                <div class="dev-head"><h3 style="margin:0">${esc(i.title)}</h3>${badge(i.state)}<span class="muted">${esc(i.kind.replace(/_/g, " "))} · ${esc(i.id)}</span></div>
                <p><b>Probable cause:</b> ${withTimes(i.probable_cause)}</p>
                <div class="kv"><span>Site <b>${esc(i.site || "–")}</b></span><span>Opened <b>${time(i.opened_ms)}</b></span><span>Updated <b>${time(i.updated_ms)}</b></span>
                ${i.resolved_ms ? `<span>Resolved <b>${time(i.resolved_ms)}</b></span>` : ""}
                ${i.attribute ? `<span>${esc(i.attribute)} <b>${esc(i.attribute_value)}</b></span>` : ""}
                <span>Machines <b>${i.devices.length}</b></span>
                ${i.state === "open" ? `<span>Still failing now <b data-now="${esc(i.id)}">${i.members.filter((m) => (S.alerts.get(m)?.state ?? (i.active_members.includes(m) ? "firing" : "resolved")) !== "resolved").length} of ${i.members.length}</b></span>` : ""}</div>
                <p>${i.devices.map(devLink).join(", ")}</p>
                ${members ? `<table><tr><th>Machine</th><th>Rule</th><th>State</th><th>Summary</th><th>Since</th><th></th></tr>${members}</table>` : `<span class="muted">No member alerts (an outlier).</span>`}
              </div>`;
            })
            .join("")
        : `<div class="card empty">No incidents.</div>`;
    },
  };

  // ---------------------------------------------------------------------------------------
  // audit log: commands, acknowledgements, silences

  const Audit = {
    mount(root) {
      this.root = root;
      root.innerHTML = `<div class="card"><h3>Audit log</h3><div id="au-list"><span class="muted">Loading…</span></div></div>`;
      this.load();
      this.timer = setInterval(() => this.load(), 10e3);
    },
    unmount() {
      clearInterval(this.timer);
    },
    refresh() {
      this.load();
    },
    onCommand() {
      clearTimeout(this.soon);
      this.soon = setTimeout(() => this.load(), 500);
    },
    onAlerts() {
      this.onCommand();
    },
    async load() {
      let r;
      try {
        r = await api("/api/v1/audit?limit=500");
      } catch (e) {
        $("#au-list").innerHTML = `<span class="muted">${esc(e.status === 404 ? "The audit API is not available on this server." : e.status === 403 ? "The audit log needs the operator role." : e.message)}</span>`;
        return;
      }
      const entries = (r.entries || []).slice().reverse();
      const known = new Set(["at_ms", "ts_ms", "who", "action", "target"]);
      $("#au-list").innerHTML = entries.length
        ? `<table><tr><th>Time</th><th>Who</th><th>Action</th><th>Target</th><th>Details</th></tr>${entries
            .map((e) => {
              const extra = Object.entries(e)
                .filter(([k, v]) => !known.has(k) && v !== null && v !== "")
                .map(([k, v]) => `${esc(k)}: ${esc(typeof v === "object" ? JSON.stringify(v) : v)}`)
                .join("<br>");
              const target = typeof e.target === "string" && /^[A-Za-z0-9]{1,64}$/.test(e.target) && S.devices.has(e.target) ? devLink(e.target) : esc(typeof e.target === "object" ? JSON.stringify(e.target) : e.target);
              return `<tr><td>${time(e.at_ms || e.ts_ms)}</td><td>${esc(e.who)}</td><td>${esc(e.action)}</td><td>${target}</td><td>${extra}</td></tr>`;
            })
            .join("")}</table>`
        : `<span class="muted">Nothing yet.</span>`;
    },
  };

  // ---------------------------------------------------------------------------------------
  // what views in other files (ui/notify.js) use; they add themselves to `views`

  const UI = { api, ask, esc, badge, time, timeText, ago, toast, isOperator, alertTable, fmt, chartData, makeChart, views: {} };
  window.__fleetUi = UI;

  // ---------------------------------------------------------------------------------------
  // router

  function show(view, arg) {
    if (S.view && S.view.unmount) S.view.unmount();
    const root = $("#view");
    root.innerHTML = "";
    S.view = Object.create(view);
    S.view.mount(root, arg);
  }

  function route() {
    if (!S.token || !S.me) return;
    const h = location.hash || "#/";
    let m, nav = "overview";
    if ((m = h.match(/^#\/device\/([A-Za-z0-9]{1,64})$/))) {
      show(Device, m[1]);
      nav = "";
    } else if (h.startsWith("#/alerts")) {
      show(Alerts);
      nav = "alerts";
    } else if (h.startsWith("#/incidents")) {
      show(Incidents);
      nav = "incidents";
    } else if (h.startsWith("#/audit")) {
      show(Audit);
      nav = "audit";
    } else if (h.startsWith("#/estate") && UI.views.estate) {
      show(UI.views.estate, h.slice("#/estate".length)); // ui/estate.js
      nav = "estate";
    } else if (h.startsWith("#/notifications") && UI.views.notifications) {
      show(UI.views.notifications);
      nav = "notifications";
    } else if (h.startsWith("#/rollouts") && UI.views.rollouts) {
      show(UI.views.rollouts);
      nav = "rollouts";
    } else show(Overview);
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  }

  // charts take the theme's colours when drawn (ui/theme.js): draw the machine page again
  window.addEventListener("rvm-theme", () => S.view && S.view.charts && route());
  window.addEventListener("hashchange", () => {
    if (/token=/.test(location.hash)) return start();
    route();
  });
  $("#signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("#token").value.trim();
    if (!t) return;
    localStorage.setItem("rvmToken", t);
    start();
  });
  $("#signout").addEventListener("click", () => signOut());
  $("#counts").addEventListener("click", (e) => {
    const b = e.target.closest("[data-status]");
    if (!b) return;
    S.overview.status = b.dataset.status;
    if (location.hash.startsWith("#/") && location.hash.length > 2) location.hash = "#/";
    else route();
  });
  // Without the stream, keep the list fresh by polling.
  setInterval(() => {
    if (S.token && S.me && S.loaded && !S.live.connected) loadDevices().then(() => {
      updateCounts();
      if (S.view && S.view.onDevices) S.view.onDevices([...S.devices.keys()]);
    }).catch(() => {});
  }, POLL_WITHOUT_LIVE_MS);
  start();
})();
