// One conversation through both browser pages, in three browser contexts: an applicant on the
// phone page and two agents on their desks. Ann takes the session from the queue, answers
// under the reply lock, writes an internal note and hands the session (and the lock) to Bob;
// the applicant's connection drops and comes back while Bob answers; Bob closes and the
// applicant answers the survey. Driven by tests/tests/e2e/web_conversation.rs (JSON in
// argv[2]); prints what each participant's page shows, as one JSON line, for the Rust side to
// check against the stored record.
import { DESKTOP, PHONE, cuttable, launch, openPage, screenshot } from "./web-harness.mjs";

const config = JSON.parse(process.argv[2]);
const WAIT = { timeout: 15000 };
const browser = await launch(config.chromium);

/** What a page's stream shows: [{seq, kind, sender, text}] in page order. */
async function shown(page, list) {
  return page.$$eval(`${list} li[data-seq]`, (items) =>
    items.map((li) => ({
      seq: Number(li.dataset.seq),
      kind: li.dataset.kind,
      sender: li.dataset.sender,
      text: li.textContent,
    })),
  );
}

async function signIn(page, username) {
  await page.fill("#username", username);
  await page.fill("#password", config.password);
  await page.click("#sign-in");
  await page.waitForSelector("#availability", WAIT);
  await page.waitForSelector('#connection[data-state="online"]', WAIT);
}

const errors = [];
try {
  const applicant = await openPage(browser, `${config.base}/kiosk/`, PHONE);
  const applicantNetwork = await cuttable(applicant, config.mqttPath);
  const ann = await openPage(browser, `${config.base}/desk/`, DESKTOP);
  const bob = await openPage(browser, `${config.base}/desk/`, DESKTOP);

  // Ann signs in and takes sessions; the applicant starts one with a first message.
  await signIn(ann.page, "ann");
  await ann.page.click("#availability");
  await ann.page.waitForSelector('#availability[data-state="available"]', WAIT);
  await applicant.page.fill("#first-message", "I need to renew my licence.");
  await applicant.page.click("#start");
  await applicant.page.waitForFunction(() => document.body.dataset.session, null, WAIT);
  const session = await applicant.page.evaluate(() => document.body.dataset.session);

  // The queue offers it to Ann; she opens it, takes the lock and answers.
  await ann.page.click(`#my-sessions li[data-session="${session}"] button`, WAIT);
  await ann.page.waitForSelector(`#conversation[data-session="${session}"]`, WAIT);
  await ann.page.click("#lock-acquire");
  await ann.page.waitForFunction(() => document.querySelector("#lock-holder").textContent.includes("ann"), null, WAIT);
  await ann.page.fill("#reply", "Hello, I can help with that.");
  await ann.page.click("#send-reply");
  await applicant.page.waitForSelector('#messages li[data-sender="ann"][data-kind="message"]', WAIT);

  // Ann writes an internal note. While she types it, the applicant sees no typing indicator;
  // her reply-typing the applicant does see.
  await ann.page.click("#note");
  await ann.page.keyboard.type("Check the renewal backlog first.", { delay: 20 });
  await applicant.page.waitForTimeout(800);
  const typingShownForNote = await applicant.page.$eval("#agent-typing", (el) => !el.hidden);
  await ann.page.click("#send-note");
  await ann.page.waitForSelector('#entries li[data-kind="note"]', WAIT);
  await ann.page.click("#reply");
  await ann.page.keyboard.type("One moment", { delay: 20 });
  await applicant.page.waitForSelector("#agent-typing:not([hidden])", WAIT);
  await ann.page.fill("#reply", "");

  // Bob signs in; Ann hands the session to him, with the lock.
  await signIn(bob.page, "bob");
  await ann.page.fill("#transfer-to", "bob");
  await ann.page.click("#transfer");
  await bob.page.click(`#my-sessions li[data-session="${session}"] button`, WAIT);
  await bob.page.waitForSelector(`#conversation[data-session="${session}"]`, WAIT);
  await bob.page.waitForFunction(() => document.querySelector("#lock-holder").textContent.includes("bob"), null, WAIT);
  await bob.page.fill("#reply", "Bob here; I have your file.");
  await bob.page.click("#send-reply");
  await applicant.page.waitForSelector('#messages li[data-sender="bob"][data-kind="message"]', WAIT);

  // The applicant's network drops while Bob writes twice, and comes back.
  await applicantNetwork.cut();
  await applicant.page.waitForSelector('#connection:not([data-state="online"])', WAIT);
  for (const text of ["Your renewal is approved.", "You will get it by post."]) {
    await bob.page.fill("#reply", text);
    await bob.page.click("#send-reply");
  }
  await bob.page.waitForFunction(
    () => document.querySelectorAll('#entries li[data-sender="bob"][data-kind="message"]').length >= 3,
    null,
    WAIT,
  );
  await applicantNetwork.restore();
  await applicant.page.waitForFunction(
    () => document.querySelectorAll('#messages li[data-sender="bob"][data-kind="message"]').length >= 3,
    null,
    { timeout: 30000 },
  );
  await screenshot(applicant.page, config.artifacts, "conversation-applicant-phone");
  await screenshot(bob.page, config.artifacts, "conversation-desk");

  // Bob closes; the applicant answers the survey.
  await bob.page.click("#close");
  await applicant.page.waitForSelector("#survey:not([hidden])", WAIT);
  await applicant.page.check('#survey input[name="rating"][value="4"]');
  await applicant.page.fill("#survey-comment", "Quick and clear.");
  await applicant.page.click("#survey-submit");
  await applicant.page.waitForSelector("#survey-thanks:not([hidden])", WAIT);
  await bob.page.waitForFunction(
    () => [...document.querySelectorAll('#entries li[data-kind="event"]')].some((li) => /closed/i.test(li.textContent)),
    null,
    WAIT,
  );

  // The applicant's page logs its failed reconnects while its network is down; nothing else
  // may go wrong on any page.
  const expected = (who, error) => who === "applicant" && /WebSocket|ERR_INTERNET_DISCONNECTED/i.test(error);
  for (const [who, page] of [["applicant", applicant], ["ann", ann], ["bob", bob]]) {
    for (const error of page.errors) if (!expected(who, error)) errors.push(`${who}: ${error}`);
  }
  console.log(
    JSON.stringify({
      session,
      typingShownForNote,
      applicant: await shown(applicant.page, "#messages"),
      ann: await shown(ann.page, "#entries"),
      bob: await shown(bob.page, "#entries"),
      errors,
    }),
  );
} finally {
  await browser.close();
}
