// Alerts in a real browser: an operator acknowledges a firing alert from the page and the
// API shows it acknowledged; a viewer sees no acknowledge button; the filters ask the server
// (severity, site, time range) and an operator resolves an alert by hand with a comment.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, api, screenshot } from "./lib.mjs";

const fx = fixture();
let browser;
before(async () => (browser = await launch()));
after(async () => browser && (await browser.close()));

async function firingAlertId() {
  const r = await api(fx, fx.admin, "/api/v1/alerts?state=firing");
  const a = r.body.alerts.find((a) => a.device === fx.alert_device && !a.ack);
  assert.ok(a, `a firing alert on ${fx.alert_device}: ${JSON.stringify(r.body)}`);
  return a.id;
}

test("an operator acknowledges an alert from the page and the API shows it", async () => {
  const id = await firingAlertId();
  const { page, context, errors } = await openAs(browser, fx, fx.operator, "#/alerts");
  const row = page.locator(`tr[data-alert="${id}"]`);
  await row.waitFor({ timeout: 10000 });
  await row.locator("[data-ack]").click();
  await page.locator("#dlg").waitFor({ state: "visible" });
  await page.fill("#dlg-f-comment", "looking at it (browser test)");
  await screenshot(page, "alerts-ack-dialog.png");
  await page.click("#dlg-ok");
  await page.locator("#dlg").waitFor({ state: "hidden" });
  // the page moves it to the acknowledged tab
  await page.click('[data-tab="acknowledged"]');
  await page.locator(`tr[data-alert="${id}"][data-state="acknowledged"]`).waitFor({ timeout: 5000 });
  const r = await api(fx, fx.admin, "/api/v1/alerts?state=acknowledged");
  const a = r.body.alerts.find((a) => a.id === id);
  assert.ok(a, `acknowledged in the API: ${JSON.stringify(r.body)}`);
  assert.equal(a.ack.by, fx.operator_name);
  assert.equal(a.ack.comment, "looking at it (browser test)");
  await screenshot(page, "alerts.png");
  assert.deepEqual(errors, []);
  await context.close();
});

test("a viewer sees alerts but no acknowledge or silence button", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, "#/alerts");
  await page.click('[data-tab="acknowledged"]');
  await page.locator("tr[data-alert]").first().waitFor({ timeout: 10000 });
  assert.equal(await page.locator("[data-ack], [data-silence]").count(), 0);
  assert.deepEqual(errors, []);
  await context.close();
});

test("the filters list the alerts of a severity and site, and an operator resolves one by hand", async () => {
  const id = (await api(fx, fx.admin, "/api/v1/alerts?state=firing")).body.alerts.find((a) => a.device === fx.alert_device).id;
  const site = (await api(fx, fx.admin, `/api/v1/devices/${fx.alert_device}`)).body.site;
  const { page, context, errors } = await openAs(browser, fx, fx.operator, "#/alerts");
  await page.locator("#af-form").waitFor({ timeout: 10000 });
  await page.selectOption("#af-severity", "warning");
  await page.fill("#af-site", site);
  await page.fill("#af-from", "2020-01-01T00:00");
  await page.click('#af-form button[type="submit"]');
  const row = page.locator(`#af-result tr[data-alert="${id}"]`);
  await row.waitFor({ timeout: 10000 });
  assert.match(await page.locator("#af-count").innerText(), /match \(all\)/);
  // another severity leaves it out
  await page.selectOption("#af-severity", "critical");
  await page.click('#af-form button[type="submit"]');
  await page.waitForFunction((id) => !document.querySelector(`#af-result tr[data-alert="${id}"]`) && document.querySelector("#af-count"), id, { timeout: 10000 });
  await page.click("#af-clear");
  // resolve it from the active list, with the comment the dialog requires
  await page.click('[data-tab="acknowledged"]');
  await page.locator(`#al-list tr[data-alert="${id}"] [data-resolve]`).click();
  await page.locator("#dlg").waitFor({ state: "visible" });
  await page.click("#dlg-ok");
  assert.match(await page.locator("#dlg-err").innerText(), /why/);
  await page.fill("#dlg-f-comment", "replaced the camera (browser test)");
  await page.click("#dlg-ok");
  await page.locator("#dlg").waitFor({ state: "hidden" });
  await page.click('[data-tab="resolved"]');
  await page.locator(`#al-list tr[data-alert="${id}"] [data-resolved-by="${fx.operator_name}"]`).waitFor({ timeout: 5000 });
  const r = await api(fx, fx.admin, "/api/v1/alerts?state=resolved");
  const a = r.body.alerts.find((a) => a.id === id);
  assert.ok(a, `resolved in the API: ${JSON.stringify(r.body)}`);
  assert.deepEqual([a.resolved_by.by, a.resolved_by.comment], [fx.operator_name, "replaced the camera (browser test)"]);
  await screenshot(page, "alerts-resolved.png");
  assert.deepEqual(errors, []);
  await context.close();
});

test("the incidents and audit pages render", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.admin, "#/incidents");
  await page.waitForSelector("#view .card");
  await page.evaluate(() => (location.hash = "#/audit"));
  // the acknowledgement above is in the audit log
  await page.waitForFunction(() => /ack/.test(document.querySelector("#au-list")?.innerText || ""), null, { timeout: 10000 });
  assert.deepEqual(errors, []);
  await context.close();
});
