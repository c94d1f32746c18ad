// RVM Fleet web view: the Notifications page (#/notifications). Plain JavaScript, no build step;
// it uses the helpers app.js exposes as `window.__fleetUi` and registers itself there.
//
// - Channels (GET /api/v1/notify): kind, format, where each sends, its counters and last error;
//   operators get a "Send test" button (POST /api/v1/notify/channels/{name}/test) that shows
//   what the receiver answered, or why it was not delivered.
// - Maintenance windows (GET /api/v1/maintenance): from the config file and added here, each
//   saying whether it is open now; operators add and remove windows.
// - The outbox (GET /api/v1/notify/outbox): entries still pending and those given up.
"use strict";
(() => {
  const UI = window.__fleetUi;
  if (!UI) return;
  const { api, ask, esc, badge, time, ago, toast, isOperator } = UI;
  const $ = (sel, root = document) => root.querySelector(sel);
  const REFRESH_MS = 10e3;
  const OUTBOX_SHOWN = 50;

  // What a test message got, as one line: the receiver's answer or the error.
  function testOutcome(r) {
    if (r.delivered) {
      const rc = r.receipt || {};
      let answer;
      if (rc.kind === "http") answer = (rc.answers || []).map((a) => `HTTP ${a.status} ${String(a.body || "").trim()}`).join("; ");
      else if (rc.kind === "smtp") answer = `SMTP ${rc.code} ${rc.message}`;
      else if (rc.kind === "logged") answer = "written to the server's log";
      else answer = JSON.stringify(rc);
      return { ok: true, text: `Delivered in ${r.took_ms} ms. The receiver answered: ${answer}` };
    }
    const e = r.error || {};
    return { ok: false, text: `Not delivered (${r.took_ms} ms): ${e.kind}: ${e.message}` };
  }

  function lastError(st) {
    if (st.setup_error) return `<span class="err">setup: ${esc(st.setup_error)}</span>`;
    const e = st.last_error;
    if (!e) return `<span class="muted">–</span>`;
    return `<span class="err">${esc(e.kind)}: ${esc(e.message)}</span><div class="muted">${time(e.at_ms)} · ${esc(e.notification)}</div>`;
  }

  const Notifications = {
    mount(root) {
      this.results = new Map(); // channel -> {ok, text}
      root.innerHTML = `<div class="card"><h3>Channels</h3><div id="nt-channels"><span class="muted">Loading…</span></div></div>
        <div class="card"><div class="dev-head"><h3>Maintenance windows</h3>${isOperator() ? `<button id="nt-add-window">Add window</button>` : ""}</div>
          <p class="muted">While a window is open, notifications about the machines it covers are muted; alerts are still recorded and marked.</p>
          <div id="nt-windows"><span class="muted">Loading…</span></div></div>
        <div class="card"><h3>Outbox</h3><div id="nt-outbox"><span class="muted">Loading…</span></div></div>`;
      root.addEventListener("click", (e) => this.click(e));
      this.load();
      this.timer = setInterval(() => this.load(), REFRESH_MS);
    },
    unmount() {
      clearInterval(this.timer);
    },
    refresh() {
      this.load();
    },
    onMaintenance() {
      this.loadWindows();
    },
    load() {
      this.loadChannels();
      this.loadWindows();
      this.loadOutbox();
    },
    async loadChannels() {
      let n;
      try {
        n = await api("/api/v1/notify");
      } catch (e) {
        $("#nt-channels").innerHTML = `<span class="err">${esc(e.message)}</span>`;
        return;
      }
      this.overview = n;
      const op = isOperator();
      $("#nt-channels").innerHTML = `<table><tr><th>Channel</th><th>Kind</th><th>Format</th><th>Target</th><th class="num">Delivered</th><th class="num">Retried</th><th class="num">Failed</th><th>Last error</th>${op ? "<th></th>" : ""}</tr>${n.channels
        .map((c) => {
          const st = c.stats || {};
          const res = this.results.get(c.name);
          const resRow = res
            ? `<tr class="nt-result"><td colspan="${op ? 9 : 8}"><div data-test-result="${esc(c.name)}" data-ok="${res.ok}" class="${res.ok ? "" : "err"}">${esc(res.text)}</div></td></tr>`
            : "";
          return (
            `<tr data-channel="${esc(c.name)}"><td><b>${esc(c.name)}</b></td><td>${esc(c.kind)}</td><td>${esc(c.format)}</td><td><code>${esc(c.target || "–")}</code></td>` +
            `<td class="num">${st.delivered || 0}</td><td class="num">${st.retried || 0}</td><td class="num">${st.failed || 0}</td><td>${lastError(st)}</td>` +
            (op ? `<td class="actions"><button data-test="${esc(c.name)}">Send test</button></td>` : "") +
            `</tr>${resRow}`
          );
        })
        .join("")}</table>`;
    },
    async loadWindows() {
      let r;
      try {
        r = await api("/api/v1/maintenance");
      } catch (e) {
        $("#nt-windows").innerHTML = `<span class="err">${esc(e.message)}</span>`;
        return;
      }
      const op = isOperator();
      $("#nt-windows").innerHTML = r.windows.length
        ? `<table><tr><th>Name</th><th>Now</th><th>Machines</th><th>Time zone</th><th>Days</th><th>Hours</th><th>Source</th>${op ? "<th></th>" : ""}</tr>${r.windows
            .map((w) => {
              const scope = [...w.sites.map((s) => `site ${esc(s)}`), ...w.tags.map((t) => `tag ${esc(t)}`)].join(", ");
              const source = w.source === "api" ? `added by ${esc(w.created_by)} ${ago(w.created_ms)}${w.comment ? `: ${esc(w.comment)}` : ""}` : "config file";
              const remove = op ? `<td class="actions">${w.source === "api" ? `<button data-remove-window="${esc(w.name)}">Remove</button>` : ""}</td>` : "";
              return `<tr data-window="${esc(w.name)}"><td><b>${esc(w.name)}</b></td><td>${w.open_now ? badge("warning", "open") : badge("ok", "closed")}</td><td>${scope}</td><td>${esc(w.time_zone)}</td>` +
                `<td>${w.days.length ? esc(w.days.join(", ")) : "every day"}</td><td>${esc(w.from)}–${esc(w.to)}</td><td>${source}</td>${remove}</tr>`;
            })
            .join("")}</table>`
        : `<span class="muted">No maintenance windows.</span>`;
    },
    async loadOutbox() {
      let p, f;
      try {
        [p, f] = await Promise.all([api(`/api/v1/notify/outbox?state=pending&limit=${OUTBOX_SHOWN}`), api(`/api/v1/notify/outbox?state=failed&limit=${OUTBOX_SHOWN}`)]);
      } catch (e) {
        $("#nt-outbox").innerHTML = `<span class="err">${esc(e.message)}</span>`;
        return;
      }
      const o = (this.overview && this.overview.outbox) || {};
      const entries = [...p.entries, ...f.entries];
      $("#nt-outbox").innerHTML =
        `<div class="kv"><span>Pending <b>${o.pending ?? p.entries.length}</b></span><span>Delivered <b>${o.delivered ?? "–"}</b></span><span>Failed <b>${o.failed ?? f.entries.length}</b></span></div>` +
        (entries.length
          ? `<table><tr><th>State</th><th>Channel</th><th>Notification</th><th class="num">Attempts</th><th>Next / finished</th><th>Last error</th></tr>${entries
              .map(
                (e) =>
                  `<tr><td>${badge(e.state)}</td><td>${esc(e.channel)}</td><td>${esc(e.title)}<div class="muted">${esc(e.notification)}</div></td><td class="num">${e.attempts}</td>` +
                  `<td>${time(e.finished_ms || e.next_attempt_ms)}</td><td>${esc(e.last_error || "")}</td></tr>`,
              )
              .join("")}</table>`
          : `<p class="muted">Nothing pending or given up.</p>`);
    },
    async click(e) {
      const test = e.target.closest("[data-test]")?.dataset.test;
      const remove = e.target.closest("[data-remove-window]")?.dataset.removeWindow;
      if (test) {
        const btn = e.target.closest("button");
        btn.disabled = true;
        btn.textContent = "Sending…";
        try {
          const r = await api(`/api/v1/notify/channels/${encodeURIComponent(test)}/test`, { method: "POST", body: {} });
          this.results.set(test, testOutcome(r));
        } catch (err) {
          this.results.set(test, { ok: false, text: err.message });
        }
        await this.loadChannels();
      } else if (remove) {
        const r = await ask({ title: `Remove maintenance window ${remove}?`, ok: "Remove", submit: () => api(`/api/v1/maintenance/${encodeURIComponent(remove)}`, { method: "DELETE" }) });
        if (r !== null) {
          toast(`Window ${remove} removed`);
          this.loadWindows();
        }
      } else if (e.target.closest("#nt-add-window")) {
        const split = (v) => v.split(",").map((x) => x.trim()).filter(Boolean);
        const r = await ask({
          title: "Add a maintenance window",
          html: `<p class="muted">Recurring, by the wall clock of its time zone. Give sites or tags (comma separated).</p>`,
          fields: [
            { key: "name", label: "Name", value: "", required: true },
            { key: "sites", label: "Sites", value: "" },
            { key: "tags", label: "Tags", value: "" },
            { key: "time_zone", label: "Time zone (IANA)", value: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" },
            { key: "days", label: "Days (mon … sun; empty: every day)", value: "" },
            { key: "from", label: "From (HH:MM)", value: "00:00" },
            { key: "to", label: "To (HH:MM, not included)", value: "24:00" },
            { key: "comment", label: "Comment", value: "" },
          ],
          ok: "Add",
          submit: (v) =>
            api("/api/v1/maintenance", {
              method: "POST",
              body: { name: v.name, sites: split(v.sites), tags: split(v.tags), time_zone: v.time_zone, days: split(v.days), from: v.from, to: v.to, comment: v.comment },
            }),
        });
        if (r) {
          toast(`Window ${r.name} added (${r.open_now ? "open now" : "closed now"})`);
          this.loadWindows();
        }
      }
    },
  };

  UI.views.notifications = Notifications;
})();
