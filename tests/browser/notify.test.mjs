// Notifications in a real browser: an operator sends a test message to a channel and the page
// shows what the receiver answered (and, for a receiver it cannot trust, the TLS error); an
// operator adds a maintenance window from the page and removes it; a viewer sees the
// channels and windows but no buttons.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, api, screenshot } from "./lib.mjs";

const fx = fixture();
let browser;
before(async () => (browser = await launch()));
after(async () => browser && (await browser.close()));

test("an operator's test message shows what the HTTPS receiver answered", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.operator, "#/notifications");
  const row = page.locator(`tr[data-channel="${fx.test_channel}"]`);
  await row.waitFor({ timeout: 10000 });
  await row.locator("[data-test]").click();
  const result = page.locator(`[data-test-result="${fx.test_channel}"]`);
  await result.waitFor({ timeout: 15000 });
  assert.equal(await result.getAttribute("data-ok"), "true");
  const text = await result.innerText();
  assert.match(text, /^Delivered in \d+ ms\. The receiver answered: HTTP 200 /);
  assert.ok(text.includes(fx.receiver_answer), text);
  await screenshot(page, "notifications-test.png");
  assert.deepEqual(errors, []);
  await context.close();
});

test("a test message to a receiver behind an untrusted CA shows the TLS error", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.operator, "#/notifications");
  const row = page.locator(`tr[data-channel="${fx.untrusted_channel}"]`);
  await row.waitFor({ timeout: 10000 });
  await row.locator("[data-test]").click();
  const result = page.locator(`[data-test-result="${fx.untrusted_channel}"]`);
  await result.waitFor({ timeout: 15000 });
  assert.equal(await result.getAttribute("data-ok"), "false");
  assert.match(await result.innerText(), /^Not delivered \(\d+ ms\): tls: /);
  assert.deepEqual(errors, []);
  await context.close();
});

test("an operator adds a maintenance window from the page and removes it", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.operator, "#/notifications");
  await page.locator(`tr[data-window="${fx.config_window}"]`).waitFor({ timeout: 10000 });
  await page.click("#nt-add-window");
  await page.locator("#dlg").waitFor({ state: "visible" });
  await page.fill("#dlg-f-name", "browser-nightly");
  await page.fill("#dlg-f-sites", "site1, site2");
  await page.fill("#dlg-f-time_zone", "America/New_York");
  await page.fill("#dlg-f-from", "02:00");
  await page.fill("#dlg-f-to", "03:00");
  await page.click("#dlg-ok");
  await page.locator("#dlg").waitFor({ state: "hidden" });
  const row = page.locator('tr[data-window="browser-nightly"]');
  await row.waitFor({ timeout: 5000 });
  assert.match(await row.innerText(), /America\/New_York/);
  const listed = await api(fx, fx.viewer, "/api/v1/maintenance");
  const w = listed.body.windows.find((w) => w.name === "browser-nightly");
  assert.ok(w, JSON.stringify(listed.body));
  assert.deepEqual([w.sites, w.from, w.to, w.source, w.created_by], [["site1", "site2"], "02:00", "03:00", "api", fx.operator_name]);
  await screenshot(page, "notifications-windows.png");

  // a bad time zone is refused in the dialog, naming the field
  await page.click("#nt-add-window");
  await page.fill("#dlg-f-name", "bad");
  await page.fill("#dlg-f-sites", "site1");
  await page.fill("#dlg-f-time_zone", "Mars/Olympus");
  await page.click("#dlg-ok");
  await page.waitForFunction(() => /time_zone/.test(document.querySelector("#dlg-err")?.textContent || ""), null, { timeout: 5000 });
  await page.click("#dlg-cancel");

  await row.locator("[data-remove-window]").click();
  await page.click("#dlg-ok");
  await row.waitFor({ state: "detached", timeout: 5000 });
  const after = await api(fx, fx.viewer, "/api/v1/maintenance");
  assert.ok(!after.body.windows.some((w) => w.name === "browser-nightly"));
  assert.deepEqual(errors, []);
  await context.close();
});

test("a viewer sees channels and windows but no test or window buttons", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, "#/notifications");
  await page.locator(`tr[data-channel="${fx.test_channel}"]`).waitFor({ timeout: 10000 });
  await page.locator(`tr[data-window="${fx.config_window}"]`).waitFor({ timeout: 10000 });
  assert.equal(await page.locator("[data-test], #nt-add-window, [data-remove-window]").count(), 0);
  assert.deepEqual(errors, []);
  await context.close();
});
