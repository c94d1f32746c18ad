// The machine page in a real browser: charts, health, events and delivery render; an operator
// sends a command from it and sees its result; a viewer gets no command buttons; a machine that
// runs the whole agent (as the demo's own machine does) shows its health checks and actors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, api, screenshot } from "./lib.mjs";

const fx = fixture();
let browser;
before(async () => (browser = await launch()));
after(async () => browser && (await browser.close()));

const FINAL = ["succeeded", "failed", "rejected", "expired", "timed_out"];

test("the machine page shows charts, health checks, events and delivery", async () => {
  const id = fx.devices[1];
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, `#/device/${id}`);
  await page.locator("#dv-head h2").filter({ hasText: id }).waitFor({ timeout: 10000 });
  await page.locator("#dv-charts .uplot").first().waitFor({ timeout: 10000 });
  assert.ok((await page.locator("#dv-charts .uplot").count()) >= 4, "cpu, gpu, power, app charts");
  // the machine's own figures (docs/kpis.md), which simulated machines report
  const charts = await page.locator("#dv-charts").innerText();
  for (const title of ["Returns per hour", "Bin fill"]) assert.ok(charts.includes(title), `${title} chart in: ${charts}`);
  // switching the range refetches
  await page.click('[data-range="15m"]');
  await page.locator('[data-range="15m"].active').waitFor();
  await page.locator("#dv-charts .uplot").first().waitFor({ timeout: 10000 });
  // simulated machines send no health reports: the section says so
  await page.waitForFunction(() => (document.querySelector("#dv-health")?.innerText || "").trim().length > 0, null, { timeout: 10000 });
  await page.locator("#dv-delivery .kv").waitFor();
  assert.equal(await page.locator("#dv-cmds").count(), 0, "a viewer has no command buttons");
  await page.waitForTimeout(2500); // live points arrive
  await screenshot(page, "machine.png");
  await page.screenshot({ path: new URL("./screenshots/machine-full.png", import.meta.url).pathname, fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
});

test("an operator sends a command from the machine page and sees its result", async () => {
  const id = fx.devices[2];
  const { page, context } = await openAs(browser, fx, fx.operator, `#/device/${id}`);
  await page.locator('#dv-cmds [data-action="drop_caches"]').waitFor({ timeout: 10000 });
  await page.click('#dv-cmds [data-action="drop_caches"]');
  await page.locator("#dlg").waitFor({ state: "visible" });
  // the reason is required
  await page.click("#dlg-ok");
  assert.match(await page.locator("#dlg-err").innerText(), /required/);
  await page.fill("#dlg-f-reason", "browser test");
  await page.click("#dlg-ok");
  await page.locator("#dlg").waitFor({ state: "hidden", timeout: 5000 }).catch(async () => {
    throw new Error(`the command was not accepted: ${await page.locator("#dlg-err").innerText()}`);
  });
  const row = page.locator("#dv-cmdlist tr[data-command]").first();
  await row.waitFor({ timeout: 5000 });
  const cmdId = await row.getAttribute("data-command");
  // progress, then a final state on the page without reload
  await page.waitForFunction(
    ([cid, fin]) => fin.includes(document.querySelector(`tr[data-command="${cid}"]`)?.dataset.state),
    [cmdId, FINAL],
    { timeout: 30000 },
  );
  const shown = await page.locator(`tr[data-command="${cmdId}"]`).getAttribute("data-state");
  const r = await api(fx, fx.admin, `/api/v1/commands/${cmdId}`);
  assert.equal(r.status, 200);
  assert.equal(shown, r.body.state, "the page shows the state the API has");
  assert.equal(shown, "succeeded", `result: ${JSON.stringify(r.body)}`);
  await screenshot(page, "machine-command.png");
  await context.close();
});

test("a machine running the whole agent shows its health checks and actors on its page", async () => {
  const id = fx.agent_device;
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, `#/device/${id}`);
  await page.locator("#dv-head h2").filter({ hasText: id }).waitFor({ timeout: 10000 });
  // the agent reports at start-up and on every change; the page refreshes on its own
  await page.waitForFunction(
    () => document.querySelectorAll("#dv-health table").length === 2,
    null,
    { timeout: 30000 },
  ).catch(async () => {
    throw new Error(`no checks and actors tables on ${id}'s page: ${await page.locator("#dv-health").innerText()}`);
  });
  const shown = await page.locator("#dv-health").innerText();
  assert.doesNotMatch(shown, /No health report yet/);
  const r = await api(fx, fx.viewer, `/api/v1/devices/${id}`);
  assert.equal(r.status, 200);
  const report = r.body.health_report;
  assert.ok(report, `the API has a health report for ${id}`);
  const checks = await page.locator("#dv-health table").first().locator("tr td:first-child").allInnerTexts();
  for (const name of ["broker", "data_disk", "cpu", "memory"]) {
    assert.ok(checks.includes(name), `check ${name} shown: ${checks}`);
  }
  const actors = await page.locator("#dv-health table").nth(1).locator("tr td:first-child").allInnerTexts();
  for (const name of ["link", "collector", "recovery", "health"]) {
    assert.ok(actors.includes(name), `actor ${name} shown: ${actors}`);
  }
  await screenshot(page, "machine-agent-health.png");
  assert.deepEqual(errors, []);
  await context.close();
});
