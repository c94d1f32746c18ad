// The machine page's look inside (issue 24) in a real browser: the Processes tab of a simulated
// machine whose vision service leaks descriptors and left a zombie shows the top lists, the
// counts and the watched process; the Network and Disks tabs of the machine running the whole
// agent on this machine show its real interfaces and block devices, with charts from history.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fixture, launch, openAs, api, screenshot } from "./lib.mjs";

const fx = fixture();
let browser;
before(async () => (browser = await launch()));
after(async () => browser && (await browser.close()));

async function tab(page, key) {
  await page.click(`#in-tabs [data-tab="${key}"]`);
  await page.locator(`#in-tabs [data-tab="${key}"].active`).waitFor();
  await page.locator(`#in-body[data-tab="${key}"]`).waitFor();
}

test("the Processes tab shows the top lists, the zombie and the leaking process", async () => {
  const id = fx.leak_device;
  // the zombie fault is set as the browser tests start; process counts travel with the
  // machine's next scan (every 10 s)
  for (const deadline = Date.now() + 30000; ; ) {
    const d = (await api(fx, fx.admin, `/api/v1/devices/${id}`)).body;
    if (d.metrics?.["proc.zombies"] > 0) break;
    assert.ok(Date.now() < deadline, "the leaking machine reports no zombie after 30 s");
    await new Promise((r) => setTimeout(r, 500));
  }
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, `#/device/${id}`);
  await page.locator("#dv-inside #in-tabs").waitFor({ timeout: 10000 });
  await tab(page, "processes");
  await page.locator('#in-body table[data-list="top_cpu"]').waitFor({ timeout: 10000 });
  // what the API has is what the page shows: the memory list (sizes are steady; the CPU list
  // of the next record may already be another), and the CPU list highest first
  const detail = (await api(fx, fx.admin, `/api/v1/devices/${id}`)).body.telemetry.detail;
  const rows = (list) => page.locator(`#in-body table[data-list="${list}"] tr[data-pid]`);
  for (const list of ["top_cpu", "top_mem"]) assert.equal(await rows(list).count(), 5, `${list}: five rows`);
  const memNames = await rows("top_mem").locator("td:nth-child(2)").allInnerTexts();
  assert.deepEqual(memNames, detail.procs.top_mem.map((p) => p.name));
  const cpu = (await rows("top_cpu").locator("td:nth-child(7)").allInnerTexts()).map(Number);
  assert.deepEqual(cpu, [...cpu].sort((a, b) => b - a), `highest CPU first: ${cpu}`);
  assert.equal(await page.locator('#in-body [data-count="zombies"]').innerText(), "1");
  const watched = page.locator('#in-body table[data-list="watched"] tr[data-pid]');
  assert.equal(await watched.count(), 1);
  const fds = Number(await watched.first().locator("td:nth-child(6)").innerText());
  assert.ok(fds > 48, `the leak shows: ${fds} fds`);
  // charts of the counts and of the leaking process, from history
  await page.locator("#in-charts[data-tab=processes] .uplot").first().waitFor({ timeout: 15000 });
  assert.ok((await page.locator("#in-charts .uplot").count()) >= 2, "counts and the watched process");
  await page.locator("#dv-inside").scrollIntoViewIfNeeded();
  await screenshot(page, "machine-processes.png");
  assert.deepEqual(errors, []);
  await context.close();
});

test("the Network and Disks tabs show this machine's interfaces and block devices from a real agent", async () => {
  const id = fx.agent_device;
  const { page, context, errors } = await openAs(browser, fx, fx.viewer, `#/device/${id}`);
  await page.locator("#dv-inside #in-tabs").waitFor({ timeout: 10000 });
  const detail = (await api(fx, fx.admin, `/api/v1/devices/${id}`)).body.telemetry.detail;
  assert.ok(detail.ifaces.length > 0 && detail.block.length > 0, JSON.stringify(detail).slice(0, 400));

  await tab(page, "network");
  const iface = detail.ifaces[0].iface;
  await page.locator(`#in-body tr[data-iface="${iface}"]`).waitFor({ timeout: 10000 });
  assert.match(await page.locator(`#in-body tr[data-iface="${iface}"]`).innerText(), /\/s/);
  await page.locator('#in-body table[data-list="tcp"]').waitFor();
  // the interface's traffic over the last hour, from history
  await page.locator("#in-charts[data-tab=network] .uplot").first().waitFor({ timeout: 15000 });
  await page.locator("#dv-inside").scrollIntoViewIfNeeded();
  await screenshot(page, "machine-network.png");

  await tab(page, "disks");
  const disk = detail.block[0].name;
  await page.locator(`#in-body tr[data-disk="${disk}"]`).waitFor({ timeout: 10000 });
  await page.locator("#in-charts[data-tab=disks] .uplot").first().waitFor({ timeout: 15000 });
  const hist = await api(fx, fx.admin, `/api/v1/devices/${id}/metrics?name=disk.${disk}.write_bytes_per_s&step=1s`);
  assert.ok(hist.body.points.length > 0, "disk figures in history");
  await page.locator("#dv-inside").scrollIntoViewIfNeeded();
  await screenshot(page, "machine-disks.png");
  assert.deepEqual(errors, []);
  await context.close();
});
