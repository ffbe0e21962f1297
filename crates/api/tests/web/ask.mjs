// The dashboard's Ask view in Debian's headless Chromium, against an API
// with a token and a scripted analyst. Run by
// crates/api/tests/it/dashboard.rs, which sets NS_BASE, NS_TRUTH (the
// token, the answer's pieces, the tool call as shown, the failure
// message), NS_SHOTS and NS_PROFILE, and reads stdout: this script prints
// "FIRST_PIECE_SHOWN" once the answer's first piece is on screen, and only
// then does the analyst send the rest (so the answer visibly streams).
// Prints each check, then "N passed, M failed"; exits 1 on any failure.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const BASE = env("NS_BASE");
const truth = JSON.parse(readFileSync(env("NS_TRUTH"), "utf8"));
const SHOTS = env("NS_SHOTS");

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  if (ok) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail === undefined ? "" : ": " + detail}`); }
}

const browser = await chromium.launchPersistentContext(env("NS_PROFILE"), {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1366, height: 850 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

const errors = [];
const dialogs = [];
const asks = []; // every POST /api/v1/ask: headers and body
const answer = (page) => page.$eval("#ask-answer", (e) => ({ text: e.textContent, state: e.dataset.state }));
const waitState = (page, state) =>
  page.waitForFunction((s) => document.querySelector("#ask-answer")?.dataset.state === s, state, { timeout: 20000 });

try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push("uncaught: " + e.message));
  // A model's `<img onerror=alert(1)>` that ran would open a dialog.
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  page.on("request", (r) => {
    if (r.url().endsWith("/api/v1/ask")) asks.push({ method: r.method(), headers: r.headers(), body: r.postData() });
  });

  // Signing in, then the view.
  await page.goto(`${BASE}/#/ask`);
  await page.waitForSelector("#login:not([hidden])");
  await page.fill("#token", truth.token);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#ask-form");
  check("the Ask view is offered when the server has an analyst", (await page.$$("#nav a[data-view=ask]")).length === 1);
  check("the view starts with an empty question and no answer",
    (await page.inputValue("#ask-question")) === "" && (await page.isHidden("#ask-output")));

  // A question: the answer streams in.
  await page.fill("#ask-question", "Who sent the most bytes?");
  await page.click("#ask-send");
  await page.waitForFunction(() => (document.querySelector("#ask-answer")?.textContent || "").includes("Top talker"), null, { timeout: 20000 });
  const first = await answer(page);
  check("the first piece shows while the answer is still streaming", first.state === "streaming", first.state);
  check("... before the rest was sent", !first.text.includes("612 MB"), first.text);
  check("the Stop button is active while streaming", await page.isEnabled("#ask-stop"));
  check("the Ask button waits while streaming", await page.isDisabled("#ask-send"));
  const toolsNow = await page.$$eval("#ask-tools li", (lis) => lis.map((li) => li.textContent));
  check("the tool call is listed as it happens", toolsNow.length === 1 && toolsNow[0] === truth.call, JSON.stringify(toolsNow));
  console.log("FIRST_PIECE_SHOWN");

  await waitState(page, "done");
  const done = await answer(page);
  check("every piece arrived", done.text.includes("10.0.0.1 sent 612 MB") && done.text.includes("over TCP port 443"), done.text);
  check("the model's HTML shows as text", done.text.includes("<img src=x onerror=alert(1)>"), done.text);
  check("... and made no element", (await page.$$("#ask-answer img, #view img")).length === 0);
  check("... and ran nothing", dialogs.length === 0, JSON.stringify(dialogs));
  const shape = await page.$eval("#ask-answer", (e) => ({
    heading: e.querySelector("h4")?.textContent,
    strong: [...e.querySelectorAll("strong")].map((s) => s.textContent),
    code: [...e.querySelectorAll("code")].map((c) => c.textContent),
    items: [...e.querySelectorAll("li")].map((li) => li.textContent),
  }));
  check("Markdown's heading, bold and code are drawn", shape.heading === "Top talker"
    && JSON.stringify(shape.strong) === '["10.0.0.1"]' && JSON.stringify(shape.code) === '["612 MB"]', JSON.stringify(shape));
  check("Markdown's list is drawn", JSON.stringify(shape.items) === '["mostly to 10.0.0.9","over TCP port 443"]', JSON.stringify(shape.items));
  const tools = await page.$$eval("#ask-tools li", (lis) => lis.map((li) => li.textContent));
  check("done leaves the one tool call listed once", tools.length === 1 && tools[0] === truth.call, JSON.stringify(tools));
  check("the buttons are back after the answer", (await page.isEnabled("#ask-send")) && (await page.isDisabled("#ask-stop")));
  check("the question went out as a POST with the token", asks.length === 1 && asks[0].method === "POST"
    && asks[0].headers.authorization === `Bearer ${truth.token}`
    && JSON.stringify(JSON.parse(asks[0].body)) === JSON.stringify({ question: "Who sent the most bytes?" }), JSON.stringify(asks[0]));
  await page.screenshot({ path: join(SHOTS, "ask.png"), fullPage: true });

  // An analyst's error shows plainly, after the text so far.
  await page.fill("#ask-question", "Please fail");
  await page.click("#ask-send");
  await waitState(page, "error");
  check("an analyst's error is shown", await page.isVisible("#ask-error")
    && (await page.textContent("#ask-error")).includes(truth.failure), await page.textContent("#ask-error"));
  check("the text before the error stands", (await answer(page)).text.includes("Top talker"));
  check("the previous answer's tool calls were replaced", (await page.$$("#ask-tools li")).length === 1);

  // Stop: the answer ends here (the test checks the server let it go).
  await page.fill("#ask-question", "A question to stop");
  await page.click("#ask-send");
  await page.waitForFunction(() => (document.querySelector("#ask-answer")?.textContent || "").includes("Top talker")
    && document.querySelector("#ask-answer").dataset.state === "streaming", null, { timeout: 20000 });
  check("no error left from the previous question", await page.isHidden("#ask-error"));
  await page.click("#ask-stop");
  await waitState(page, "stopped");
  check("Stop ends the answer and says so", (await page.textContent("#ask-status")).includes("Stopped"));
  check("after Stop, Ask is possible again", (await page.isEnabled("#ask-send")) && (await page.isDisabled("#ask-stop")));

  // Nothing leaked into the page, nothing went wrong in it.
  const leak = (await page.evaluate(() => document.body.innerText)).match(/\b(undefined|NaN)\b|\[object \w+\]/);
  check("no undefined, NaN or [object] text", !leak, leak && leak[0]);
  check("no console errors", errors.length === 0, JSON.stringify(errors));
} catch (e) {
  check("the browser session ran to the end", false, e.stack || e.message);
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
