// RVM Fleet web view: the Rollouts page (#/rollouts). Plain JavaScript, no build step; it uses
// the helpers app.js exposes as `window.__fleetUi` and registers itself there.
//
// - Commands awaiting approval (GET /api/v1/commands?state=awaiting_approval): disruptive
//   actions ([commands] approval_required) another operator asked for; operators approve them
//   here (POST /api/v1/commands/{id}/approve). The requester's own approval is refused by the
//   server (403) and the reason is shown.
// - Rollouts (GET /api/v1/rollouts): state, progress, the health gate's finding per machine;
//   operators resume a paused rollout or abort a running or paused one
//   (POST /api/v1/rollouts/{id}/resume, /abort).
"use strict";
(() => {
  const UI = window.__fleetUi;
  if (!UI) return;
  const { api, ask, esc, badge, time, ago, toast, isOperator } = UI;
  const $ = (sel, root = document) => root.querySelector(sel);
  const REFRESH_MS = 3e3;
  const STATE_BADGE = { running: "info", paused: "warning", aborted: "critical", completed: "ok" };

  const actionText = (a) => (typeof a === "string" ? a : Object.entries(a).map(([k, v]) => `${k}(${Object.values(v).join(", ")})`).join(""));

  function verdict(v) {
    if (!v) return `<span class="muted">watching…</span>`;
    const cls = v.verdict === "worse" || v.verdict === "no_data" ? "err" : v.verdict === "overridden" ? "muted" : "";
    return `<span class="${cls}"><b>${esc(v.verdict.replace("_", " "))}</b> ${esc(v.detail || "")}</span>`;
  }

  function rolloutCard(r, op) {
    const p = r.progress || {};
    const g = r.gate;
    const buttons = op
      ? (r.state === "paused" ? `<button data-resume="${esc(r.id)}">Resume</button> ` : "") +
        (r.state === "paused" || r.state === "running" ? `<button class="danger" data-abort="${esc(r.id)}">Abort</button>` : "")
      : "";
    const machines = (r.machines || []).filter((m) => m.dispatched_ms);
    return `<div class="card" data-rollout="${esc(r.id)}" data-state="${esc(r.state)}">
      <div class="dev-head"><h3>${esc(r.id)} · ${esc(actionText(r.action))} ${badge(STATE_BADGE[r.state] || "info", r.state)}</h3><div>${buttons}</div></div>
      <div class="muted">by ${esc(r.issued_by || "")} ${ago(r.created_ms)}: ${esc(r.reason || "")}</div>
      <div class="kv"><span>Dispatched <b>${p.dispatched ?? 0}</b></span><span>Remaining <b>${p.remaining ?? 0}</b></span><span>Succeeded <b>${p.succeeded ?? 0}</b></span><span>Failed <b>${p.failed ?? 0}</b></span>` +
      (g ? `<span>Healthy <b>${p.healthy ?? 0}</b></span><span>Worse <b>${p.worse ?? 0}</b></span><span>Watching <b>${p.watching ?? 0}</b></span>` : "") +
      `</div>` +
      (g
        ? `<div class="muted">Health gate: settle ${g.settle_s} s, accepted −${g.max_accepted_drop_pct} %, reject ratio +${g.max_reject_ratio_rise_pct} points, paused ${g.pause_s} s then aborted${r.batch_size ? `, batches of ${r.batch_size}` : ""}</div>`
        : `<div class="muted">No health gate: stops when more than ${r.abort_failed_pct} % of commands fail</div>`) +
      (r.detail ? `<p data-detail>${esc(r.detail)}</p>` : "") +
      (machines.length
        ? `<table><tr><th>Machine</th><th>Command sent</th><th>Verdict</th></tr>${machines
            .map((m) => `<tr data-machine="${esc(m.device)}"><td><a href="#/device/${esc(m.device)}">${esc(m.device)}</a></td><td>${time(m.dispatched_ms)}</td><td>${verdict(m.verdict)}</td></tr>`)
            .join("")}</table>`
        : "") +
      `</div>`;
  }

  const Rollouts = {
    mount(root) {
      root.innerHTML = `<div class="card"><h3>Commands awaiting approval</h3>
          <p class="muted">Disruptive actions wait for a second operator; the one who asked cannot approve their own.</p>
          <div id="ro-approvals"><span class="muted">Loading…</span></div></div>
        <div id="ro-list"><span class="muted">Loading…</span></div>`;
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
    load() {
      this.loadApprovals();
      this.loadRollouts();
    },
    async loadApprovals() {
      let r;
      try {
        r = await api("/api/v1/commands?state=awaiting_approval");
      } catch (e) {
        $("#ro-approvals").innerHTML = `<span class="err">${esc(e.message)}</span>`;
        return;
      }
      const op = isOperator();
      $("#ro-approvals").innerHTML = r.commands.length
        ? `<table><tr><th>Asked</th><th>Machine</th><th>Action</th><th>By</th><th>Reason</th><th>Expires</th>${op ? "<th></th>" : ""}</tr>${r.commands
            .map(
              (c) =>
                `<tr data-awaiting="${esc(c.id)}"><td>${time(c.created_ms)}</td><td><a href="#/device/${esc(c.device)}">${esc(c.device)}</a></td><td>${esc(actionText(c.action))}</td>` +
                `<td>${esc(c.issued_by)}</td><td>${esc(c.reason)}</td><td>${time(c.expires_ms)}</td>` +
                (op ? `<td class="actions"><button data-approve="${esc(c.id)}">Approve</button></td>` : "") +
                `</tr>`,
            )
            .join("")}</table>`
        : `<span class="muted">Nothing awaits approval.</span>`;
    },
    async loadRollouts() {
      let r;
      try {
        r = await api("/api/v1/rollouts");
      } catch (e) {
        $("#ro-list").innerHTML = `<div class="card"><span class="err">${esc(e.message)}</span></div>`;
        return;
      }
      const op = isOperator();
      $("#ro-list").innerHTML = r.rollouts.length
        ? r.rollouts.map((x) => rolloutCard(x, op)).join("")
        : `<div class="card"><span class="muted">No rollouts. Start one with <code>fleetctl cmd rollout ACTION --gate --reason …</code> or POST /api/v1/rollouts.</span></div>`;
    },
    async click(e) {
      const approve = e.target.closest("[data-approve]")?.dataset.approve;
      const resume = e.target.closest("[data-resume]")?.dataset.resume;
      const abort = e.target.closest("[data-abort]")?.dataset.abort;
      if (approve) {
        const r = await ask({
          title: `Approve command ${approve}?`,
          html: `<p>It is signed and sent to the machine now; the audit log records you as its approver.</p>`,
          ok: "Approve",
          danger: true,
          submit: () => api(`/api/v1/commands/${encodeURIComponent(approve)}/approve`, { method: "POST" }),
        });
        if (r) toast(`${approve} approved: ${r.state}`);
        this.loadApprovals();
      } else if (resume || abort) {
        const id = resume || abort;
        const verb = resume ? "resume" : "abort";
        const r = await ask({
          title: `${resume ? "Resume" : "Abort"} rollout ${id}?`,
          html: resume
            ? `<p>The machines that paused it stay as they are; the next batch goes out.</p>`
            : `<p>No further machine gets the command.</p>`,
          ok: resume ? "Resume" : "Abort",
          danger: !resume,
          submit: () => api(`/api/v1/rollouts/${encodeURIComponent(id)}/${verb}`, { method: "POST" }),
        });
        if (r) toast(`Rollout ${id}: ${r.state}`);
        this.loadRollouts();
      }
    },
  };

  UI.views.rollouts = Rollouts;
})();
