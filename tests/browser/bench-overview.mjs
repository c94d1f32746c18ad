// Benchmark (not a test) of the fleet overview with many machines: starts
// `rvm-sim demo` with N simulated machines, opens the overview in headless Chromium and
// prints JSON: time to the first full render, and the main thread's busy share while live
// updates arrive.
//
//   node bench-overview.mjs [--devices 5000] [--interval-ms 1000] [--window-s 30]
//
// RVM_SIM picks the binary (default: target/release/rvm-sim if built, else
// target/debug/rvm-sim). Targets: first render < 1500 ms, busy < 30 %.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HERE, launch } from "./lib.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const DEVICES = Number(args.devices ?? 5000);
const INTERVAL_MS = Number(args["interval-ms"] ?? 1000);
const WINDOW_S = Number(args["window-s"] ?? 30);
const ONLINE_TIMEOUT_MS = Number(args["online-timeout-s"] ?? 300) * 1000;
const TARGET_FIRST_RENDER_MS = 1500;
const TARGET_BUSY_PCT = 30;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error("[bench]", ...a);

function binary() {
  if (process.env.RVM_SIM) return process.env.RVM_SIM;
  const root = join(HERE, "..", "..", "target");
  for (const p of [join(root, "release", "rvm-sim"), join(root, "debug", "rvm-sim")]) if (existsSync(p)) return p;
  throw new Error("no rvm-sim binary: cargo build --release -p rvm-sim (or set RVM_SIM)");
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

// The page alone under a full update of every machine once a second (what 1 Hz telemetry
// from every machine would send), fed through the stream handler: the server is out of the
// picture, so this is the page's own cost.
async function synthetic(page, metric, token, url) {
  const { devices } = await (await fetch(url + "api/v1/devices", { headers: { Authorization: `Bearer ${token}` } })).json();
  const seconds = Math.min(WINDOW_S, 20);
  const f0 = await page.evaluate(() => ({ ...window.__fleet }));
  const m0 = await metric();
  const w0 = Date.now();
  // the server's compact batch: names once, f32 values in their order
  const names = [...new Set(devices.flatMap((d) => Object.keys(d.metrics)))].sort();
  for (let i = 0; i < seconds; i++) {
    const t = Date.now();
    const batch = devices.map((d) => ({
      id: d.id,
      status: d.status,
      status_reason: d.status_reason,
      last_seen_ms: t,
      health: d.health,
      items_per_hour: d.items_per_hour,
      m: names.map((n) => (n in d.metrics ? Number((d.metrics[n] * (0.98 + Math.random() * 0.04)).toPrecision(7)) : null)),
    }));
    await page.evaluate((data) => window.__fleet.inject(data), JSON.stringify({ type: "devices", names, devices: batch }));
    await sleep(Math.max(0, 1000 - (Date.now() - t)));
  }
  const m1 = await metric();
  const f1 = await page.evaluate(() => ({ ...window.__fleet }));
  const wall = (Date.now() - w0) / 1000;
  const events = f1.liveEvents - f0.liveEvents;
  return {
    seconds: Math.round(wall),
    devices_per_event: devices.length,
    busy_pct: Number((((m1.TaskDuration - m0.TaskDuration) / wall) * 100).toFixed(1)),
    apply_ms_per_event: events ? Number(((f1.applyMs - f0.applyMs) / events).toFixed(1)) : null,
  };
}

async function main() {
  const bin = binary();
  const dataDir = mkdtempSync(join(tmpdir(), "rvm-bench-"));
  const [httpPort, mqttPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${httpPort}/`;
  log(`starting ${bin} demo with ${DEVICES} machines every ${INTERVAL_MS} ms`);
  const server = spawn(
    bin,
    ["demo", "--data-dir", dataDir, "--http", `127.0.0.1:${httpPort}`, "--mqtt", `127.0.0.1:${mqttPort}`, "--devices", String(DEVICES), "--interval", String(INTERVAL_MS), "--no-local-agent"],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RVM_LOG: "warn" } },
  );
  let serverErr = "";
  server.stderr.on("data", (d) => (serverErr = (serverErr + d).slice(-4000)));
  let browser;
  try {
    const tokenPath = join(dataDir, "admin.token");
    const t0 = Date.now();
    let token = null;
    let online = 0;
    while (Date.now() - t0 < ONLINE_TIMEOUT_MS) {
      if (server.exitCode !== null) throw new Error(`the server exited: ${serverErr}`);
      if (!token && existsSync(tokenPath)) token = readFileSync(tokenPath, "utf8").trim();
      if (token) {
        try {
          const r = await fetch(url + "api/v1/devices", { headers: { Authorization: `Bearer ${token}` } });
          if (r.ok) {
            const { devices } = await r.json();
            online = devices.filter((d) => d.status === "online" || d.status === "degraded").length;
            if (online >= DEVICES) break;
          }
        } catch {
          // not listening yet
        }
      }
      await sleep(2000);
    }
    if (online < DEVICES) throw new Error(`only ${online} of ${DEVICES} machines online after ${ONLINE_TIMEOUT_MS / 1000} s`);
    log(`${online} machines online after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    await sleep(3000); // let the ingest settle

    browser = await launch();
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    await page.addInitScript(() => {
      window.__longTasks = [];
      try {
        new PerformanceObserver((l) => {
          for (const e of l.getEntries()) window.__longTasks.push(e.duration);
        }).observe({ type: "longtask", buffered: true });
      } catch {
        // long tasks are not observable here
      }
    });
    await page.goto(`${url}#token=${encodeURIComponent(token)}`);
    await page.waitForFunction((n) => window.__fleet && window.__fleet.firstRenderMs !== null && window.__fleet.rows >= n, DEVICES, {
      timeout: 60000,
    });
    const first = await page.evaluate(() => {
      // where the time went: the device list's response, then parsing and rendering it
      const r = performance.getEntriesByType("resource").find((e) => e.name.endsWith("/api/v1/devices"));
      return {
        ms: window.__fleet.firstRenderMs,
        rows: window.__fleet.rows,
        devicesRequestStart: r ? r.requestStart : null,
        devicesResponseEnd: r ? r.responseEnd : null,
        devicesBytes: r ? r.encodedBodySize : null,
      };
    });
    log(`first full render after ${first.ms.toFixed(0)} ms (${first.rows} rows)`);

    // Main-thread busy share while live updates arrive: CDP TaskDuration over the window.
    const cdp = await context.newCDPSession(page);
    await cdp.send("Performance.enable");
    const metric = async () => Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics.map((m) => [m.name, m.value]));
    await page.evaluate(() => (window.__longTasks = []));
    const snap = () => page.evaluate(() => ({ ...window.__fleet }));
    const f0 = await snap();
    const m0 = await metric();
    const w0 = Date.now();
    // scroll through the table meanwhile, as a person would
    const scroller = (async () => {
      for (let i = 0; Date.now() - w0 < WINDOW_S * 1000; i++) {
        await page.evaluate((y) => {
          const vt = document.querySelector("#ov-vt");
          if (vt) vt.scrollTop = y;
        }, (i * 2000) % (DEVICES * 28));
        await sleep(1000);
      }
    })();
    await sleep(WINDOW_S * 1000);
    await scroller;
    const m1 = await metric();
    const wall = (Date.now() - w0) / 1000;
    const f1 = await snap();
    const events = f1.liveEvents - f0.liveEvents;
    const longTasks = await page.evaluate(() => window.__longTasks);
    const domRows = await page.locator(".vt-row:not([hidden])").count();
    const busy = ((m1.TaskDuration - m0.TaskDuration) / wall) * 100;
    const share = (k) => Number((((m1[k] - m0[k]) / wall) * 100).toFixed(1));
    const result = {
      devices: DEVICES,
      interval_ms: INTERVAL_MS,
      server_binary: bin,
      first_render_ms: Math.round(first.ms),
      devices_request_ms: first.devicesResponseEnd === null ? null : Math.round(first.devicesResponseEnd - first.devicesRequestStart),
      after_response_ms: first.devicesResponseEnd === null ? null : Math.round(first.ms - first.devicesResponseEnd),
      devices_json_kb: first.devicesBytes === null ? null : Math.round(first.devicesBytes / 1024),
      rows: first.rows,
      rows_in_dom: domRows,
      window_s: Math.round(wall),
      live_events: events,
      device_updates: f1.deviceUpdates - f0.deviceUpdates,
      // parse + apply in the stream handler (rendering is scheduled to the next frame)
      apply_ms_per_event: events ? Number(((f1.applyMs - f0.applyMs) / events).toFixed(1)) : null,
      busy_pct: Number(busy.toFixed(1)),
      script_pct: share("ScriptDuration"),
      layout_pct: share("LayoutDuration"),
      style_pct: share("RecalcStyleDuration"),
      long_tasks: {
        count: longTasks.length,
        total_ms: Math.round(longTasks.reduce((a, b) => a + b, 0)),
        max_ms: Math.round(Math.max(0, ...longTasks)),
      },
      js_heap_mb: Number((m1.JSHeapUsedSize / 2 ** 20).toFixed(1)),
      synthetic_1hz: await synthetic(page, metric, token, url),
      targets: { first_render_ms: TARGET_FIRST_RENDER_MS, busy_pct: TARGET_BUSY_PCT },
      pass: first.ms < TARGET_FIRST_RENDER_MS && busy < TARGET_BUSY_PCT,
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    if (browser) await browser.close();
    server.kill("SIGTERM");
    await new Promise((r) => {
      const t = setTimeout(() => {
        server.kill("SIGKILL");
        r();
      }, 15000);
      server.on("exit", () => {
        clearTimeout(t);
        r();
      });
    });
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
