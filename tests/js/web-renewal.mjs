// The applicant page (/kiosk/) on a phone, through a conversation longer than its token
// (tests/tests/e2e/web_renewal.rs): it starts one, stays for `stay_ms` (several token
// lifetimes on a server whose applicant tokens are short), watching the connection indicator
// all along, then writes again. Configuration in argv[2]: {"chromium", "base", "stay_ms",
// "artifacts"}. Prints one result line: {"ok", "session", "subject", "states" (every state the
// indicator showed, in order, repeats folded), "last" (the final message's status), "errors"}.
import { PHONE, launch, openPage, screenshot } from "./web-harness.mjs";

const config = JSON.parse(process.argv[2]);
const WAIT = { timeout: 20_000 };
const browser = await launch(config.chromium);
const result = { ok: false, states: [] };
try {
  const { page, errors } = await openPage(browser, `${config.base}/kiosk/`, PHONE);
  await page.fill("#first-message", "My licence renewal is stuck.");
  await page.click("#start");
  await page.waitForFunction(() => document.body.dataset.session, null, WAIT);
  result.session = await page.evaluate(() => document.body.dataset.session);
  const until = Date.now() + config.stay_ms;
  while (Date.now() < until) {
    const state = await page.evaluate(() => document.getElementById("connection").dataset.state);
    if (result.states[result.states.length - 1] !== state) result.states.push(state);
    await page.waitForTimeout(100);
  }
  await page.fill("#composer", "Still here, long after my first token.");
  await page.press("#composer", "Enter");
  const last = page.locator("li.own").last();
  await page.waitForFunction(
    () => [...document.querySelectorAll("li.own")].pop()?.dataset.status !== "sending",
    null,
    WAIT,
  );
  result.last = await last.getAttribute("data-status");
  await screenshot(page, config.artifacts, "kiosk-phone-renewed").catch(() => {});
  result.errors = errors;
  result.ok = true;
} catch (error) {
  result.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
