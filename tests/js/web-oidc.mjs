// The desk's sign-in through the court's identity provider, in headless Chromium: the test
// (tests/tests/e2e/oidc_sign_in.rs) sends a JSON line per step on stdin and reads one answer
// per step on stdout. Configuration in argv[2]: {"chromium": path, "base": courtchat's URL,
// "artifacts": dir}. Steps:
//   {"do": "sign-in", "as": "bob", "password": "…"}  a fresh browser goes to /desk/, clicks
//       "Sign in with your court account", signs in at the provider; answers where it ended:
//       {"outcome": "desk", "auth": {token, expires_at, username, …}} on the desk,
//       {"outcome": "refused", "status", "problem", "detail"} on courtchat's refusal page,
//       {"outcome": "provider-error", "text"} on the provider's own login page
//   {"do": "sign-out", "as": "bob"}  clicks Sign out on bob's desk and confirms at the provider;
//       answers {"outcome": "signed-out", "url"} once back on the desk's sign-in
//   {"do": "signed-out?", "as": "bob"}  waits (up to 60 s) for bob's desk to show its sign-in
//       again; answers {"outcome": "signed-out", "said"} or {"outcome": "still-signed-in"}
import readline from "node:readline";
import { launch, screenshot } from "./web-harness.mjs";

const config = JSON.parse(process.argv[2]);
const browser = await launch(config.chromium);
const say = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
/** name -> {context, page} */
const desks = new Map();
const WAIT_MS = 30_000;

async function signIn({ as, password }) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Nothing leaves this machine: only courtchat and the provider, both on loopback.
  await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${config.base}/desk/`);
  await page.locator("#sign-in-provider").click({ timeout: WAIT_MS });
  await page.locator("#idp-login").fill(as, { timeout: WAIT_MS });
  await page.locator("#idp-password").fill(password);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/v1/oidc/callback"), { timeout: WAIT_MS }).catch(() => null),
    page.locator("#idp-submit").click(),
  ]);
  const ended = await Promise.race([
    page.locator("#desk-view:not([hidden])").waitFor({ timeout: WAIT_MS }).then(() => "desk"),
    page.locator("#sign-in-refused").waitFor({ timeout: WAIT_MS }).then(() => "refused"),
    page.locator("#idp-error").waitFor({ timeout: WAIT_MS }).then(() => "provider-error"),
  ]).catch(() => "nowhere");
  await screenshot(page, config.artifacts, `oidc-${as}-${ended}`).catch(() => {});
  if (ended === "desk") {
    desks.set(as, { context, page });
    const auth = await page.evaluate(() => JSON.parse(sessionStorage.getItem("courtchat.desk")));
    return { outcome: "desk", auth, url: page.url(), errors };
  }
  const answer = { outcome: ended, url: page.url(), errors, status: response ? response.status() : null };
  if (ended === "refused") {
    answer.problem = await page.locator("#sign-in-refused").getAttribute("data-problem");
    answer.detail = await page.locator("#sign-in-detail").textContent();
  } else if (ended === "provider-error") {
    answer.text = await page.locator("#idp-error").textContent();
  }
  await context.close();
  return answer;
}

async function signOut({ as }) {
  const { context, page } = desks.get(as);
  await page.locator("#sign-out").click();
  // The provider asks whether to end its session too (RP-initiated logout): yes.
  await page.locator("button[name=logout][value=yes]").click({ timeout: WAIT_MS });
  await page.waitForURL(`${config.base}/desk/`, { timeout: WAIT_MS });
  await page.locator("#sign-in-view:not([hidden])").waitFor({ timeout: WAIT_MS });
  await screenshot(page, config.artifacts, `oidc-${as}-signed-out`).catch(() => {});
  const url = page.url();
  await context.close();
  desks.delete(as);
  return { outcome: "signed-out", url };
}

async function signedOut({ as }) {
  const { page } = desks.get(as);
  try {
    await page.locator("#sign-in-view:not([hidden])").waitFor({ timeout: 60_000 });
    return { outcome: "signed-out", said: await page.locator("#sign-in-error").textContent() };
  } catch {
    return { outcome: "still-signed-in" };
  }
}

const steps = { "sign-in": signIn, "sign-out": signOut, "signed-out?": signedOut };
say({ ready: true });
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  let step;
  try {
    step = JSON.parse(line);
  } catch {
    continue;
  }
  try {
    say(await steps[step.do](step));
  } catch (error) {
    say({ outcome: "error", error: String(error.stack || error) });
  }
}
await browser.close();
