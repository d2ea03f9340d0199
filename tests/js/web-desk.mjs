// The agent desk (/desk/) in real Chromium against a running courtchat: two agents and a
// supervisor, each in a browser context of their own, work one applicant's session. Driven by
// tests/tests/e2e/web_desk.rs: configuration as JSON in argv[2]; where the applicant (the Rust
// side) must act, this script prints `{"step": ...}` as a line and waits for the answer, one
// JSON line on stdin; the last line it prints is the result.
//
// Two scenarios, one per Rust test (`config.scenario`): "supervised" (sign-in, the lock, replies
// and notes, a network drop, a takeover, receipts, close, accessibility) and "handed-on"
// (desktop notifications in the background, renew, escalate, a reload, a transfer to a team,
// leave).
import { createInterface } from "node:readline";
import { DESKTOP, PHONE, accessibility, cuttable, launch, openPage, screenshot } from "./web-harness.mjs";

const config = JSON.parse(process.argv[2]);
/** The session the scenario works: given in the configuration, or opened by the Rust side. */
let session = config.session;
const WAIT = 20_000;

// ---- Talking to the Rust side ----------------------------------------------------------------

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
  const { value, done } = await stdinLines.next();
  if (done) throw new Error(`no answer to step ${name}`);
  return JSON.parse(value);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// ---- Desks -----------------------------------------------------------------------------------

/** Console errors a step expects (a refused sign-in's 401, a WebSocket refused while offline)
    are allowed while it runs; every other error fails the test. */
const allowed = [];
const unexpected = [];
/** Every desk opened, so that a failure can say what each one showed. */
const desks = [];
async function desk(browser, name, size = DESKTOP, init = null) {
  const opened = await openPage(browser, `${config.base}/desk/`, size);
  opened.name = name;
  desks.push(opened);
  if (init) {
    // openPage has loaded the page already; an init script applies from the next load on.
    await opened.context.addInitScript(init);
    await opened.page.reload();
  }
  // openPage collects errors into an array; watch it so each is judged when it happens.
  for (const error of opened.errors) unexpected.push(`${name} (loading): ${error}`);
  const push = opened.errors.push.bind(opened.errors);
  opened.errors.push = (error) => {
    if (!allowed.some((pattern) => pattern.test(error))) unexpected.push(`${name}: ${error}`);
    return push(error);
  };
  return opened;
}

async function signIn({ page }, username, password = config.password) {
  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.click("#sign-in");
}

async function signedIn(desk, username) {
  await signIn(desk, username);
  await desk.page.waitForSelector("#desk-view:not([hidden])", { timeout: WAIT });
  await desk.page.waitForSelector('#connection[data-state="online"]', { timeout: WAIT });
}

const text = (page, selector) => page.locator(selector).innerText();
const seqs = (page) => page.$$eval("#entries > li", (lis) => lis.map((li) => Number(li.dataset.seq)));

async function waitForText(page, selector, expected) {
  await page.waitForFunction(([selector, expected]) => {
    const node = document.querySelector(selector);
    return node && node.textContent.trim() === expected;
  }, [selector, expected], { timeout: WAIT });
}

async function entryFrom(page, kind, sender, body) {
  const locator = page.locator(`#entries > li[data-kind="${kind}"][data-sender="${sender}"]`, { hasText: body });
  await locator.first().waitFor({ timeout: WAIT });
  return locator.first();
}

async function openSession(page, list) {
  await page.locator(`#${list} li[data-session="${session}"] button`).click({ timeout: WAIT });
  await page.waitForSelector(`#conversation[data-session="${session}"]`, { timeout: WAIT });
}

async function reply(page, body) {
  await page.fill("#reply", body);
  await page.click("#send-reply");
}

// ---- Scenario "supervised" --------------------------------------------------------------------

/** Ann and Bob answer a waiting session under the reply lock, Ann's desk drops off the network
    and catches up, Sue (a supervisor) takes the lock over, the applicant reads, Ann closes. */
async function supervised(browser, result) {
  Object.assign(result, { violations: {}, screenshots: [] });
  const ann = await desk(browser, "ann");
  const bob = await desk(browser, "bob");
  const annNetwork = await cuttable(ann, config.mqttPath);

  // The sign-in screen: accessible; a wrong password is refused with the problem's detail.
  result.violations.signIn = await accessibility(ann.page);
  result.screenshots.push(await screenshot(ann.page, config.artifacts, "desk-sign-in"));
  allowed.push(/status of 401/);
  await signIn(ann, "ann", "not the password");
  await ann.page.waitForSelector("#sign-in-error:not([hidden])", { timeout: WAIT });
  result.signInError = await text(ann.page, "#sign-in-error");
  allowed.pop();

  // Ann signs in and becomes available: the waiting session is offered to her.
  await signedIn(ann, "ann");
  const stored = await ann.page.evaluate(() => [sessionStorage.length, localStorage.length]);
  check(stored[0] === 1 && stored[1] === 0, `the token belongs in sessionStorage only: ${stored}`);
  await ann.page.click("#availability");
  await ann.page.waitForSelector('#availability[data-state="available"]', { timeout: WAIT });
  await openSession(ann.page, "my-sessions");
  await entryFrom(ann.page, "message", config.applicant, "My licence expired");

  // She takes the reply lock, answers and writes a note.
  await ann.page.click("#lock-acquire");
  await waitForText(ann.page, "#lock-holder", "ann");
  result.leaseShown = await text(ann.page, "#lock-expires");
  await reply(ann.page, "Hello, this is Ann.");
  await entryFrom(ann.page, "message", "ann", "Hello, this is Ann.");
  await ann.page.fill("#note", "Check the renewal backlog.");
  await ann.page.click("#send-note");
  await entryFrom(ann.page, "note", "ann", "Check the renewal backlog.");

  // Bob opens the session by its id and joins; the lock is Ann's, and the refusal says so.
  await signedIn(bob, "bob");
  await bob.page.fill("#open-session-id", session);
  await bob.page.click("#open-session");
  await bob.page.waitForSelector(`#conversation[data-session="${session}"]`, { timeout: WAIT });
  await bob.page.click("#join");
  await entryFrom(bob.page, "note", "ann", "Check the renewal backlog.");
  await waitForText(bob.page, "#lock-holder", "ann");
  // Bob types a note: Ann sees note typing, told apart from conversation typing.
  await bob.page.fill("#note", "Looking");
  await bob.page.locator("#note").press("g");
  await ann.page.waitForFunction(() => /bob is writing an internal note/.test(document.querySelector("#typing").textContent), null, { timeout: WAIT });
  result.typingSeen = await text(ann.page, "#typing");
  await bob.page.fill("#note", "");
  await bob.page.click("#lock-acquire");
  await bob.page.waitForSelector("#lock-error:not([hidden])", { timeout: WAIT });
  result.lockRefusal = await text(bob.page, "#lock-error");
  check(/ann/.test(result.lockRefusal), `the refusal names ann: ${result.lockRefusal}`);

  // Ann lets go; Bob takes it and answers.
  await ann.page.click("#lock-release");
  await waitForText(ann.page, "#lock-holder", "free");
  await waitForText(bob.page, "#lock-holder", "free");
  await bob.page.click("#lock-acquire");
  await waitForText(bob.page, "#lock-holder", "bob");
  await waitForText(ann.page, "#lock-holder", "bob");
  await reply(bob.page, "Bob here, taking over.");
  const bobReply = await entryFrom(ann.page, "message", "bob", "Bob here, taking over.");
  const bobReplySeq = Number(await bobReply.getAttribute("data-seq"));
  await entryFrom(bob.page, "message", "bob", "Bob here, taking over.");
  await step("replies_sent");

  // Both desks show the same entries in the same order.
  result.annSeqs = await seqs(ann.page);
  result.bobSeqs = await seqs(bob.page);
  check(JSON.stringify(result.annSeqs) === JSON.stringify(result.bobSeqs), `desks differ: ${result.annSeqs} / ${result.bobSeqs}`);

  // Ann's desk drops off the network while the applicant writes; back online, it catches up.
  allowed.push(/WebSocket/i, /ERR_INTERNET_DISCONNECTED/);
  await annNetwork.cut();
  await ann.page.waitForSelector('#connection:not([data-state="online"])', { timeout: 60_000 });
  result.offlineState = await ann.page.getAttribute("#connection", "data-state");
  const { transcript } = await step("offline");
  await annNetwork.restore();
  await ann.page.waitForSelector('#connection[data-state="online"]', { timeout: 30_000 });
  await ann.page.waitForFunction((n) => document.querySelectorAll("#entries > li").length >= n, transcript.length, { timeout: WAIT });
  allowed.splice(-2);
  result.transcriptSeqs = transcript;
  result.annSeqsAfter = await seqs(ann.page);
  result.bobSeqsAfter = await seqs(bob.page);
  await ann.page.waitForSelector('#availability[data-state="available"]', { timeout: WAIT });

  // Sue, a supervisor, sees every open session and takes the lock over.
  const sue = await desk(browser, "sue");
  await signedIn(sue, "sue");
  await openSession(sue.page, "all-sessions");
  await waitForText(sue.page, "#lock-holder", "bob");
  await sue.page.click("#lock-takeover");
  await waitForText(sue.page, "#lock-holder", "sue");
  await waitForText(ann.page, "#lock-holder", "sue");
  await waitForText(bob.page, "#lock-holder", "sue");

  // The applicant reads: Bob's reply shows as read on the desks.
  await step("read", { seq: bobReplySeq });
  await ann.page.waitForSelector(`#entries > li[data-seq="${bobReplySeq}"][data-receipt="read"]`, { timeout: WAIT });
  await bob.page.waitForSelector(`#entries > li[data-seq="${bobReplySeq}"][data-receipt="read"]`, { timeout: WAIT });

  // The desk with a conversation open: accessible, at desktop and phone sizes.
  result.violations.desk = await accessibility(ann.page);
  result.screenshots.push(await screenshot(ann.page, config.artifacts, "desk-conversation"));
  const phone = await desk(browser, "sue-phone", PHONE);
  await signedIn(phone, "sue");
  await openSession(phone.page, "all-sessions");
  await entryFrom(phone.page, "message", "bob", "Bob here, taking over.");
  result.violations.phone = await accessibility(phone.page);
  result.screenshots.push(await screenshot(phone.page, config.artifacts, "desk-phone"));

  // Ann closes the session; every desk sees it closed.
  await ann.page.fill("#close-reason", "Renewal explained");
  await ann.page.click("#close");
  for (const page of [ann.page, bob.page, sue.page]) {
    await page.locator('#entries > li[data-kind="event"]', { hasText: "Conversation closed" }).first().waitFor({ timeout: WAIT });
  }
  await step("closed");
  result.annFinal = await seqs(ann.page);

  // Sign-out ends the connection and forgets the token. It asks the server to end the token
  // first (POST /v1/logout); a server without that route answers 404, which Chromium logs.
  allowed.push(/status of 404/);
  await bob.page.click("#sign-out");
  await bob.page.waitForSelector("#sign-in-view:not([hidden])", { timeout: WAIT });
  allowed.pop();
  result.bobSignedOut = await bob.page.evaluate(() => sessionStorage.length === 0);
  await bob.page.waitForSelector('#connection[data-state="offline"]', { timeout: WAIT });
}

// ---- Scenario "handed-on" ---------------------------------------------------------------------

/** Installed in Ann's context before the desk's own script (through the DevTools protocol, which
    the page's CSP does not govern): a tab whose visibility the test sets with `__setHidden`, and
    a Notification that records what the desk shows instead of asking the system. Permission
    starts "default", as in a fresh profile, so that the desk's own button is what grants it. */
function backgroundable() {
  let hidden = false;
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
  const shown = [];
  window.__notifications = shown;
  class RecordingNotification extends EventTarget {
    static permission = "default";
    static async requestPermission() {
      RecordingNotification.permission = "granted";
      return "granted";
    }
    constructor(title, options = {}) {
      super();
      Object.assign(this, { title, body: options.body, tag: options.tag, whileHidden: hidden });
      shown.push(this);
    }
    close() {}
  }
  window.Notification = RecordingNotification;
}

const notifications = (page) => page.evaluate(() => window.__notifications.map(({ title, body, tag, whileHidden }) => ({ title, body, tag, whileHidden })));

async function eventShown(page, description) {
  await page.locator('#entries > li[data-kind="event"]', { hasText: description }).first().waitFor({ timeout: WAIT });
}

/** The seconds the lock's lease has left, as the desk shows them ("(57 s left)"), or null. */
const LEFT = /\((\d+) s left\)/;
const leaseLeft = (page) => page.$eval("#lock-expires", (node, pattern) => {
  const match = new RegExp(pattern).exec(node.textContent);
  return match ? Number(match[1]) : null;
}, LEFT.source);

/** Ann is told of a new session and of a message while her tab is in the background (and of
    nothing while she looks), renews her lease, escalates, reloads her desk, and hands the session
    back to another team's queue; Bob, who joined, leaves it; Sue, a supervisor, follows it all. */
async function handedOn(browser, result) {
  const applicant = config.applicant;
  const ann = await desk(browser, "ann", DESKTOP, backgroundable);
  const bob = await desk(browser, "bob");
  const sue = await desk(browser, "sue");

  // Ann signs in; notifications are not allowed yet, so the desk offers its button.
  await signedIn(ann, "ann");
  await ann.page.waitForSelector("#notify:not([hidden])", { timeout: WAIT });
  await ann.page.click("#notify");
  await ann.page.waitForSelector("#notify[hidden]", { state: "attached", timeout: WAIT });
  result.permission = await ann.page.evaluate(() => Notification.permission);
  await ann.page.click("#availability");
  await ann.page.waitForSelector('#availability[data-state="available"]', { timeout: WAIT });

  // Her tab goes to the background; the applicant opens a session, which is offered to her.
  await ann.page.evaluate(() => window.__setHidden(true));
  ({ session } = await step("open"));
  await ann.page.waitForSelector(`#my-sessions li[data-session="${session}"]`, { timeout: WAIT });
  await ann.page.waitForFunction(() => window.__notifications.length >= 1, null, { timeout: WAIT });
  result.assigned = { notifications: await notifications(ann.page), title: await ann.page.title() };

  // Clicking the notification opens that session (the tab is still in the background).
  await ann.page.evaluate(() => window.__notifications[0].dispatchEvent(new Event("click")));
  await ann.page.waitForSelector(`#conversation[data-session="${session}"]`, { timeout: WAIT });
  await eventShown(ann.page, "ann joined");
  await ann.page.waitForSelector("#leave:not([hidden])", { timeout: WAIT });

  // The applicant writes while the tab is in the background: a notification with the message.
  const hiddenBody = "Is anyone there?";
  await step("write", { body: hiddenBody });
  await ann.page.waitForFunction(() => window.__notifications.length >= 2, null, { timeout: WAIT });
  result.messaged = { body: hiddenBody, notifications: await notifications(ann.page), title: await ann.page.title() };

  // Back in the foreground, the count leaves the title, and a message is shown, not notified.
  await ann.page.evaluate(() => window.__setHidden(false));
  await ann.page.waitForFunction(() => !/^\(\d+\)/.test(document.title), null, { timeout: WAIT });
  const visibleBody = "My case number is 88-1203.";
  await step("write", { body: visibleBody });
  // notify() runs in the same handler that draws the entry: once it is drawn, it has run.
  await entryFrom(ann.page, "message", applicant, visibleBody);
  result.visible = { notifications: await notifications(ann.page), title: await ann.page.title() };

  // Bob joins by the session's id; Sue, a supervisor, opens it from "All open sessions" and
  // watches without joining: her desk fetches what came before with a resync, which the
  // pipeline answers for supervisors from outside a session, notes included.
  await signedIn(bob, "bob");
  await bob.page.fill("#open-session-id", session);
  await bob.page.click("#open-session");
  await bob.page.waitForSelector(`#conversation[data-session="${session}"]`, { timeout: WAIT });
  await bob.page.click("#join");
  await bob.page.waitForSelector("#leave:not([hidden])", { timeout: WAIT });
  await signedIn(sue, "sue");
  await openSession(sue.page, "all-sessions");
  await eventShown(sue.page, "bob joined");

  // Ann takes the lock; a few seconds on, Renew moves its expiry forward again, on her desk and
  // on Bob's (both count down from the expiry the server publishes).
  await ann.page.click("#lock-acquire");
  await waitForText(ann.page, "#lock-holder", "ann");
  await waitForText(bob.page, "#lock-holder", "ann");
  const acquired = await leaseLeft(ann.page);
  check(acquired !== null, "no lease shown after acquiring");
  await ann.page.waitForFunction(([pattern, n]) => {
    const match = new RegExp(pattern).exec(document.querySelector("#lock-expires").textContent);
    return match && Number(match[1]) <= n;
  }, [LEFT.source, acquired - 3], { timeout: WAIT });
  const beforeRenew = await leaseLeft(ann.page);
  await ann.page.click("#lock-renew");
  for (const page of [ann.page, bob.page]) {
    await page.waitForFunction(([pattern, n]) => {
      const match = new RegExp(pattern).exec(document.querySelector("#lock-expires").textContent);
      return match && Number(match[1]) > n;
    }, [LEFT.source, beforeRenew], { timeout: WAIT });
  }
  result.lease = { acquired, beforeRenew, annAfter: await leaseLeft(ann.page), bobAfter: await leaseLeft(bob.page) };
  await step("renewed");

  // Ann escalates with a reason: every desk that follows the session shows the escalation and
  // the reason (in the event, or as the internal note that carries it for staff only).
  const reason = "A fee waiver needs a supervisor";
  await ann.page.fill("#escalate-reason", reason);
  await ann.page.click("#escalate");
  for (const page of [ann.page, bob.page, sue.page]) {
    await eventShown(page, "Escalated");
    await page.locator("#entries > li", { hasText: reason }).first().waitFor({ timeout: WAIT });
  }
  await step("escalated");

  // Ann reloads her desk: signed in still (the token is in sessionStorage), online, her session
  // listed, her lock hers; reopened, the conversation holds exactly the transcript.
  await ann.page.reload();
  await ann.page.waitForSelector("#desk-view:not([hidden])", { timeout: WAIT });
  await ann.page.waitForSelector('#connection[data-state="online"]', { timeout: WAIT });
  await ann.page.waitForSelector(`#my-sessions li[data-session="${session}"]`, { timeout: WAIT });
  await openSession(ann.page, "my-sessions");
  await waitForText(ann.page, "#lock-holder", "ann");
  const { transcript } = await step("reloaded");
  await ann.page.waitForFunction((n) => document.querySelectorAll("#entries > li").length >= n, transcript.length, { timeout: WAIT });
  result.reloaded = { seqs: await seqs(ann.page), signInShown: await ann.page.isVisible("#sign-in-view") };

  // Ann transfers the session to the renewals team: Bob's and Sue's desks show the transfer and
  // her leaving; hers no longer lists it, and says she is not in it.
  await ann.page.selectOption("#transfer-kind", "team");
  await ann.page.fill("#transfer-to", "renewals");
  await ann.page.click("#transfer");
  for (const page of [bob.page, sue.page]) {
    // The team is in the event, or (where the applicant's stream leaves routing out) only in
    // the queue, which the Rust side checks.
    await eventShown(page, "Returned to the");
    await eventShown(page, "ann left");
  }
  await ann.page.locator(`#my-sessions li[data-session="${session}"]`).waitFor({ state: "detached", timeout: WAIT });
  await ann.page.waitForSelector("#not-member", { timeout: WAIT });
  await step("transferred");

  // Bob leaves: his desk offers to join again, Sue's shows him gone, the applicant is told.
  await bob.page.click("#leave");
  await bob.page.waitForSelector("#join:not([hidden])", { timeout: WAIT });
  await eventShown(sue.page, "bob left");
  await step("left");
}

// ---- Running one ------------------------------------------------------------------------------

const scenarios = { supervised, "handed-on": handedOn };
const browser = await launch(config.chromium);
const result = {};
try {
  const scenario = scenarios[config.scenario || "supervised"];
  check(scenario, `no scenario ${config.scenario}`);
  await scenario(browser, result);
  result.unexpectedErrors = unexpected;
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error && error.stack ? error.stack : error);
  result.unexpectedErrors = unexpected;
  // What each desk showed when the scenario stopped: its connection and its stream.
  result.desksAtFailure = {};
  for (const { name, page } of desks) {
    result.desksAtFailure[name] = await page.evaluate(() => ({
      connection: document.querySelector("#connection").textContent,
      session: document.querySelector("#conversation").dataset.session,
      entries: [...document.querySelectorAll("#entries > li")].map((li) => `${li.dataset.seq} ${li.textContent.replace(/\s+/g, " ").trim()}`),
    })).catch((error) => String(error));
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(0);
