// The dashboard while a run writes: the Top view of a store whose runs are
// still `running` shows the live badge and refreshes by itself. Run by
// crates/api/tests/it/dashboard.rs, which sets NS_BASE, NS_TRUTH (the top
// packet counts before and after), NS_SHOTS and NS_PROFILE, and talks over
// stdin/stdout: this script prints "READY" once the first answer shows,
// the test writes more rows, finishes the runs and answers "WRITTEN".
// Prints each check, then "N passed, M failed"; exits 1 on any failure.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const truth = JSON.parse(readFileSync(process.env.NS_TRUTH, "utf8"));
let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  if (ok) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail === undefined ? "" : ": " + detail}`); }
}
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const browser = await chromium.launchPersistentContext(process.env.NS_PROFILE, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1366, height: 850 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const errors = [];
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push("uncaught: " + e.message));
  const counts = () => page.$$eval("#top-table tbody td[data-col=packets]", (tds) => tds.map((td) => Number(td.dataset.value)));
  await page.goto(`${process.env.NS_BASE}/#/top?task=per_src_ip&by=packets&limit=10`);
  await page.waitForFunction(() => document.body.dataset.state === "ready" && !document.querySelector("#live").hidden, null, { timeout: 20000 });
  check("a running run shows the live badge", await page.isVisible("#live"));
  const before = await counts();
  check("the first answer is the first half's", JSON.stringify(before) === JSON.stringify(truth.before), `${before} vs ${truth.before}`);
  await page.screenshot({ path: join(process.env.NS_SHOTS, "live.png"), fullPage: true });
  console.log("READY");
  const reply = await nextLine();
  check("the test wrote more rows", reply === "WRITTEN", reply);
  // No navigation from here: the view must refresh itself.
  await page.waitForFunction((want) => {
    const got = [...document.querySelectorAll("#top-table tbody td[data-col=packets]")].map((td) => Number(td.dataset.value));
    return JSON.stringify(got) === JSON.stringify(want);
  }, truth.after, { timeout: 30000 }).catch(() => {});
  const after = await counts();
  check("the view refreshed itself with the new rows", JSON.stringify(after) === JSON.stringify(truth.after), `${after} vs ${truth.after}`);
  await page.waitForFunction(() => document.querySelector("#live").hidden, null, { timeout: 30000 }).catch(() => {});
  check("the live badge goes once every run finished", !(await page.isVisible("#live")));
  check("no console errors", errors.length === 0, JSON.stringify(errors));
} catch (e) {
  check("the browser session ran to the end", false, e.stack || e.message);
} finally {
  await browser.close();
  lines.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
