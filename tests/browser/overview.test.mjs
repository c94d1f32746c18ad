// The fleet overview in a real browser: it lists the machines of a running server, and a
// machine that stops turns offline on the open page without a reload.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, control, screenshot } from "./lib.mjs";

const fx = fixture();
let browser;
before(async () => (browser = await launch()));
after(async () => browser && (await browser.close()));

test("the overview lists every machine of the running server", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.viewer);
  for (const id of fx.devices) await page.locator(`.vt-row:not([hidden])[data-device="${id}"]`).waitFor({ timeout: 15000 });
  const ids = await page.locator(".vt-row:not([hidden])[data-device]").evaluateAll((rows) => rows.map((r) => r.dataset.device));
  assert.deepEqual([...ids].sort(), [...fx.devices].sort());
  // counts by status add up to the fleet
  const counts = await page.locator("#counts").innerText();
  assert.match(counts, new RegExp(`${fx.devices.length} machines`));
  // a metric cell shows a number once telemetry arrived
  const row = page.locator(`.vt-row:not([hidden])[data-device="${fx.devices[1]}"]`);
  await assert.doesNotReject(
    page.waitForFunction((id) => /\d/.test(document.querySelector(`.vt-row:not([hidden])[data-device="${id}"] .num`)?.textContent || ""), fx.devices[1], { timeout: 10000 }),
  );
  assert.equal(await row.locator(".st").innerText(), await row.getAttribute("data-status"));
  // search narrows the list; sorting by machine descending puts the last id first
  await page.fill("#ov-q", fx.devices[2]);
  await page.waitForFunction(() => document.querySelectorAll(".vt-row:not([hidden])").length === 1);
  await page.fill("#ov-q", "");
  await page.click('#ov-head [data-key="id"]');
  await page.click('#ov-head [data-key="id"]');
  await page.waitForFunction((last) => document.querySelector(".vt-row:not([hidden])")?.dataset.device === last, [...fx.devices].sort().at(-1));
  await page.click('#ov-head [data-key="id"]');
  await page.waitForFunction((first) => document.querySelector(".vt-row:not([hidden])")?.dataset.device === first, [...fx.devices].sort()[0]);
  // sparklines have data after their history arrived
  await page.waitForTimeout(1500);
  await screenshot(page, "overview.png");
  assert.deepEqual(errors, []);
  await context.close();
});

test("a stopped machine turns offline within 5 s without a reload", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.viewer);
  const id = fx.stop_device;
  const row = page.locator(`.vt-row:not([hidden])[data-device="${id}"]`);
  await row.waitFor({ timeout: 15000 });
  await page.waitForFunction((id) => document.querySelector(`.vt-row:not([hidden])[data-device="${id}"]`)?.dataset.status === "online" || document.querySelector(`.vt-row:not([hidden])[data-device="${id}"]`)?.dataset.status === "degraded", id, { timeout: 15000 });
  // a marker that a reload would wipe
  await page.evaluate(() => (window.__noReload = 42));
  const navigations = [];
  page.on("framenavigated", (f) => f === page.mainFrame() && navigations.push(f.url()));
  const t0 = Date.now();
  await control(fx, `stop/${fx.devices.indexOf(id)}`);
  await page.waitForFunction((id) => document.querySelector(`.vt-row:not([hidden])[data-device="${id}"]`)?.dataset.status === "offline", id, { timeout: 5000 });
  const took = Date.now() - t0;
  assert.equal(await row.locator(".st").innerText(), "offline");
  assert.equal(await page.evaluate(() => window.__noReload), 42, "the page was not reloaded");
  assert.deepEqual(navigations, []);
  console.log(`# ${id} shown offline ${took} ms after it stopped`);
  assert.ok(took < 5000, `took ${took} ms`);
  assert.deepEqual(errors, []);
  await context.close();
});
