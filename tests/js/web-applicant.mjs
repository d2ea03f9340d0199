// The applicant page (/kiosk/) in headless Chromium where trust is at stake (issue 21): what
// staff write for staff never shows; a kiosk left alone asks, then forgets everything; a
// closed conversation is not subscribed again and a refused survey is told; enrolment links
// are checked and confirmed. Driven by tests/tests/e2e/web_applicant.rs: configuration as JSON
// in argv[2] (`scenario` picks one); where the Rust side must look at the server, this script
// prints `{"step": ...}` and waits for one JSON line on stdin; its last line is the result.
import { createInterface } from "node:readline";
import { DESKTOP, PHONE, accessibility, cuttable, launch, openPage, screenshot } from "./web-harness.mjs";
import { applicant, expect, staff } from "./web-actors.mjs";

const config = JSON.parse(process.argv[2]);
const WAIT = { timeout: 20_000 };

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
  const { value, done } = await stdinLines.next();
  if (done) throw new Error(`no answer to step ${name}`);
  return JSON.parse(value);
}

/** Console errors a scenario expects (a refused request's status) are allowed while it runs. */
const allowed = [];
const unexpected = [];
async function openApplicant(browser, url, size, init) {
  const opened = await openPage(browser, "about:blank", size);
  if (init) await opened.context.addInitScript(init.script, init.arg);
  for (const error of opened.errors) unexpected.push(error);
  opened.errors.push = (error) => {
    if (!allowed.some((pattern) => pattern.test(error))) unexpected.push(error);
    return 0;
  };
  await opened.page.goto(url);
  return opened;
}

const sessionOf = (page) => page.evaluate(() => document.body.dataset.session);
const html = (page) => page.evaluate(() => document.documentElement.outerHTML);
const bodyText = (page) => page.evaluate(() => document.body.innerText);
async function started(page) {
  await page.waitForFunction(() => document.body.dataset.session !== "", null, WAIT);
  return sessionOf(page);
}

/** Sets the kiosk credential before the page's script runs: a device enrolled earlier. */
function enrolled(credential) {
  localStorage.setItem("courtchat.kiosk", credential);
}

// ---- Staff text -------------------------------------------------------------------------------

/** An agent escalates and closes with reasons; then events that still carry a reason (as an
    older or tampered server would send them) arrive too. The page says each in neutral words,
    and no reason is anywhere in its DOM. */
async function staffText(browser, result) {
  const agent = await staff(config.mqtt_url, config.agent.name, config.agent.token);
  const { page } = await openApplicant(browser, `${config.base}/kiosk/`, PHONE);
  await page.fill("#first-message", "I was fined twice for one parking ticket.");
  await page.click("#start");
  const session = await started(page);
  result.session = session;
  await agent.act(session, { type: "join" });
  await agent.act(session, { type: "lock", op: "acquire" });
  await agent.act(session, { type: "message", body: "Let me look into it." });
  await agent.act(session, { type: "escalate", reason: config.reasons.escalate });
  await page.locator("#messages li[data-kind=event]", { hasText: "Your conversation was passed to a supervisor" }).waitFor(WAIT);
  const closed = await agent.act(session, { type: "close", reason: config.reasons.close });
  await page.waitForSelector("#survey:not([hidden])", WAIT);
  await page.locator("#messages li[data-kind=event]", { hasText: "An agent closed the conversation" }).waitFor(WAIT);

  // A server that still put staff text in events (or a hostile one): the service publishes,
  // after the real close, an escalation and a close that carry reasons.
  const service = await staff(config.mqtt_url, config.service.name, config.service.token);
  const hostile = [
    { type: "escalated", reason: config.reasons.hostile },
    { type: "closed", reason: config.reasons.hostile, survey_offered: true },
  ];
  let seq = closed.seq;
  for (const event of hostile) {
    seq += 1;
    await service.publish(`cc/v1/sessions/${session}/messages`, {
      v: 1, session_id: session, seq, prev_seq: seq - 1, at: new Date().toISOString(), sender: "system", kind: "event", event,
    });
  }
  await page.waitForSelector(`#messages li[data-seq="${seq}"]`, WAIT);
  result.events = await page.$$eval("#messages li[data-kind=event]", (items) => items.map((li) => li.textContent));
  const shown = await html(page);
  result.reasonsShown = Object.values(config.reasons).filter((reason) => shown.includes(reason));
  result.violations = { survey: await accessibility(page) };
  await screenshot(page, config.artifacts, "applicant-staff-text");
  await service.end();
  await agent.end();
}

// ---- A kiosk left alone -----------------------------------------------------------------------

/** What the first person wrote and was told, to look for after the reset. */
const FIRST = ["ALPHA-question", "ALPHA-agent-answer", "ALPHA-typed", "ALPHA-session-storage", "ALPHA-local-storage", "ALPHA-draft"];

async function idleKiosk(browser, result) {
  const agent = await staff(config.mqtt_url, config.agent.name, config.agent.token);
  const { page } = await openApplicant(browser, `${config.base}/kiosk/`, DESKTOP, { script: enrolled, arg: config.kiosk_credential });
  expect(await page.evaluate(() => document.body.dataset.mode) === "kiosk", "an enrolled kiosk");

  // The first person asks, the agent answers, they write once more.
  await page.fill("#first-message", `${FIRST[0]}: where do I pay a fine?`);
  await page.click("#start");
  const first = await started(page);
  await agent.act(first, { type: "join" });
  await agent.subscribe([`cc/v1/sessions/${first}/presence/+`]);
  await agent.act(first, { type: "lock", op: "acquire" });
  const reply = await agent.act(first, { type: "message", body: `${FIRST[1]}: at the front desk.` });
  await page.waitForSelector(`#messages li[data-seq="${reply.seq}"]`, WAIT);
  await page.fill("#composer", `${FIRST[2]}: thanks`);
  await page.press("#composer", "Enter");
  await page.locator("#messages li[data-status=sent]", { hasText: FIRST[2] }).waitFor(WAIT);
  // What a library of the page might have kept in the browser's storage.
  await page.evaluate(([a, b]) => new Promise((resolve, reject) => {
    sessionStorage.setItem("scratch", a);
    localStorage.setItem("scratch", b);
    const open = indexedDB.open("scratch", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("kept");
    open.onsuccess = () => {
      const tx = open.result.transaction("kept", "readwrite");
      tx.objectStore("kept").put(a, "entry");
      tx.oncomplete = () => {
        open.result.close();
        resolve();
      };
    };
    open.onerror = () => reject(open.error);
  }), [FIRST[3], FIRST[4]]);
  // The page's own bubbles carry its subject (the applicant's identity on the server).
  const applicantSubject = await page.getAttribute("#messages li.own[data-seq]", "data-sender");
  expect(applicantSubject && applicantSubject.startsWith("ap-"), `the applicant's subject: ${applicantSubject}`);
  result.firstSubject = applicantSubject;

  // Nobody touches the screen: the question, with a countdown. Someone answers it.
  await page.waitForSelector("#idle-dialog[open]", WAIT);
  result.question = (await page.locator("#idle-heading").textContent()).trim();
  result.countdown = parseInt(await page.locator("#idle-countdown").textContent(), 10);
  result.violations = { question: await accessibility(page) };
  await screenshot(page, config.artifacts, "kiosk-idle-question");
  await page.setViewportSize({ width: PHONE.width, height: PHONE.height });
  result.violations.questionPhone = await accessibility(page);
  await screenshot(page, config.artifacts, "kiosk-idle-question-phone");
  await page.setViewportSize({ width: DESKTOP.width, height: DESKTOP.height });
  await page.click("#idle-stay");
  await page.waitForSelector("#idle-dialog:not([open])", { ...WAIT, state: "attached" });
  expect(await sessionOf(page) === first, "answering keeps the conversation");

  // Asked again, and nobody answers: everything goes.
  await page.waitForSelector("#idle-dialog[open]", WAIT);
  await page.waitForFunction(() => document.body.dataset.session === "", null, WAIT);
  await page.waitForSelector("#start-view:not([hidden])", WAIT);
  const offline = await agent.until(({ topic, data }) => topic.endsWith(`/${first}/presence/${applicantSubject}`) && data.status === "offline", "the first applicant offline");
  result.offlineSeen = Boolean(offline);
  result.afterReset = await leftovers(page, [...FIRST, first, applicantSubject]);

  // A draft left on the start screen is asked about and cleared too.
  await page.fill("#first-message", `${FIRST[5]}: half a question`);
  await page.waitForSelector("#idle-dialog[open]", WAIT);
  await page.waitForFunction(() => document.getElementById("first-message").value === "", null, WAIT);
  result.afterDraft = await leftovers(page, [...FIRST, first, applicantSubject]);

  // The next person: a new session, under a new identity.
  await page.fill("#first-message", "BETA: I lost my licence.");
  await page.click("#start");
  result.sessions = [first, await started(page)];
  result.violations.next = await accessibility(page);
  await agent.end();
}

/** What of `secrets` the page still holds: in its DOM, its storage, its databases. */
async function leftovers(page, secrets) {
  const shown = await html(page);
  const storage = await page.evaluate(async () => ({
    session: Object.keys(sessionStorage),
    local: Object.keys(localStorage),
    databases: (await indexedDB.databases()).map((db) => db.name),
  }));
  return { inDom: secrets.filter((secret) => shown.includes(secret)), storage };
}

// ---- A closed conversation, forgotten by the gateway ------------------------------------------

/** The agent closes; the gateway then forgets the session (it keeps one closed session, and a
    second one closes). The page's connection drops and returns: it subscribes to nothing of
    the closed session. Its survey, refused by the gateway, is told. */
async function surveyRefused(browser, result) {
  const agent = await staff(config.mqtt_url, config.agent.name, config.agent.token);
  const opened = await openApplicant(browser, `${config.base}/kiosk/`, PHONE);
  const network = await cuttable(opened, config.mqtt_path);
  const { page: applicantPage } = opened;
  await applicantPage.fill("#first-message", "Can I pay in instalments?");
  await applicantPage.click("#start");
  const session = await started(applicantPage);
  result.session = session;
  await agent.act(session, { type: "join" });
  await agent.act(session, { type: "close" });
  await applicantPage.waitForSelector("#survey:not([hidden])", WAIT);

  // Another conversation closes: the gateway forgets the first.
  const other = await applicant(config.base, config.mqtt_url, "Another question.");
  await agent.act(other.session, { type: "join" });
  await agent.act(other.session, { type: "close" });
  await other.end();
  await step("forgotten", { session });

  allowed.push(/WebSocket/i, /ERR_INTERNET_DISCONNECTED/);
  await network.cut();
  await applicantPage.waitForSelector('#connection:not([data-state="online"])', WAIT);
  await network.restore();
  await applicantPage.waitForSelector('#connection[data-state="online"]', { timeout: 30_000 });

  // The answer goes on the same connection after whatever it subscribed to on return; the
  // gateway refuses it, and the page says so.
  await applicantPage.check("input[name=rating][value='2']");
  await applicantPage.click("#survey-submit");
  await applicantPage.waitForSelector("#survey-thanks:not([hidden])", WAIT);
  result.told = (await applicantPage.locator("#survey-thanks").textContent()).trim();
  result.surveyHidden = await applicantPage.isHidden("#survey");
  result.violations = { refused: await accessibility(applicantPage) };
  await screenshot(applicantPage, config.artifacts, "applicant-survey-refused");
  allowed.splice(-2);
  await step("answered");
  await agent.end();
}

// ---- Enrolment links --------------------------------------------------------------------------

/** Opens the page at `hash` and waits until the page has dealt with the link. */
async function withLink(opened, hash) {
  // A fresh load each time: the notice of the link before must not answer for this one.
  await opened.page.goto("about:blank");
  await opened.page.goto(`${config.base}/kiosk/${hash}`);
  await opened.page.waitForFunction(() => !document.getElementById("enrol-notice").hidden
    || !document.getElementById("enrol-choice").hidden, null, WAIT);
}

const pageState = (page) => page.evaluate(() => ({
  mode: document.body.dataset.mode,
  hash: location.hash,
  href: location.href,
  stored: Object.keys(localStorage),
  notice: document.getElementById("enrol-notice").hidden ? "" : document.getElementById("enrol-notice").textContent,
  startShown: !document.getElementById("start-view").hidden,
}));

async function enrolment(browser, result) {
  const opened = await openApplicant(browser, "about:blank", PHONE);
  const { page: device } = opened;

  // A broken link: the page works, says so, and stays a phone.
  await withLink(opened, "#enrol=%");
  result.broken = await pageState(device);
  result.violations = { notice: await accessibility(device) };
  // A well-formed credential the server does not know: refused (a 401, which Chromium logs).
  allowed.push(/status of 401/);
  await withLink(opened, `#enrol=${config.unknown_credential}`);
  result.unknown = await pageState(device);
  allowed.pop();

  // A valid one: the question names the kiosk; "keep it as it is" enrols nothing.
  await withLink(opened, `#enrol=${encodeURIComponent(config.kiosk_credential)}`);
  result.question = (await device.locator("#enrol-question").textContent()).trim();
  result.asking = await pageState(device);
  result.violations.question = await accessibility(device);
  await device.setViewportSize({ width: DESKTOP.width, height: DESKTOP.height });
  result.violations.questionDesktop = await accessibility(device);
  await screenshot(device, config.artifacts, "kiosk-enrolment-question");
  await device.setViewportSize({ width: PHONE.width, height: PHONE.height });
  await device.click("#enrol-cancel");
  await device.waitForSelector("#enrol-notice:not([hidden])", WAIT);
  result.cancelled = await pageState(device);

  // The link again, in the same tab (only the fragment changes): yes this time.
  await device.evaluate((hash) => { location.hash = hash; }, `#enrol=${config.kiosk_credential}`);
  await device.waitForSelector("#enrol-choice:not([hidden])", WAIT);
  await device.click("#enrol-confirm");
  await device.waitForFunction(() => document.body.dataset.mode === "kiosk", null, WAIT);
  result.confirmed = await pageState(device);
  result.storedCredential = await device.evaluate(() => localStorage.getItem("courtchat.kiosk"));

  // The kiosk now starts its conversations as the kiosk.
  await device.fill("#first-message", "Enrolled and asking.");
  await device.click("#start");
  result.session = await started(device);
}

// ---- Running one -------------------------------------------------------------------------------

const scenarios = { "staff-text": staffText, "idle-kiosk": idleKiosk, "survey-refused": surveyRefused, enrolment };
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
