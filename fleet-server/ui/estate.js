// RVM Fleet web view: the estate (#/estate...). Plain JavaScript, no build step; it uses the
// helpers app.js exposes as `window.__fleetUi` and registers itself there.
//
// - #/estate: the fleet map (an SVG of the stores placed by latitude/longitude, no tiles or
//   CDN), every retailer and store with its worst state, and the sites no store has.
// - #/estate/store/{id}: the store's machines and their state, open alerts, today's
//   availability (in the store's time zone), and the availability report as HTML, CSV or PDF.
// - #/estate/retailer/{id}: the retailer's stores with their state and today's availability.
//
// The map groups stores whose points fall in the same cell of CELL_PX screen pixels: zoomed
// out, a group shows its count coloured by its worst member; zoomed in, the stores separate.
// Drawing is one pass over the stores (a grid keyed by cell), so 2,000 stores redraw in a few
// milliseconds.
"use strict";
(() => {
  const UI = window.__fleetUi;
  if (!UI) return;
  const { api, esc, badge, time, toast } = UI;
  const $ = (sel, root = document) => root.querySelector(sel);
  const REFRESH_MS = 10e3;
  const MAP_W = 900;
  const MAP_H = 460;
  const CELL_PX = 26; // stores closer than this on screen are drawn as one group
  const STATE_RANK = { critical: 3, warning: 2, ok: 1, empty: 0 };
  const STATE_COLOUR = { critical: "#c62828", warning: "#e0a100", ok: "#2e7d32", empty: "#98a2b3" };

  // the "empty" state's badge class must not be the page's `.empty` placeholder class
  const stateBadge = (st) => badge(st === "empty" ? "es-empty" : st, st);
  const pct = (f) => (f && f.availability_pct != null ? `${f.availability_pct.toFixed(2)} %` : "–");
  const mins = (ms) => (ms == null ? "–" : `${(ms / 60e3).toFixed(1)} min`);
  const worst = (a, b) => ((STATE_RANK[a] ?? 0) >= (STATE_RANK[b] ?? 0) ? a : b);
  const storeLink = (id, name) => `<a href="#/estate/store/${encodeURIComponent(id)}">${esc(name || id)}</a>`;
  const retailerLink = (id, name) => `<a href="#/estate/retailer/${encodeURIComponent(id)}">${esc(name || id)}</a>`;
  const figures = (f) =>
    f
      ? `<div class="kv"><span>availability <b class="es-pct">${pct(f)}</b></span><span>scheduled <b>${mins(f.scheduled_ms)}</b></span>
         <span>unavailable <b>${mins(f.unavailable_ms)}</b></span><span>maintenance <b>${mins(f.maintenance_ms)}</b></span>
         <span>closed <b>${mins(f.closed_ms)}</b></span></div>`
      : `<span class="muted">No machines counted.</span>`;

  // Groups points (already in screen pixels) by grid cell: [{x, y, stores, state}].
  function cluster(points) {
    const cells = new Map();
    for (const p of points) {
      const key = `${Math.floor(p.x / CELL_PX)}:${Math.floor(p.y / CELL_PX)}`;
      let c = cells.get(key);
      if (!c) cells.set(key, (c = { sx: 0, sy: 0, stores: [], state: "empty" }));
      c.sx += p.x;
      c.sy += p.y;
      c.stores.push(p.s);
      c.state = worst(c.state, p.s.state);
    }
    return [...cells.values()].map((c) => ({ x: c.sx / c.stores.length, y: c.sy / c.stores.length, stores: c.stores, state: c.state }));
  }

  const FleetMap = {
    init(el, stores) {
      this.el = el;
      this.stores = stores;
      this.zoom = 1;
      this.cx = null;
      el.addEventListener("click", (e) => this.click(e));
      this.draw();
    },
    click(e) {
      const z = e.target.closest("[data-zoom]");
      if (z) {
        this.zoom = Math.max(1, Math.min(256, this.zoom * Number(z.dataset.zoom)));
        return this.draw();
      }
      const g = e.target.closest("[data-group]");
      if (!g) return;
      const c = this.groups[Number(g.dataset.group)];
      if (c.stores.length === 1) location.hash = `#/estate/store/${encodeURIComponent(c.stores[0].id)}`;
      else {
        // zoom in on the group
        this.cx = { lon: c.stores.reduce((a, s) => a + s.longitude, 0) / c.stores.length, lat: c.stores.reduce((a, s) => a + s.latitude, 0) / c.stores.length };
        this.zoom = Math.min(256, this.zoom * 4);
        this.draw();
      }
    },
    draw() {
      const s = this.stores;
      if (!s.length) {
        this.el.innerHTML = `<span class="muted">No store has a position (latitude and longitude).</span>`;
        return;
      }
      // equirectangular projection fitted to the stores, with a margin
      let [lo0, lo1, la0, la1] = [Infinity, -Infinity, Infinity, -Infinity];
      for (const p of s) {
        lo0 = Math.min(lo0, p.longitude);
        lo1 = Math.max(lo1, p.longitude);
        la0 = Math.min(la0, p.latitude);
        la1 = Math.max(la1, p.latitude);
      }
      const kx = Math.cos((((la0 + la1) / 2) * Math.PI) / 180) || 1;
      const spanX = Math.max((lo1 - lo0) * kx, 0.01);
      const spanY = Math.max(la1 - la0, 0.01);
      const scale = (Math.min((MAP_W - 60) / spanX, (MAP_H - 60) / spanY) || 1) * this.zoom;
      const c = this.cx || { lon: (lo0 + lo1) / 2, lat: (la0 + la1) / 2 };
      const pts = [];
      for (const p of s) {
        const x = MAP_W / 2 + (p.longitude - c.lon) * kx * scale;
        const y = MAP_H / 2 - (p.latitude - c.lat) * scale;
        if (x >= -CELL_PX && x <= MAP_W + CELL_PX && y >= -CELL_PX && y <= MAP_H + CELL_PX) pts.push({ x, y, s: p });
      }
      this.groups = cluster(pts);
      const marks = this.groups
        .map((g, i) => {
          const n = g.stores.length;
          const title = n === 1 ? `${g.stores[0].name} (${g.stores[0].id}): ${g.state}, ${g.stores[0].machines} machines` : `${n} stores, worst ${g.state}`;
          const r = n === 1 ? 6 : Math.min(18, 8 + Math.log2(n) * 2);
          return `<g class="es-mark" data-group="${i}" data-state="${g.state}" data-stores="${n}" style="cursor:pointer"><title>${esc(title)}</title>
            <circle cx="${g.x.toFixed(1)}" cy="${g.y.toFixed(1)}" r="${r.toFixed(1)}" fill="${STATE_COLOUR[g.state]}" stroke="#fff" stroke-width="1.5"/>
            ${n > 1 ? `<text x="${g.x.toFixed(1)}" y="${(g.y + 4).toFixed(1)}" text-anchor="middle" font-size="11" fill="#fff">${n}</text>` : ""}</g>`;
        })
        .join("");
      this.el.innerHTML = `<div class="es-zoom"><button data-zoom="2">+</button> <button data-zoom="0.5">−</button>
          <span class="muted">${s.length} stores · ${this.groups.length} marks · zoom ×${this.zoom}</span></div>
        <svg id="es-svg" viewBox="0 0 ${MAP_W} ${MAP_H}" width="100%" style="max-width:${MAP_W}px;background:#eef3f8;border-radius:6px" role="img" aria-label="fleet map">${marks}</svg>`;
    },
  };

  const Overview = {
    mount(root) {
      root.innerHTML = `<div class="card"><h3>Fleet map</h3><div id="es-map"><span class="muted">Loading…</span></div></div>
        <div class="card"><h3>Stores</h3><div id="es-stores"><span class="muted">Loading…</span></div></div>
        <div class="card"><h3>Sites no store has</h3><p class="muted">Machines whose site matches no store: add the store (fleetctl estate import stores.csv) or fix the machine's site.</p><div id="es-unknown"></div></div>`;
      this.load(true);
      this.timer = setInterval(() => this.load(false), REFRESH_MS);
    },
    unmount() {
      clearInterval(this.timer);
      this.gone = true; // a load still in flight must not draw into the next page
    },
    refresh() {
      this.load(false);
    },
    async load(first) {
      let est, map, unknown;
      try {
        [est, map, unknown] = await Promise.all([api("/api/v1/estate"), api("/api/v1/estate/map"), api("/api/v1/estate/unknown-sites")]);
        if (this.gone) return;
      } catch (e) {
        if (this.gone) return;
        $("#es-stores").innerHTML = `<span class="err">${esc(e.message)}</span>`;
        return;
      }
      if (first) FleetMap.init($("#es-map"), map.stores);
      else {
        FleetMap.stores = map.stores;
        FleetMap.draw();
      }
      const state = new Map(map.stores.map((s) => [s.id, s.state]));
      const names = new Map(est.retailers.map((r) => [r.id, r.name]));
      $("#es-stores").innerHTML = est.stores.length
        ? `<table><tr><th>Store</th><th>Retailer</th><th>State</th><th>Machines</th><th>Time zone</th><th>Address</th></tr>${est.stores
            .map(
              (s) =>
                `<tr data-store="${esc(s.id)}"><td>${storeLink(s.id, s.name)} <span class="muted">${esc(s.id)}</span></td><td>${retailerLink(s.retailer, names.get(s.retailer))}</td>
                 <td>${state.has(s.id) ? stateBadge(state.get(s.id)) : `<span class="muted">no position</span>`}</td><td>${s.machines}</td><td>${esc(s.time_zone)}</td><td>${esc(s.address)}</td></tr>`,
            )
            .join("")}</table>`
        : `<span class="muted">No stores yet: fleetctl estate import stores.csv (docs/estate.md).</span>`;
      $("#es-unknown").innerHTML = unknown.sites.length
        ? `<table id="es-unknown-table"><tr><th>Site</th><th>Machines</th></tr>${unknown.sites
            .map((u) => `<tr><td>${esc(u.site || "(no site)")}</td><td>${u.machines.map((m) => `<a href="#/device/${encodeURIComponent(m)}">${esc(m)}</a>`).join(", ")}</td></tr>`)
            .join("")}</table>`
        : `<span class="muted">None: every machine is in a store.</span>`;
    },
  };

  // Fetches a report with the token and saves it (a plain link cannot carry the token).
  async function download(query, format) {
    try {
      const r = await fetch(`/api/v1/estate/availability?${query}&format=${format}`, { headers: { Authorization: "Bearer " + localStorage.getItem("rvmToken") } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const url = URL.createObjectURL(await r.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = `rvm-availability.${format}`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60e3);
    } catch (e) {
      toast(`report: ${e.message}`, true);
    }
  }

  const reportButtons = (query) =>
    `<div class="es-report" data-query="${esc(query)}">Availability report, last 7 days:
       <button data-format="html">HTML</button> <button data-format="csv">CSV</button> <button data-format="pdf">PDF</button></div>`;

  function onReport(root) {
    root.addEventListener("click", (e) => {
      const b = e.target.closest("[data-format]");
      if (!b) return;
      const now = Date.now();
      download(`${b.closest("[data-query]").dataset.query}&from=${now - 7 * 86400e3}&to=${now}`, b.dataset.format);
    });
  }

  const StorePage = {
    mount(root, id) {
      this.id = id;
      root.innerHTML = `<div class="card" id="es-store"><span class="muted">Loading…</span></div>`;
      onReport(root);
      this.load();
      this.timer = setInterval(() => this.load(), REFRESH_MS);
    },
    unmount() {
      clearInterval(this.timer);
      this.gone = true; // a load still in flight must not draw into the next page
    },
    refresh() {
      this.load();
    },
    async load() {
      let p;
      try {
        p = await api(`/api/v1/estate/stores/${encodeURIComponent(this.id)}`);
        if (this.gone) return;
      } catch (e) {
        $("#es-store").innerHTML = `<span class="err">${esc(e.message)}</span>`;
        return;
      }
      const s = p.store;
      const days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
      const today = new Map((p.today.machines || []).map((m) => [m.id, m]));
      $("#es-store").innerHTML = `<div class="dev-head"><h2 id="es-title">${esc(s.name)} <span class="muted">${esc(s.id)}</span></h2>${stateBadge(p.state)}</div>
        <div class="kv"><span>retailer <b>${p.retailer ? retailerLink(p.retailer.id, p.retailer.name) : esc(s.retailer)}</b></span>
          <span>address <b>${esc(s.address || "–")}</b></span><span>time zone <b>${esc(s.time_zone)}</b></span>
          <span>hours <b>${days.map((d) => `${d} ${esc(s.hours[d] || "closed")}`).join(" · ")}</b></span></div>
        <h3>Today's availability</h3><p class="muted">From midnight in the store's time zone; times are summed over its machines.</p><div id="es-today">${figures(p.today.store && p.today.store.machines ? p.today.store : null)}</div>
        ${reportButtons(`store=${encodeURIComponent(s.id)}`)}
        <h3>Machines</h3>${
          p.machines.length
            ? `<table id="es-machines"><tr><th>Machine</th><th>State</th><th>Last seen</th><th>Today</th></tr>${p.machines
                .map((m) => `<tr><td><a href="#/device/${encodeURIComponent(m.id)}">${esc(m.id)}</a></td><td>${badge(m.status)}</td><td>${time(m.last_seen_ms)}</td><td>${pct(today.get(m.id))}</td></tr>`)
                .join("")}</table>`
            : `<span class="muted">No machine reports this site.</span>`
        }
        <h3>Open alerts</h3>${
          p.alerts.length
            ? `<table id="es-alerts"><tr><th>Alert</th><th>Machine</th><th>Severity</th><th>State</th><th>Since</th></tr>${p.alerts
                .map((a) => `<tr><td>${esc(a.rule)}</td><td>${esc(a.device)}</td><td>${badge(a.severity)}</td><td>${badge(a.state)}</td><td>${time(a.started_ms)}</td></tr>`)
                .join("")}</table>`
            : `<span class="muted">None.</span>`
        }`;
    },
  };

  const RetailerPage = {
    mount(root, id) {
      this.id = id;
      root.innerHTML = `<div class="card" id="es-retailer"><span class="muted">Loading…</span></div>`;
      onReport(root);
      this.load();
      this.timer = setInterval(() => this.load(), REFRESH_MS);
    },
    unmount() {
      clearInterval(this.timer);
      this.gone = true; // a load still in flight must not draw into the next page
    },
    refresh() {
      this.load();
    },
    async load() {
      let p;
      try {
        p = await api(`/api/v1/estate/retailers/${encodeURIComponent(this.id)}`);
        if (this.gone) return;
      } catch (e) {
        $("#es-retailer").innerHTML = `<span class="err">${esc(e.message)}</span>`;
        return;
      }
      $("#es-retailer").innerHTML = `<h2 id="es-title">${esc(p.retailer.name)} <span class="muted">${esc(p.retailer.id)}</span></h2>
        <h3>Today's availability</h3><p class="muted">From midnight UTC; times are summed over the retailer's machines.</p><div id="es-today">${figures(p.today.retailer && p.today.retailer.machines ? p.today.retailer : null)}</div>
        ${reportButtons(`retailer=${encodeURIComponent(p.retailer.id)}`)}
        <h3>Stores</h3>${
          p.stores.length
            ? `<table id="es-stores"><tr><th>Store</th><th>State</th><th>Machines</th><th>Firing alerts</th><th>Today</th></tr>${p.stores
                .map((s) => `<tr><td>${storeLink(s.store.id, s.store.name)}</td><td>${stateBadge(s.state)}</td><td>${s.machines}</td><td>${s.firing_alerts}</td><td>${pct(s.today)}</td></tr>`)
                .join("")}</table>`
            : `<span class="muted">No stores.</span>`
        }`;
    },
  };

  // #/estate, #/estate/store/{id}, #/estate/retailer/{id}: app.js calls mount(root, rest)
  UI.views.estate = {
    mount(root, rest) {
      const m = /^\/(store|retailer)\/(.+)$/.exec(rest || "");
      this.page = Object.create(!m ? Overview : m[1] === "store" ? StorePage : RetailerPage);
      this.page.mount(root, m ? decodeURIComponent(m[2]) : undefined);
    },
    unmount() {
      if (this.page && this.page.unmount) this.page.unmount();
    },
    refresh() {
      if (this.page && this.page.refresh) this.page.refresh();
    },
  };
})();
