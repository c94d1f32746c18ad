// The web view on a phone (390 x 844, the size of a current iPhone) in the system's light and
// dark themes: the overview, a machine page and the alerts page fit the screen (no
// horizontal scrolling of the page), follow the system's theme, and are saved as screenshots
// (tests/browser/screenshots/phone-*.png). The header's toggle picks the other theme and the
// page remembers it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, screenshot } from "./lib.mjs";

const fx = fixture();
const PHONE = { width: 390, height: 844 };
let browser;
before(async () => (browser = await launch()));
after(async () => browser && (await browser.close()));

// How much wider than the screen the page is (0 when it fits), and the widest offender.
async function overflow(page) {
  return page.evaluate(() => {
    const over = document.documentElement.scrollWidth - window.innerWidth;
    let widest = "";
    if (over > 0)
      for (const el of document.querySelectorAll("body *")) {
        const r = el.getBoundingClientRect();
        if (r.right > window.innerWidth + 1 && r.width > 0) {
          widest = `${el.tagName.toLowerCase()}#${el.id}.${el.className} right=${Math.round(r.right)}`;
          break;
        }
      }
    return { over, widest, scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth };
  });
}

for (const theme of ["light", "dark"]) {
  test(`overview, machine page and alerts page fit a 390 px phone in the ${theme} theme`, async () => {
    const { page, context, errors } = await openAs(browser, fx, fx.operator, "#/", { viewport: PHONE, colorScheme: theme });
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), theme, "the theme follows the system");
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    // dark: a dark background; light: a light one (the sum of the channels)
    const sum = bg.match(/\d+/g).slice(0, 3).reduce((a, b) => a + Number(b), 0);
    assert.ok(theme === "dark" ? sum < 150 : sum > 600, `${theme} background ${bg}`);

    const pages = [
      ["overview", "#/", ".vt-row:not([hidden])[data-device]"],
      ["machine", `#/device/${fx.alert_device}`, "#dv-head .dev-head"],
      ["alerts", "#/alerts", "tr[data-alert]"],
    ];
    for (const [name, hash, ready] of pages) {
      await page.evaluate((h) => (location.hash = h), hash);
      await page.locator(ready).first().waitFor({ timeout: 15000 });
      if (name === "machine") await page.locator("#dv-charts .uplot, #dv-charts .none").first().waitFor({ timeout: 15000 });
      await page.waitForTimeout(500);
      const o = await overflow(page);
      assert.ok(o.scrollWidth <= o.innerWidth, `${name} (${theme}) scrolls sideways: ${JSON.stringify(o)}`);
      await screenshot(page, `phone-${name}-${theme}.png`);
    }
    assert.deepEqual(errors, []);
    await context.close();
  });
}

test("the theme toggle picks the other theme and the page remembers it", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, "#/", { viewport: PHONE, colorScheme: "light" });
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "light");
  await page.click("#theme-toggle");
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "dark");
  assert.equal(await page.evaluate(() => localStorage.getItem("rvmTheme")), "dark");
  await page.reload();
  await page.waitForSelector("#me:not(:empty)");
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "dark", "kept across a reload");
  // back to the system's theme: the choice is forgotten, the system is followed again
  await page.click("#theme-toggle");
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "light");
  assert.equal(await page.evaluate(() => localStorage.getItem("rvmTheme")), null);
  assert.deepEqual(errors, []);
  await context.close();
});

test("times show in the viewer's zone with UTC and the offset on hover", async () => {
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, "#/alerts", { timezoneId: "Asia/Kolkata" });
  const t = page.locator("tr[data-alert] time").first();
  await t.waitFor({ timeout: 15000 });
  const [iso, text, title] = await t.evaluate((e) => [e.getAttribute("datetime"), e.textContent, e.title]);
  const d = new Date(iso);
  // Kolkata is UTC+05:30: the text is the UTC time moved by 5 h 30
  const local = new Date(d.getTime() + 330 * 60e3);
  const hhmm = `${String(local.getUTCHours()).padStart(2, "0")}:${String(local.getUTCMinutes()).padStart(2, "0")}`;
  assert.ok(text.includes(hhmm), `${text} shows ${hhmm} (${iso} in Asia/Kolkata)`);
  assert.match(title, /UTC · shown in your zone \(UTC\+05:30\)/);
  assert.deepEqual(errors, []);
  await context.close();
});
