// RVM Fleet web view: the look inside a machine (issue 24), on the machine page under the
// metrics: Processes, Network and Disks tabs. Plain JavaScript, no build step; it uses the
// helpers app.js exposes as `window.__fleetUi` and registers itself as `UI.inside`, which
// the machine page mounts into its `#dv-inside` card and feeds each device detail it loads.
//
// - Processes: counts (processes, threads, zombies), the top 5 by CPU and by memory and the
//   watched processes (pid, user, state, threads, open fds, I/O, start), charts of the
//   counts and of each watched process's fds and RSS from history.
// - Network: each interface's rates, errors and drops, TCP connections by state, the broker's
//   round trip and DNS, charts of each interface's traffic and of the round trip.
// - Disks: each block device's I/O, operations, utilisation and eMMC/SD wear, charts of them.
//
// Figures come from the device's latest telemetry (`telemetry.detail`); a schema-1 agent
// sends none, and the tab says so.
"use strict";
(() => {
  const UI = window.__fleetUi;
  if (!UI) return;
  const { api, esc, time, fmt, chartData, makeChart } = UI;
  const TABS = [
    { key: "processes", label: "Processes" },
    { key: "network", label: "Network" },
    { key: "disks", label: "Disks" },
  ];
  const HISTORY_MS = 3600e3;
  const HISTORY_STEP = "15s";
  const CHARTS_EVERY_MS = 30e3;
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#f59e0b", "#0891b2"];

  // Metric names as the agent makes them (common::detail::metric_safe).
  const safe = (n) => String(n).replace(/[^A-Za-z0-9_-]/g, "_");

  function bytes(v) {
    if (v === undefined || v === null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let x = Number(v);
    while (Math.abs(x) >= 1024 && i < u.length - 1) {
      x /= 1024;
      i++;
    }
    return `${x.toFixed(i ? 1 : 0)} ${u[i]}`;
  }
  const rate = (v) => (v === undefined || v === null ? "–" : `${bytes(v)}/s`);
  const num = (v, d = 0) => (v === undefined || v === null ? "–" : fmt(v, d));

  function processTable(list, id) {
    if (!list || !list.length) return `<span class="muted">None.</span>`;
    return `<div style="overflow-x:auto"><table data-list="${id}"><tr><th>PID</th><th>Name</th><th>User</th><th>State</th><th>Threads</th><th>FDs</th><th>CPU %</th><th>RSS</th><th>Read</th><th>Write</th><th>Started</th></tr>${list
      .map(
        (p) => `<tr data-pid="${p.pid}"><td>${p.pid}</td><td>${esc(p.name)}</td><td>${esc(p.user || "–")}</td><td>${esc(p.state)}</td>
          <td>${num(p.threads)}</td><td>${num(p.fds)}</td><td>${num(p.cpu_pct, 1)}</td><td>${bytes(p.rss_bytes)}</td>
          <td>${rate(p.read_bytes_per_s)}</td><td>${rate(p.write_bytes_per_s)}</td><td>${p.start_time_s ? time(p.start_time_s * 1000) : "–"}</td></tr>`,
      )
      .join("")}</table></div>`;
  }

  function processes(d) {
    const p = d.procs || {};
    const counts = p.scanned
      ? `<div class="kv" id="in-counts"><span>Processes <b data-count="total">${p.total}</b></span><span>Threads <b data-count="threads">${num(p.threads)}</b></span>
         <span>Zombies <b data-count="zombies" class="${p.zombies ? "err" : ""}">${p.zombies}</b></span></div>`
      : `<div class="muted">No process scan yet.</div>`;
    return `${counts}
      <h4>Top by CPU</h4>${processTable(p.top_cpu, "top_cpu")}
      <h4>Top by memory</h4>${processTable(p.top_mem, "top_mem")}
      <h4>Watched</h4>${processTable(p.watched, "watched")}`;
  }

  function network(d) {
    const ifs = d.ifaces || [];
    const t = d.tcp;
    const b = d.broker || {};
    const tcp = t
      ? `<table data-list="tcp"><tr>${Object.keys(t).map((k) => `<th>${esc(k)}</th>`).join("")}</tr><tr>${Object.values(t).map((v) => `<td>${v}</td>`).join("")}</tr></table>`
      : `<span class="muted">Not read.</span>`;
    return `<div class="kv"><span>Broker round trip <b data-broker="rtt">${b.rtt_ms == null ? "–" : fmt(b.rtt_ms, 1) + " ms"}</b></span>
        <span>Broker DNS <b data-broker="dns">${b.dns_ok == null ? "– (address)" : b.dns_ok ? `ok, ${fmt(b.dns_ms, 1)} ms` : "FAILED"}</b></span></div>
      <h4>Interfaces</h4>${
        ifs.length
          ? `<div style="overflow-x:auto"><table data-list="ifaces"><tr><th>Interface</th><th>Rx</th><th>Tx</th><th>Rx pkt/s</th><th>Tx pkt/s</th><th>Rx errors</th><th>Tx errors</th><th>Rx drops</th><th>Tx drops</th></tr>${ifs
              .map(
                (i) => `<tr data-iface="${esc(i.iface)}"><td>${esc(i.iface)}</td><td>${rate(i.rx_bytes_per_s)}</td><td>${rate(i.tx_bytes_per_s)}</td>
                  <td>${num(i.rx_packets_per_s, 1)}</td><td>${num(i.tx_packets_per_s, 1)}</td><td>${i.rx_errors}</td><td>${i.tx_errors}</td><td>${i.rx_drops}</td><td>${i.tx_drops}</td></tr>`,
              )
              .join("")}</table></div>`
          : `<span class="muted">None reported.</span>`
      }
      <h4>TCP connections</h4><div style="overflow-x:auto">${tcp}</div>`;
  }

  function disks(d) {
    const bs = d.block || [];
    if (!bs.length) return `<span class="muted">No block devices reported.</span>`;
    const eol = { 1: "normal", 2: "warning", 3: "urgent" };
    return `<div style="overflow-x:auto"><table data-list="block"><tr><th>Device</th><th>Read</th><th>Write</th><th>Reads/s</th><th>Writes/s</th><th>Busy %</th><th>Wear</th><th>Pre-EOL</th></tr>${bs
      .map(
        (b) => `<tr data-disk="${esc(b.name)}"><td>${esc(b.name)}</td><td>${rate(b.read_bytes_per_s)}</td><td>${rate(b.write_bytes_per_s)}</td>
          <td>${num(b.reads_per_s, 1)}</td><td>${num(b.writes_per_s, 1)}</td><td>${num(b.util_pct, 1)}</td>
          <td class="${b.wear_pct >= 90 ? "err" : ""}">${b.wear_pct == null ? "–" : fmt(b.wear_pct, 0) + " %"}</td><td>${b.pre_eol == null ? "–" : esc(eol[b.pre_eol] || b.pre_eol)}</td></tr>`,
      )
      .join("")}</table></div>`;
  }

  // The charts of a tab: specs in app.js's form, from history.
  function chartSpecs(tab, d) {
    if (tab === "processes") {
      const w = (d.procs && d.procs.watched) || [];
      return [
        { id: "in-counts", title: "Processes, threads and zombies", series: [
          { m: "proc.count", label: "Processes", color: PALETTE[0], scale: "n" },
          { m: "proc.threads", label: "Threads", color: PALETTE[3], scale: "n", dash: true },
          { m: "proc.zombies", label: "Zombies", color: PALETTE[1], scale: "z" },
        ] },
        ...w.map((p, i) => ({ id: `in-w${i}`, title: `${p.name}: open fds and RSS (MiB)`, series: [
          { m: `proc.${safe(p.name)}.fds`, label: "FDs", color: PALETTE[4], scale: "fds" },
          { m: `proc.${safe(p.name)}.rss_bytes`, label: "RSS MiB", color: PALETTE[2], scale: "MiB", div: 1048576 },
        ] })),
      ];
    }
    if (tab === "network") {
      return [
        ...(d.ifaces || []).map((f, i) => ({ id: `in-if${i}`, title: `${f.iface}: traffic (KiB/s)`, series: [
          { m: `net.${safe(f.iface)}.rx_bytes_per_s`, label: "Rx KiB/s", color: PALETTE[0], scale: "KiB/s", div: 1024 },
          { m: `net.${safe(f.iface)}.tx_bytes_per_s`, label: "Tx KiB/s", color: PALETTE[2], scale: "KiB/s", div: 1024 },
        ] })),
        { id: "in-rtt", title: "Broker round trip (ms)", series: [{ m: "broker.rtt_ms", label: "RTT ms", color: PALETTE[3], scale: "ms" }] },
      ];
    }
    return (d.block || []).map((b, i) => ({ id: `in-bd${i}`, title: `${b.name}: I/O (KiB/s) and busy (%)`, scales: { "%": [0, 100] }, series: [
      { m: `disk.${safe(b.name)}.read_bytes_per_s`, label: "Read KiB/s", color: PALETTE[0], scale: "KiB/s", div: 1024 },
      { m: `disk.${safe(b.name)}.write_bytes_per_s`, label: "Write KiB/s", color: PALETTE[1], scale: "KiB/s", div: 1024 },
      { m: `disk.${safe(b.name)}.util_pct`, label: "Busy %", color: PALETTE[4], scale: "%", dash: true },
    ] }));
  }

  function mount(el, id) {
    const v = {
      id,
      el,
      tab: sessionStorage.getItem("rvmInsideTab") || "processes",
      detail: null,
      plots: [],
      chartsAt: 0,
      alive: true,
    };
    el.innerHTML = `<div class="toolbar"><h3 style="margin:0">Inside</h3><div class="tabs" id="in-tabs">${TABS.map(
      (t) => `<button data-tab="${t.key}">${t.label}</button>`,
    ).join("")}</div></div><div id="in-body"><span class="muted">Loading…</span></div><div class="grid2" id="in-charts"></div>`;
    el.querySelector("#in-tabs").addEventListener("click", (e) => {
      const b = e.target.closest("[data-tab]");
      if (!b) return;
      v.tab = b.dataset.tab;
      sessionStorage.setItem("rvmInsideTab", v.tab);
      v.chartsAt = 0;
      v.render();
    });
    v.update = (detail) => {
      v.detail = detail;
      v.render();
    };
    v.render = () => {
      for (const b of el.querySelectorAll("#in-tabs [data-tab]")) b.classList.toggle("active", b.dataset.tab === v.tab);
      const t = v.detail && v.detail.telemetry;
      const d = t && t.detail;
      const body = el.querySelector("#in-body");
      body.dataset.tab = v.tab;
      if (!d) {
        body.innerHTML = `<span class="muted">This machine reports no figures from inside (an agent older than schema 2, or no telemetry yet).</span>`;
        return;
      }
      body.innerHTML = v.tab === "processes" ? processes(d) : v.tab === "network" ? network(d) : disks(d);
      if (Date.now() - v.chartsAt > CHARTS_EVERY_MS) v.loadCharts(d);
    };
    v.loadCharts = async (d) => {
      v.chartsAt = Date.now();
      const tab = v.tab;
      const specs = chartSpecs(tab, d);
      const now = Date.now();
      const from = now - HISTORY_MS;
      const results = await Promise.all(
        specs.map((s) =>
          Promise.all(
            s.series.map((x) =>
              api(`/api/v1/devices/${encodeURIComponent(id)}/metrics?name=${encodeURIComponent(x.m)}&from=${from}&to=${now}&step=${HISTORY_STEP}`)
                .then((r) => r.points)
                .catch(() => []),
            ),
          ),
        ),
      );
      if (!v.alive || tab !== v.tab) return;
      for (const p of v.plots) p.destroy();
      v.plots = [];
      const box = el.querySelector("#in-charts");
      box.dataset.tab = tab;
      box.innerHTML = specs.map((s) => `<div><div class="muted">${esc(s.title)}</div><div class="chart" data-chart="${s.id}"></div></div>`).join("");
      specs.forEach((spec, i) => {
        const c = box.querySelector(`[data-chart="${spec.id}"]`);
        const data = chartData(spec, results[i]);
        if (!data[0].length || !window.uPlot) {
          c.innerHTML = `<div class="none">No data in the last hour.</div>`;
          return;
        }
        v.plots.push(makeChart(c, spec, data));
      });
    };
    v.unmount = () => {
      v.alive = false;
      for (const p of v.plots) p.destroy();
    };
    return v;
  }

  UI.inside = { mount };
})();
