// The applicant page (/kiosk/) in headless Chromium against a running courtchat, with a real
// agent on the other side (MQTT.js in Node, signed in as registered staff). Driven by
// tests/tests/e2e/web_kiosk.rs: configuration as JSON in argv[2]; the last stdout line is the
// result (the sessions it made and what went wrong on the pages), which the Rust side checks
// against the server's record. A failed expectation here throws, with what was expected.
import mqtt from "mqtt";
import { launch, openPage, screenshot, accessibility, DESKTOP, PHONE } from "./web-harness.mjs";

const config = JSON.parse(process.argv[2]);
const WAIT = { timeout: 15000 };
/** axe-core's serious and critical findings, by screen. */
const violations = {};
/** Page errors and console errors (a Content-Security-Policy refusal is one), by page. */
const errors = {};

function expect(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
}

/** The agent: registered staff, over MQTT 5 like a desk, answering on its ack topic. */
async function agent() {
  const { name, token } = config.agent;
  const client = await mqtt.connectAsync(config.mqtt_url, {
    clientId: name, username: name, password: token, protocolVersion: 5, reconnectPeriod: 0,
  });
  const waiting = new Map();
  const seen = [];
  const watchers = [];
  client.on("message", (topic, payload) => {
    const data = JSON.parse(payload.toString());
    if (topic.endsWith("/ack")) {
      waiting.get(data.client_msg_id)?.(data);
      return;
    }
    seen.push({ topic, data });
    for (const watch of [...watchers]) watch();
  });
  await client.subscribeAsync(`cc/v1/clients/${name}/ack`, { qos: 1 });
  let counter = 0;
  return {
    async submit(session, action) {
      counter += 1;
      const id = `agent-${counter}`;
      const answer = new Promise((resolve, reject) => {
        waiting.set(id, resolve);
        setTimeout(() => reject(new Error(`no answer to ${action.type}`)), WAIT.timeout);
      });
      await client.publishAsync(`cc/v1/sessions/${session}/submit/${name}`,
        JSON.stringify({ v: 1, client_msg_id: id, ...action }), { qos: 1 });
      const ack = await answer;
      expect(ack.status === "accepted", `the agent's ${action.type} is accepted: ${JSON.stringify(ack)}`);
      return ack;
    },
    async follow(session) {
      await client.subscribeAsync([`cc/v1/sessions/${session}/receipts`, `cc/v1/sessions/${session}/typing/+`], { qos: 1 });
    },
    typing(session, typing) {
      return client.publishAsync(`cc/v1/sessions/${session}/typing/${name}`, JSON.stringify({ v: 1, typing }), { qos: 0 });
    },
    /** Waits for a publish the agent received that `test` accepts. */
    until(test, what) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = seen.find(test);
          if (!found) return false;
          watchers.splice(watchers.indexOf(check), 1);
          resolve(found);
          return true;
        };
        watchers.push(check);
        if (check()) return;
        setTimeout(() => reject(new Error(`the agent never saw ${what}`)), WAIT.timeout);
      });
    },
    end: () => client.endAsync(),
  };
}

/** axe-core and a screenshot of the current screen at phone and desktop sizes. */
async function checkScreen(page, screen, sizes) {
  for (const [label, size] of sizes) {
    await page.setViewportSize({ width: size.width, height: size.height });
    violations[`${screen}-${label}`] = await accessibility(page);
    await screenshot(page, config.artifacts, `kiosk-${screen}-${label}`);
    if (label === "phone") {
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      expect(overflow <= 0, `no horizontal scroll on a phone (${screen}: ${overflow} px too wide)`);
    }
  }
}

const activeId = (page) => page.evaluate(() => document.activeElement && document.activeElement.id);
const session = (page) => page.evaluate(() => document.body.dataset.session);

/**
 * The phone path at phone size: refused while rate limited, then a conversation with an agent
 * who types, replies and reads; the survey; start over.
 */
async function phonePath(browser, desk) {
  const { page, context, errors: pageErrors } = await openPage(browser, `${config.base}/kiosk/`, PHONE);
  errors.phone = pageErrors;
  const sizes = [["phone", PHONE], ["desktop", DESKTOP]];
  expect(await page.evaluate(() => document.body.dataset.mode) === "phone", "phone mode without a credential");
  await checkScreen(page, "start", sizes);
  await page.setViewportSize({ width: PHONE.width, height: PHONE.height });

  // A 429 from the token endpoint is told with its wait.
  await page.route("**/v1/applicant-tokens", (route) => route.fulfill({
    status: 429,
    contentType: "application/problem+json",
    headers: { "retry-after": "7" },
    body: JSON.stringify({ type: "urn:courtchat:problem:rate-limited", title: "too many applicant tokens", status: 429, retry_after: 7 }),
  }));
  await page.click("#start");
  await page.waitForFunction(() => document.getElementById("start-error").textContent.includes("Too many requests, try again in 7 s"), null, WAIT);
  await page.unroute("**/v1/applicant-tokens");
  // Chromium logs the refused request itself as a console error: that one was asked for.
  const refused = pageErrors.findIndex((error) => error.includes("status of 429"));
  expect(refused >= 0, "the 429 was seen");
  pageErrors.splice(refused, 1);

  await page.fill("#first-message", "My licence expired last week.");
  await page.click("#start");
  await page.waitForFunction(() => document.body.dataset.session !== "", null, WAIT);
  const id = await session(page);
  expect(await activeId(page) === "composer", "the composer has focus after start");
  const first = page.locator("#messages li[data-kind=message]", { hasText: "My licence expired" });
  await first.waitFor(WAIT);
  expect(await first.getAttribute("data-status") === "sent", "the first message is sent");
  expect(await page.getAttribute("#connection", "data-state") === "online", "the connection is online");

  // The agent joins, takes the reply lock and types: the page shows it.
  const joined = await desk.submit(id, { type: "join" });
  await desk.follow(id);
  await desk.submit(id, { type: "lock", op: "acquire" });
  await desk.typing(id, true);
  await page.waitForSelector("#agent-typing:not([hidden])", WAIT);
  const reply = await desk.submit(id, { type: "message", body: "I can help with that. What is your licence number?" });
  await page.waitForSelector(`#messages li[data-seq="${reply.seq}"][data-kind=message][data-sender="${config.agent.name}"]`, WAIT);
  await desk.typing(id, false);
  await page.waitForSelector("#agent-typing", { ...WAIT, state: "hidden" });

  // The applicant types (the agent sees it) and sends with Enter.
  await page.click("#composer");
  await page.keyboard.type("It is CL-20931.");
  await desk.until(({ topic, data }) => topic.includes("/typing/") && !topic.endsWith(config.agent.name) && data.typing === true, "the applicant typing");
  await page.keyboard.press("Enter");
  const second = page.locator("#messages li[data-kind=message]", { hasText: "It is CL-20931." });
  await second.and(page.locator("[data-status=sent]")).waitFor(WAIT);
  const secondSeq = Number(await second.getAttribute("data-seq"));
  expect(secondSeq > reply.seq, `the second message comes after the reply (${secondSeq})`);
  const order = await page.$$eval("#messages li[data-seq]", (items) => items.map((li) => Number(li.dataset.seq)));
  expect(order.every((seq, i) => i === 0 || seq > order[i - 1]), `entries in seq order: ${order}`);

  // The page's own receipts reach the agent; the agent's receipts move the statuses.
  await desk.until(({ topic, data }) => topic.endsWith("/receipts") && data.subject !== config.agent.name && data.read_seq >= reply.seq, "the applicant's receipt for the reply");
  await desk.submit(id, { type: "receipt", delivered_seq: secondSeq, read_seq: joined.seq });
  await page.waitForSelector(`#messages li[data-seq="${secondSeq}"][data-status=delivered]`, WAIT);
  await first.and(page.locator("[data-status=read]")).waitFor(WAIT);
  await desk.submit(id, { type: "receipt", delivered_seq: secondSeq, read_seq: secondSeq });
  await page.waitForSelector(`#messages li[data-seq="${secondSeq}"][data-status=read]`, WAIT);
  await checkScreen(page, "chat", sizes);
  await page.setViewportSize({ width: PHONE.width, height: PHONE.height });

  // A refusal is told next to the message it concerns: a bidirectional control is refused.
  await page.fill("#composer", "Hidden \u202e text");
  await page.press("#composer", "Enter");
  const failed = page.locator("#messages li[data-kind=message][data-status=failed]");
  await failed.waitFor(WAIT);
  const refusal = await failed.textContent();
  expect(refusal.includes("Not sent:") && refusal.includes("U+202E"), `the refusal is shown: ${refusal}`);
  expect(await failed.getAttribute("data-seq") === null, "a refused message has no seq");

  // The agent closes: the survey, with focus on its first choice.
  await desk.submit(id, { type: "close" });
  await page.waitForSelector("#survey:not([hidden])", WAIT);
  expect(await page.evaluate(() => document.activeElement.matches("input[name=rating][value='1']")), "the first rating has focus");
  expect(await page.isHidden("#composer"), "no composer once closed");
  await checkScreen(page, "survey", sizes);
  await page.setViewportSize({ width: PHONE.width, height: PHONE.height });
  await page.check("input[name=rating][value='4']");
  await page.fill("#survey-comment", "Quick and clear.");
  await page.click("#survey-submit");
  await page.waitForSelector("#survey-thanks:not([hidden])", WAIT);
  expect(await page.isHidden("#survey"), "the survey goes once answered");

  // Start over: the start screen, nothing of the conversation. A phone does not reset itself.
  await page.click("#start-over");
  await page.waitForSelector("#start-view:not([hidden])", WAIT);
  expect(await session(page) === "", "no session after start over");
  expect(await page.locator("#messages li").count() === 0, "no entries after start over");
  await context.close();
  return id;
}

/**
 * The kiosk path at desktop size, by keyboard alone: enrolment from the address, a session on
 * the kiosk channel, and the reset after the conversation closed.
 */
async function kioskPath(browser, desk) {
  const url = `${config.base}/kiosk/?reset=2#enrol=${encodeURIComponent(config.kiosk_credential)}`;
  const { page, context, errors: pageErrors } = await openPage(browser, url, DESKTOP);
  errors.kiosk = pageErrors;
  // The link is checked with the server and asked about; nothing is stored before "yes".
  await page.waitForSelector("#enrol-choice:not([hidden])", WAIT);
  expect(await page.evaluate(() => localStorage.length) === 0, "nothing stored before the answer");
  await page.click("#enrol-confirm");
  await page.waitForFunction(() => document.body.dataset.mode === "kiosk", null, WAIT);
  expect(await page.evaluate(() => location.hash) === "", "the credential leaves the address");
  expect(await page.evaluate((key) => localStorage.getItem(key), "courtchat.kiosk") === config.kiosk_credential, "the credential is stored");
  violations["start-kiosk"] = await accessibility(page);

  // Keyboard only: the question has focus after enrolment; type it, Tab to the button, Enter;
  // then the composer.
  expect(await activeId(page) === "first-message", `the question has focus after enrolment (got ${await activeId(page)})`);
  await page.keyboard.type("Where do I renew?");
  await page.keyboard.press("Tab");
  expect(await activeId(page) === "start", `the second Tab reaches Start (got ${await activeId(page)})`);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.body.dataset.session !== "", null, WAIT);
  const id = await session(page);
  await page.waitForFunction(() => document.activeElement.id === "composer", null, WAIT);
  await page.keyboard.type("Typed with keys alone.");
  await page.keyboard.press("Enter");
  await page.locator("#messages li[data-kind=message][data-status=sent]", { hasText: "Typed with keys alone." }).waitFor(WAIT);

  // The agent joins and closes; the kiosk offers the survey, then forgets everything.
  await desk.submit(id, { type: "join" });
  await desk.submit(id, { type: "close" });
  await page.waitForSelector("#survey:not([hidden])", WAIT);
  await page.waitForFunction(() => document.body.dataset.session === "", null, WAIT);
  expect(await page.locator("#messages li").count() === 0, "no entries after the reset");
  expect(await page.isVisible("#start-view") && await page.isHidden("#chat-view"), "the start screen after the reset");
  expect(await page.inputValue("#first-message") === "", "the question is cleared");
  const stored = await page.evaluate(() => [Object.keys(localStorage), sessionStorage.length]);
  expect(JSON.stringify(stored) === JSON.stringify([["courtchat.kiosk"], 0]), `only the credential stored: ${JSON.stringify(stored)}`);
  expect(!(await page.content()).includes("Typed with keys alone."), "nothing of the conversation in the page");
  await context.close();
  return id;
}

const browser = await launch(config.chromium);
const desk = await agent();
try {
  const phone = await phonePath(browser, desk);
  const kiosk = await kioskPath(browser, desk);
  console.log(JSON.stringify({ phone, kiosk, violations, errors }));
} finally {
  await desk.end();
  await browser.close();
}
