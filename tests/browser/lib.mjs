// Shared helpers of the browser tests: the fixture the Rust harness wrote, a Chromium from
// Debian driven by playwright-core, sign-in as a role, and a control channel to the harness.
import { readFileSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const SCREENSHOTS = join(HERE, "screenshots");

// Launch flags known to work on this machine: no sandbox as root, and no background traffic
// (the network is closed; Chromium's own connections would be refused, many at a time).
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function chromiumPath() {
  return process.env.CHROMIUM || "/usr/bin/chromium";
}

/// What tests/tests/browser.rs wrote: url, tokens, machines, control url.
export function fixture() {
  const p = process.env.RVM_BROWSER_FIXTURE;
  if (!p) throw new Error("RVM_BROWSER_FIXTURE is not set: run `cargo test -p rvm-fleet-tests --test browser`");
  return JSON.parse(readFileSync(p, "utf8"));
}

/// A headless Chromium; Playwright gives each launch a new, empty user data dir.
export async function launch() {
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: CHROMIUM_ARGS });
}

/// A new context signed in with `token` (through the demo's `#token=` link), on `hash`;
/// `options` go to the context (a phone's `viewport`, the system's `colorScheme`).
export async function openAs(browser, fx, token, hash = "#/", options = {}) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, ...options });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && !/Failed to load resource/.test(m.text()) && errors.push(m.text()));
  await page.goto(`${fx.url}#token=${encodeURIComponent(token)}`);
  await page.waitForSelector("#me:not(:empty)");
  if (hash !== "#/") await page.evaluate((h) => (location.hash = h), hash);
  return { context, page, errors };
}

/// Asks the Rust harness to act on the simulated fleet (POST {control}/{path}).
export async function control(fx, path) {
  const r = await fetch(`${fx.control}/${path}`, { method: "POST" });
  if (!r.ok) throw new Error(`control ${path}: ${r.status}`);
}

/// The REST API as `token`.
export async function api(fx, token, path, init = {}) {
  const r = await fetch(fx.url.replace(/\/$/, "") + path, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(init.headers || {}) },
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, name), fullPage: false });
}
