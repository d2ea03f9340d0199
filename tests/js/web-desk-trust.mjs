// The agent desk (/desk/) in headless Chromium where issue 21 found trust broken, one scenario
// per test of tests/tests/e2e/web_desk_trust.rs (`config.scenario`):
// - "presence": the applicant page says online, away and (its will) offline, and the desk
//   shows exactly those words, never a presence payload's own text;
// - "closed": a desk with a closed conversation on screen, which the gateway has since
//   forgotten, drops off the network and is reloaded without asking for it again;
// - "sign-out": Sign out ends the token on the server (POST /v1/logout), then forgets it.
// Where the Rust side must look at the server, the script prints `{"step": ...}` and waits for
// one JSON line on stdin; its last line is the result.
import { createInterface } from "node:readline";
import { DESKTOP, PHONE, accessibility, cuttable, launch, openPage, screenshot } from "./web-harness.mjs";
import { applicant, expect, http, signIn, staff } from "./web-actors.mjs";

const config = JSON.parse(process.argv[2]);
const WAIT = { timeout: 20_000 };

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
  const { value, done } = await stdinLines.next();
  if (done) throw new Error(`no answer to step ${name}`);
  return JSON.parse(value);
}

/** Console errors a scenario expects are allowed while it runs; any other fails the test. */
const allowed = [];
const unexpected = [];
async function open(browser, name, path, size = DESKTOP, init = null) {
  const opened = await openPage(browser, "about:blank", size);
  if (init) await opened.context.addInitScript(init);
  opened.errors.push = (error) => {
    if (!allowed.some((pattern) => pattern.test(error))) unexpected.push(`${name}: ${error}`);
    return 0;
  };
  await opened.page.goto(`${config.base}${path}`);
  return opened;
}

async function signedIn(page, username) {
  await page.fill("#username", username);
  await page.fill("#password", config.password);
  await page.click("#sign-in");
  await page.waitForSelector("#desk-view:not([hidden])", WAIT);
  await page.waitForSelector('#connection[data-state="online"]', WAIT);
}

async function available(page) {
  await page.click("#availability");
  await page.waitForSelector('#availability[data-state="available"]', WAIT);
}

/** A tab whose visibility the test sets with `__setHidden` (installed before the page's
    script, through the DevTools protocol, which the page's CSP does not govern). */
function visibility() {
  let hidden = false;
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
}

async function presenceIs(page, text) {
  await page.waitForFunction((expected) => document.getElementById("presence").textContent.includes(expected), text, WAIT);
}

// ---- Presence ---------------------------------------------------------------------------------

async function presence(browser, result) {
  const ann = await open(browser, "ann", "/desk/");
  await signedIn(ann.page, "ann");
  await available(ann.page);
  const phone = await open(browser, "applicant", "/kiosk/", PHONE, visibility);
  await phone.page.fill("#first-message", "Is my licence valid abroad?");
  await phone.page.click("#start");
  await phone.page.waitForFunction(() => document.body.dataset.session !== "", null, WAIT);
  const session = await phone.page.evaluate(() => document.body.dataset.session);
  const subject = await phone.page.getAttribute("#messages li.own[data-seq]", "data-sender", WAIT);
  result.session = session;

  // The session is offered to Ann; her desk shows the applicant's presence as it changes.
  await ann.page.click(`#my-sessions li[data-session="${session}"] button`, WAIT);
  await ann.page.waitForSelector(`#conversation[data-session="${session}"]`, WAIT);
  // Every text the line ever shows is kept, to look for a payload's own words later.
  await ann.page.evaluate(() => {
    const line = document.getElementById("presence");
    window.__presenceSeen = [line.textContent];
    new MutationObserver(() => window.__presenceSeen.push(line.textContent))
      .observe(line, { childList: true, characterData: true, subtree: true });
  });
  await presenceIs(ann.page, `${subject} (applicant): online`);
  await phone.page.evaluate(() => window.__setHidden(true));
  await presenceIs(ann.page, `${subject} (applicant): away`);
  await phone.page.evaluate(() => window.__setHidden(false));
  await presenceIs(ann.page, `${subject} (applicant): online`);
  result.violations = { desk: await accessibility(ann.page) };
  await screenshot(ann.page, config.artifacts, "desk-presence");

  // A supervisor's client joins and publishes a presence that is not one of the protocol's
  // values (the gateway may refuse it), then a true one: the desk shows only the true one.
  const sueToken = await signIn(config.base, "sue", config.password);
  let sue = await staff(config.mqtt_url, "sue", sueToken);
  await sue.act(session, { type: "join" });
  result.forgedAccepted = await sue.publish(`cc/v1/sessions/${session}/presence/sue`, { v: 1, status: config.forged });
  // A gateway that refuses it may end the connection: the true one then goes on a new one.
  if (!sue.isConnected()) sue = await staff(config.mqtt_url, "sue", sueToken);
  await sue.publish(`cc/v1/sessions/${session}/presence/sue`, { v: 1, status: "away" });
  await presenceIs(ann.page, "sue: away");

  // The applicant's page goes (its tab closed): the desk shows it offline.
  await phone.context.close();
  await presenceIs(ann.page, `${subject} (applicant): offline`);
  result.seen = await ann.page.evaluate(() => window.__presenceSeen);
  await sue.end();
}

// ---- A closed conversation, forgotten by the gateway ------------------------------------------

async function closed(browser, result) {
  const ann = await open(browser, "ann", "/desk/");
  const network = await cuttable(ann, config.mqtt_path);
  await signedIn(ann.page, "ann");
  await available(ann.page);
  const listed = (session) => ann.page.waitForSelector(`#my-sessions li[data-session="${session}"]`, WAIT);

  // Two sessions are offered to Ann; she closes the first with it on screen.
  const first = await applicant(config.base, config.mqtt_url, "First: my fine was paid twice.");
  await listed(first.session);
  const ongoing = await applicant(config.base, config.mqtt_url, "Ongoing: a question about renewals.");
  await listed(ongoing.session);
  await ann.page.click(`#my-sessions li[data-session="${first.session}"] button`);
  await ann.page.waitForSelector(`#conversation[data-session="${first.session}"]`, WAIT);
  await ann.page.fill("#close-reason", "refunded");
  await ann.page.click("#close");
  await ann.page.locator('#entries > li[data-kind="event"]', { hasText: "Conversation closed" }).waitFor(WAIT);
  const shownBefore = await ann.page.$$eval("#entries > li", (items) => items.length);

  // A third closes too (by a supervisor, through the API): the gateway, which keeps one
  // closed session, forgets the first.
  const third = await applicant(config.base, config.mqtt_url, "Third: never mind.");
  await listed(third.session);
  const sue = await signIn(config.base, "sue", config.password);
  const closedThird = await http(config.base, `/v1/sessions/${third.session}/close`, { method: "POST", token: sue, body: {} });
  expect(closedThird.status === 200, `the third session closes: ${JSON.stringify(closedThird)}`);
  await ann.page.locator(`#my-sessions li[data-session="${third.session}"]`).waitFor({ ...WAIT, state: "detached" });
  await step("forgotten", { session: first.session });

  // Ann's desk drops off the network and returns. It follows the ongoing session again (news
  // from it shows as a badge), which it subscribes to after any other.
  allowed.push(/WebSocket/i, /ERR_INTERNET_DISCONNECTED/);
  await network.cut();
  await ann.page.waitForSelector('#connection:not([data-state="online"])', WAIT);
  await network.restore();
  await ann.page.waitForSelector('#connection[data-state="online"]', { timeout: 30_000 });
  allowed.splice(-2);
  await ongoing.write("Ongoing: are you there?");
  const badge = `#my-sessions li[data-session="${ongoing.session}"] .badge`;
  await ann.page.waitForSelector(badge, WAIT);
  // The closed conversation is still on screen, as it was.
  result.shown = { before: shownBefore, after: await ann.page.$$eval("#entries > li", (items) => items.length) };
  await step("reconnected");

  // Reloaded, the desk asks for its open sessions only.
  await ann.page.reload();
  await ann.page.waitForSelector('#connection[data-state="online"]', WAIT);
  await listed(ongoing.session);
  await ongoing.write("Ongoing: hello again.");
  await ann.page.waitForSelector(badge, WAIT);
  await step("reloaded");
  for (const client of [first, ongoing, third]) await client.end();
}

// ---- Sign out ---------------------------------------------------------------------------------

async function signOut(browser, result) {
  const bob = await open(browser, "bob", "/desk/");
  const asked = [];
  bob.page.on("request", (request) => {
    if (new URL(request.url()).pathname === "/v1/logout") {
      asked.push({ method: request.method(), authorization: request.headers().authorization || null });
    }
  });
  await signedIn(bob.page, "bob");
  const token = await bob.page.evaluate(() => JSON.parse(sessionStorage.getItem("courtchat.desk")).token);
  await bob.page.click("#sign-out");
  await bob.page.waitForSelector("#sign-in-view:not([hidden])", WAIT);
  await bob.page.waitForSelector('#connection[data-state="offline"]', WAIT);
  result.token = token;
  result.logout = asked;
  result.stored = await bob.page.evaluate(() => [sessionStorage.length, localStorage.length]);
}

// ---- Running one -------------------------------------------------------------------------------

const scenarios = { presence, closed, "sign-out": signOut };
const browser = await launch(config.chromium);
const result = {};
try {
  const scenario = scenarios[config.scenario];
  expect(scenario, `a scenario named ${config.scenario}`);
  await scenario(browser, result);
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error && error.stack ? error.stack : error);
} finally {
  result.unexpectedErrors = unexpected;
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(0);
