// RVM Fleet web view: the alerts page's filters (#/alerts). Plain JavaScript, no build step;
// it uses the helpers app.js exposes as `window.__fleetUi` and registers itself there.
//
// The tabs below the filters show what the page keeps live (active alerts and the recent
// history). A filter asks the server instead (GET /api/v1/alerts with from, to, severity,
// site, rule; the same query `fleetctl alerts` sends), so it reaches the whole history the
// server keeps; the answer is shown above the tabs, with the same Ack, Silence and Resolve
// buttons, and asked again (at most once a second) while alerts change.
"use strict";
(() => {
  const UI = window.__fleetUi;
  if (!UI) return;
  const { api, esc, alertTable } = UI;
  const $ = (sel, root = document) => root.querySelector(sel);
  const REFRESH_MIN_MS = 1000;
  const SEVERITIES = ["", "critical", "warning", "info"];

  // A datetime-local value (the viewer's zone) as milliseconds, or "" when empty.
  const localMs = (v) => (v ? String(new Date(v).getTime()) : "");

  UI.alertFilter = {
    mount(el) {
      const saved = JSON.parse(sessionStorage.getItem("rvmAlertFilter") || "{}");
      el.innerHTML = `<form class="filters" id="af-form">
          <label>From <input type="datetime-local" id="af-from" value="${esc(saved.from || "")}"></label>
          <label>To <input type="datetime-local" id="af-to" value="${esc(saved.to || "")}"></label>
          <label>Severity <select id="af-severity">${SEVERITIES.map((s) => `<option value="${s}"${s === (saved.severity || "") ? " selected" : ""}>${s || "any"}</option>`).join("")}</select></label>
          <label>Site <input id="af-site" placeholder="any" value="${esc(saved.site || "")}"></label>
          <label>Rule <input id="af-rule" placeholder="any" value="${esc(saved.rule || "")}"></label>
          <button type="submit" class="primary">Filter</button> <button type="button" id="af-clear">Clear</button>
        </form><div id="af-result"></div>`;
      const self = Object.create(this.view);
      self.el = el;
      self.values = saved;
      $("#af-form", el).addEventListener("submit", (e) => {
        e.preventDefault();
        self.values = Object.fromEntries(["from", "to", "severity", "site", "rule"].map((k) => [k, $(`#af-${k}`, el).value.trim()]));
        sessionStorage.setItem("rvmAlertFilter", JSON.stringify(self.values));
        self.load();
      });
      $("#af-clear", el).addEventListener("click", () => {
        for (const k of ["from", "to", "site", "rule"]) $(`#af-${k}`, el).value = "";
        $("#af-severity", el).value = "";
        self.values = {};
        sessionStorage.removeItem("rvmAlertFilter");
        self.load();
      });
      self.load();
      return self;
    },
    view: {
      query() {
        const v = this.values || {};
        const q = new URLSearchParams();
        if (v.from) q.set("from", localMs(v.from));
        if (v.to) q.set("to", localMs(v.to));
        for (const k of ["severity", "site", "rule"]) if (v[k]) q.set(k, v[k]);
        return q.toString();
      },
      async load() {
        const q = this.query();
        const out = $("#af-result", this.el);
        if (!q) {
          out.innerHTML = "";
          return;
        }
        this.last = Date.now();
        try {
          const r = await api(`/api/v1/alerts?${q}&limit=500`);
          out.innerHTML = r.alerts.length
            ? `<p class="muted" id="af-count">${r.alerts.length} alert(s) match (${esc(r.state)}).</p>${alertTable(r.alerts, true)}`
            : `<div class="empty" id="af-count">No alert matches.</div>`;
        } catch (e) {
          out.innerHTML = `<span class="err" id="af-error">${esc(e.message)}</span>`;
        }
      },
      // alerts changed: ask again, at most once a second
      refresh() {
        if (!this.query() || this.soon) return;
        const wait = Math.max(0, REFRESH_MIN_MS - (Date.now() - (this.last || 0)));
        this.soon = setTimeout(() => {
          this.soon = null;
          this.load();
        }, wait);
      },
    },
  };
})();
