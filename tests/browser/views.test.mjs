// Fleet overview views in a real browser (issue 22 item 5): a view in the URL filters by
// retailer and groups by store, each group summarised above the list; choosing a state and a
// model updates the URL, and opening that URL again shows the same view.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, api, screenshot } from "./lib.mjs";

const fx = fixture();
const allDay = { mon: "24h", tue: "24h", wed: "24h", thu: "24h", fri: "24h", sat: "24h", sun: "24h" };
let browser;
let devices;

const rowIds = (page) => page.locator(".vt-row:not([hidden])[data-device]").evaluateAll((rows) => rows.map((r) => r.dataset.device));

before(async () => {
  browser = await launch();
  // the rows estate.test.mjs writes (idempotent): site1 and site3 are stores of brw; site2 none
  assert.equal((await api(fx, fx.admin, "/api/v1/estate/retailers/brw", { method: "PUT", body: JSON.stringify({ name: "Browser Retail" }) })).status, 200);
  for (const [id, lat, lon] of [["site1", 59.91, 10.75], ["site3", 60.39, 5.32]]) {
    const body = { id, name: `Store ${id}`, retailer: "brw", time_zone: "Europe/Oslo", hours: allDay, latitude: lat, longitude: lon };
    assert.equal((await api(fx, fx.admin, `/api/v1/estate/stores/${id}`, { method: "PUT", body: JSON.stringify(body) })).status, 200);
  }
  devices = (await api(fx, fx.viewer, "/api/v1/devices")).body.devices;
});
after(async () => browser && (await browser.close()));

test("a view in the URL filters by retailer and groups by store", async () => {
  const inBrw = devices.filter((d) => d.site === "site1" || d.site === "site3").map((d) => d.id).sort();
  const notBrw = devices.filter((d) => !inBrw.includes(d.id));
  assert.ok(inBrw.length > 0 && notBrw.length > 0, "the fixture has machines in and out of brw's stores");
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, "#/?retailer=brw&group=site");
  await page.locator('#ov-groups [data-group-value="site1"]').waitFor({ timeout: 15000 });
  await page.waitForFunction((n) => document.querySelectorAll(".vt-row:not([hidden])[data-device]").length === n, inBrw.length, { timeout: 10000 });
  assert.deepEqual([...(await rowIds(page))].sort(), inBrw);
  // one summary per store of the retailer that has machines, with its count
  const groups = await page.locator("#ov-groups [data-group-value]").evaluateAll((b) => b.map((e) => [e.dataset.groupValue, e.textContent.trim()]));
  const site1 = devices.filter((d) => d.site === "site1").length;
  assert.ok(groups.some(([v, t]) => v === "site1" && t.endsWith(` ${site1}`)), JSON.stringify(groups));
  assert.ok(groups.every(([v]) => v === "site1" || v === "site3"), JSON.stringify(groups));
  // grouped: the rows come store by store
  const sites = (await rowIds(page)).map((id) => devices.find((d) => d.id === id).site);
  assert.deepEqual(sites, [...sites].sort(), "rows are grouped by store");
  assert.equal(await page.locator("#ov-retailer").inputValue(), "brw");
  await screenshot(page, "overview-grouped.png");
  // a click on a group filters to it, and the URL says so
  await page.click('#ov-groups [data-group-value="site1"]');
  await page.waitForFunction(() => /site=site1/.test(location.hash));
  await page.waitForFunction((n) => document.querySelectorAll(".vt-row:not([hidden])[data-device]").length === n, site1);
  assert.deepEqual(errors, []);
  await context.close();
});

test("choices go into the URL and the URL opens the same view", async () => {
  const model = devices.find((d) => d.vision_model_version)?.vision_model_version;
  assert.ok(model, "machines report a model version");
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, "#/");
  await page.locator(".vt-row:not([hidden])[data-device]").first().waitFor({ timeout: 15000 });
  await page.locator(`#ov-model option[value="${model}"]`).waitFor({ state: "attached", timeout: 10000 });
  await page.selectOption("#ov-model", model);
  await page.selectOption("#ov-group", "status");
  await page.waitForFunction(() => /group=status/.test(location.hash) && /model=/.test(location.hash));
  const url = page.url();
  const want = [...(await rowIds(page))].sort();
  const matching = devices.filter((d) => d.vision_model_version === model).length;
  assert.ok(want.length > 0 && want.length <= matching, `${want.length} of ${matching}`);
  await context.close();
  // the saved view: a new page on that URL shows the same machines, grouped by state
  const again = await openAs(browser, fx, fx.viewer, new URL(url).hash);
  await again.page.locator("#ov-groups [data-group-value]").first().waitFor({ timeout: 15000 });
  await again.page.waitForFunction((n) => document.querySelectorAll(".vt-row:not([hidden])[data-device]").length === n, want.length, { timeout: 10000 });
  assert.deepEqual([...(await rowIds(again.page))].sort(), want);
  assert.equal(await again.page.locator("#ov-model").inputValue(), model);
  assert.equal(await again.page.locator("#ov-group").inputValue(), "status");
  assert.deepEqual([...errors, ...again.errors], []);
  await again.context.close();
});
