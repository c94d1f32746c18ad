// Scoped access in a real browser: a viewer whose token is limited to one store (site1) signs
// in and sees only that store's machines in the overview, only its alerts, only its store on
// the map and in the stores table (no site no store has), and another store's page is not
// found. It uses the same API as every page, so this checks the page shows what the API cut.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, api, screenshot } from "./lib.mjs";

const fx = fixture();
const allDay = { mon: "24h", tue: "24h", wed: "24h", thu: "24h", fri: "24h", sat: "24h", sun: "24h" };
let browser;
let token;
let site1;

before(async () => {
  browser = await launch();
  // the same rows estate.test.mjs writes (a PUT is idempotent): site1 and site3 are stores,
  // site2 is a site no store has
  assert.equal((await api(fx, fx.admin, "/api/v1/estate/retailers/brw", { method: "PUT", body: JSON.stringify({ name: "Browser Retail" }) })).status, 200);
  for (const [id, lat, lon] of [["site1", 59.91, 10.75], ["site3", 60.39, 5.32]]) {
    const body = { id, name: `Store ${id}`, retailer: "brw", time_zone: "Europe/Oslo", hours: allDay, latitude: lat, longitude: lon };
    const r = await api(fx, fx.admin, `/api/v1/estate/stores/${id}`, { method: "PUT", body: JSON.stringify(body) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  const made = await api(fx, fx.admin, "/api/v1/tokens", { method: "POST", body: JSON.stringify({ name: `site1-viewer-${Date.now()}`, role: "viewer", scope: { site: "site1" } }) });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  token = made.body.token;
  const all = (await api(fx, fx.admin, "/api/v1/devices")).body.devices;
  site1 = all.filter((d) => d.site === "site1").map((d) => d.id).sort();
  assert.ok(site1.length > 0 && site1.length < all.length, "site1 holds some machines, not all");
});
after(async () => browser && (await browser.close()));

test("a viewer scoped to one store sees only its machines in the overview", async () => {
  const { page, context, errors } = await openAs(browser, fx, token);
  assert.match(await page.locator("#me").innerText(), /site site1/);
  for (const id of site1) await page.locator(`.vt-row:not([hidden])[data-device="${id}"]`).waitFor({ timeout: 15000 });
  // a few live batches later, still only those (the stream is cut to the scope too)
  await page.waitForTimeout(2500);
  const ids = await page.locator(".vt-row[data-device]").evaluateAll((rows) => rows.map((r) => r.dataset.device));
  assert.deepEqual([...new Set(ids)].sort(), site1);
  assert.match(await page.locator("#counts").innerText(), new RegExp(`${site1.length} machines`));
  await screenshot(page, "scope-overview.png");
  assert.deepEqual(errors, []);
  await context.close();
});

test("the scoped viewer's alerts page lists only its store's alerts", async () => {
  const { page, context, errors } = await openAs(browser, fx, token, "#/alerts");
  await page.locator(`tr[data-alert*=":${fx.alert_device}:"]`).first().waitFor({ timeout: 10000 });
  const alerts = await page.locator("tr[data-alert]").evaluateAll((rows) => rows.map((r) => r.dataset.alert));
  for (const id of alerts) assert.ok(site1.some((d) => id.includes(`:${d}:`)), `${id} is not about a site1 machine`);
  assert.deepEqual(errors, []);
  await context.close();
});

test("the scoped viewer's map and stores table show only its store", async () => {
  const { page, context, errors } = await openAs(browser, fx, token, "#/estate");
  await page.locator("#es-svg").waitFor({ timeout: 10000 });
  await page.locator('tr[data-store="site1"]').waitFor({ timeout: 10000 });
  const stores = await page.$$eval("#es-svg .es-mark", (els) => els.reduce((a, e) => a + Number(e.dataset.stores), 0));
  assert.equal(stores, 1, "one store on the map");
  assert.equal(await page.locator("tr[data-store]").count(), 1);
  const text = await page.locator("#view").innerText();
  assert.ok(!text.includes("site3") && !text.includes("site2"), text);
  await screenshot(page, "scope-map.png");
  // its store's page shows its machines; another store's page is not found
  await page.evaluate(() => (location.hash = "#/estate/store/site1"));
  await page.locator("#es-machines").waitFor({ timeout: 10000 });
  assert.equal((await page.locator("#es-machines tr").count()) - 1, site1.length);
  assert.equal((await api(fx, token, "/api/v1/estate/stores/site3")).status, 404);
  assert.deepEqual(errors, []);
  await context.close();
});
