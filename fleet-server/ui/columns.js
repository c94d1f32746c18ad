// RVM Fleet web view: the fleet overview's extra columns from the look inside a machine
// (issue 24 item 5). A "Columns" chooser in the overview's toolbar lists the figure families
// the agents report (processes, threads, zombies, the watched process with the most open
// descriptors, the busiest interface's receive and send rates, errors and drops, established
// TCP connections, the broker's round trip, the busiest disk's utilisation and I/O, storage
// wear and fill), each with how many machines report it. A chosen family becomes a column of
// the virtualised table that sorts like the others (machines without the figure last, in
// either direction); the choice is kept in the URL (`#/?cols=zombies,dutil&sort=-x-dutil`,
// written by ui/views.js) so a view is a link.
//
// The figures are derived from a machine's flat metrics (`DeviceSummary.metrics`, the
// names of common::detail::Detail::visit_metrics) in one pass, once per update of that
// machine: app.js gives every update a new `metrics` object, and the derived figures are
// cached against it. A sort of 20,000 machines reads the cache, never the metrics.
"use strict";
(() => {
  const UI = window.__fleetUi;
  if (!UI) return;
  const { esc, fmt } = UI;

  // A rate in bytes per second, short enough for a 76 px cell.
  function rate(v) {
    const u = ["B/s", "kB/s", "MB/s", "GB/s"];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < u.length - 1) {
      v /= 1000;
      i++;
    }
    return `${v.toFixed(i && Math.abs(v) < 10 ? 1 : 0)} ${u[i]}`;
  }
  const int = (v) => fmt(v, 0);
  const one = (v) => fmt(v, 1);

  // The families, in the chooser's order. `label` heads the column, `title` says what it is.
  const FAMILIES = [
    { key: "procs", label: "Procs", title: "Processes running", show: int },
    { key: "threads", label: "Threads", title: "Threads of the whole machine", show: int },
    { key: "zombies", label: "Zombies", title: "Zombie processes (exited, not reaped)", show: int },
    { key: "fds", label: "Max FDs", title: "Open file descriptors of the watched process with the most", show: int },
    { key: "rx", label: "Net rx", title: "Receive rate of the busiest interface", show: rate },
    { key: "tx", label: "Net tx", title: "Send rate of the busiest interface", show: rate },
    { key: "neterr", label: "Err+drop", title: "Network errors and drops since boot, all interfaces", show: int },
    { key: "tcp", label: "TCP est.", title: "Established TCP connections", show: int },
    { key: "rtt", label: "RTT ms", title: "Round trip to the broker (MQTT keep-alive), ms", show: one },
    { key: "dutil", label: "Disk util %", title: "Utilisation of the busiest block device, %", show: one },
    { key: "dio", label: "Disk I/O", title: "Read and write rate of the busiest block device", show: rate },
    { key: "wear", label: "Wear %", title: "eMMC/SD wear of the most worn device, % of its rated life", show: int },
    { key: "dfull", label: "Disk full %", title: "Fill of the fullest file system, %", show: one },
  ];
  const BY_KEY = new Map(FAMILIES.map((f) => [f.key, f]));
  const PREFIX = "x-"; // column keys: never the same as a fixed column's

  const max = (a, v) => (a === undefined || v > a ? v : a);

  // How many times figures were derived: once per machine update (tests read it).
  const stats = { derived: 0 };

  // The families' figures of one machine's flat metrics, in one pass over them.
  function derive(m) {
    stats.derived++;
    const x = {};
    let io = null; // device -> read + write bytes per second
    for (const k in m) {
      const v = m[k];
      if (typeof v !== "number" || Number.isNaN(v)) continue;
      const a = k.indexOf(".");
      const b = k.indexOf(".", a + 1);
      const group = k.slice(0, a);
      // two parts (`proc.count`) or three (`net.eth0.errors`): names are metric-safe, no dots
      const who = b < 0 ? null : k.slice(a + 1, b);
      const what = b < 0 ? k.slice(a + 1) : k.slice(b + 1);
      if (group === "proc") {
        if (who === null) {
          if (what === "count") x.procs = v;
          else if (what === "threads") x.threads = v;
          else if (what === "zombies") x.zombies = v;
        } else if (what === "fds" && who !== "top_cpu" && who !== "top_mem") x.fds = max(x.fds, v);
      } else if (group === "net" && who !== null) {
        if (what === "rx_bytes_per_s") x.rx = max(x.rx, v);
        else if (what === "tx_bytes_per_s") x.tx = max(x.tx, v);
        else if (what === "errors" || what === "drops") x.neterr = (x.neterr || 0) + v;
      } else if (group === "tcp") {
        if (what === "established") x.tcp = v;
      } else if (group === "broker") {
        if (what === "rtt_ms") x.rtt = v;
      } else if (group === "disk") {
        if (who === null) {
          if (what === "wear_max_pct") x.wear = v;
          else if (what === "max_used_pct") x.dfull = v;
        } else if (what === "util_pct") x.dutil = max(x.dutil, v);
        else if (what === "read_bytes_per_s" || what === "write_bytes_per_s") {
          io ||= new Map();
          io.set(who, (io.get(who) || 0) + v);
        }
      }
    }
    if (io) for (const v of io.values()) x.dio = max(x.dio, v);
    return x;
  }

  // A machine's figures, derived again only when its metrics were replaced (an update).
  function figures(d) {
    const m = d.metrics;
    if (d._xm !== m) {
      d._x = m ? derive(m) : {};
      d._xm = m;
    }
    return d._x;
  }

  // The chosen family keys of the overview state `o` (`o.cols`: "zombies,dutil").
  const chosenKeys = (o) => (o.cols || "").split(",").filter((k) => BY_KEY.has(k));

  function column(f) {
    return {
      key: PREFIX + f.key,
      label: f.label,
      title: f.title,
      num: true,
      extra: true,
      get: (d) => figures(d)[f.key],
      text: (d) => {
        const v = figures(d)[f.key];
        return v === undefined ? "–" : f.show(v);
      },
    };
  }
  const COLUMNS = new Map(FAMILIES.map((f) => [f.key, column(f)]));

  UI.overviewColumns = {
    // The extra column definitions chosen in `o`, in the chooser's order.
    chosen(o) {
      const keys = new Set(chosenKeys(o));
      return FAMILIES.filter((f) => keys.has(f.key)).map((f) => COLUMNS.get(f.key));
    },
    // Read by tests/browser/columns.test.mjs.
    figures,
    stats,
    toolbar(o) {
      const keys = new Set(chosenKeys(o));
      return `<details class="ov-cols" id="ov-cols"><summary>Columns<span id="ov-cols-n">${keys.size ? ` (${keys.size})` : ""}</span></summary>
        <div class="ov-cols-menu">${FAMILIES.map(
          (f) => `<label title="${esc(f.title)}"><input type="checkbox" data-col="${f.key}"${keys.has(f.key) ? " checked" : ""}> ${esc(f.label)} <span class="muted" data-reporting="${f.key}"></span></label>`,
        ).join("")}</div></details>`;
    },
    // Wires the chooser to the overview `view`; `devices()` iterates the machines.
    mount(view, o, devices) {
      const box = document.getElementById("ov-cols");
      // a press outside the open chooser or Escape closes it (it lies over the table's head)
      const close = (e) => {
        if (!box.isConnected) {
          document.removeEventListener("pointerdown", close, true);
          document.removeEventListener("keydown", close, true);
        } else if (box.open && (e.type === "keydown" ? e.key === "Escape" : !box.contains(e.target))) box.open = false;
      };
      document.addEventListener("pointerdown", close, true);
      document.addEventListener("keydown", close, true);
      // how many machines report each family: counted when the chooser opens, not per update
      box.addEventListener("toggle", () => {
        if (!box.open) return;
        const n = new Map();
        for (const d of devices()) {
          const x = figures(d);
          for (const k in x) n.set(k, (n.get(k) || 0) + 1);
        }
        for (const el of box.querySelectorAll("[data-reporting]")) el.textContent = `(${n.get(el.dataset.reporting) || 0})`;
      });
      box.addEventListener("change", (e) => {
        const c = e.target.closest("[data-col]");
        if (!c) return;
        const keys = new Set(chosenKeys(o));
        if (c.checked) keys.add(c.dataset.col);
        else {
          keys.delete(c.dataset.col);
          // a sort by a column that went away falls back to the default
          if (o.sort === PREFIX + c.dataset.col) {
            o.sort = "status";
            o.dir = 1;
          }
        }
        o.cols = FAMILIES.filter((f) => keys.has(f.key)).map((f) => f.key).join(",");
        document.getElementById("ov-cols-n").textContent = keys.size ? ` (${keys.size})` : "";
        view.setColumns();
      });
    },
    // The table's extra grid tracks for `n` chosen columns (CSS variables on `.vt-wrap`).
    layout(wrap, n) {
      wrap.style.setProperty("--ov-extra", n ? Array(n).fill("var(--ov-extra-w)").join(" ") : "");
      wrap.style.setProperty("--ov-extra-n", String(n));
      wrap.classList.toggle("ov-wide", n > 0);
    },
  };
})();
