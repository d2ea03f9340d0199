// The applicant page (`/kiosk/`): someone without an account starts a conversation with the
// help desk, chats, answers the survey when the agent closes, and starts over. On an enrolled
// kiosk (a credential in localStorage, put there by a confirmed enrolment link: enrolment.js)
// the page clears itself for the next person, after a finished conversation and, asking first,
// after a time without input (idle.js); on a phone it takes the public path and is never
// cleared behind its owner's back. What one conversation holds lives in a `Conversation` object
// and in the DOM, never in storage, so that a reset forgets it completely. Events are told in
// the applicant's own words (applicant-text.js), never with what staff wrote for staff.

import { serverConfig, api, Participant } from "/web/shared/courtchat.js";
import { applicantEventText } from "./applicant-text.js";
import { enrolFromLink } from "./enrolment.js";
import { IdleWatch } from "./idle.js";
import { TokenRenewal } from "./renewal.js";
import { streamItem, ownBubble, theirBubble, setStatus, insertBySeq } from "./bubbles.js";

/** Where an enrolled kiosk keeps its credential (the only thing this page stores). */
const KIOSK_KEY = "courtchat.kiosk";
/** An agent's typing indicator is dropped after this long without news from it. */
const TYPING_SHOWN_MS = 6000;
/** Our own typing: "false" after this long without a keystroke... */
const TYPING_IDLE_MS = 3000;
/** ...and "true" again at most this often while typing goes on. */
const TYPING_REPEAT_MS = 2000;
/** Receipts wait for the stream to settle, so a burst of entries costs one submission. */
const RECEIPT_DELAY_MS = 700;
/** Refusals of a survey answer that asking again cannot change (PROTOCOL.md's reasons; the
    gateway's own refusal comes as `not_allowed`). */
const FINAL_REFUSALS = ["not_allowed", "unknown_session", "session_closed", "duplicate_id", "unsupported_version"];

const $ = (id) => document.getElementById(id);
const view = {
  startView: $("start-view"),
  chatView: $("chat-view"),
  firstMessage: $("first-message"),
  start: $("start"),
  startError: $("start-error"),
  messages: $("messages"),
  agentTyping: $("agent-typing"),
  composerForm: $("composer-form"),
  composer: $("composer"),
  survey: $("survey"),
  surveyComment: $("survey-comment"),
  surveyError: $("survey-error"),
  surveyThanks: $("survey-thanks"),
  startOver: $("start-over"),
  connection: $("connection"),
  mode: $("mode"),
  enrolView: $("enrol-view"),
  enrolQuestion: $("enrol-question"),
  enrolChoice: $("enrol-choice"),
  enrolConfirm: $("enrol-confirm"),
  enrolCancel: $("enrol-cancel"),
  enrolNotice: $("enrol-notice"),
  idleDialog: $("idle-dialog"),
};

const CONNECTION_TEXT = { online: "Connected", offline: "Not connected", reconnecting: "Reconnecting…" };

/** The kiosk credential an admin's confirmed enrolment link stored, if any. */
let credential = localStorage.getItem(KIOSK_KEY);
let mode = "phone";

function setMode() {
  mode = credential ? "kiosk" : "phone";
  document.body.dataset.mode = mode;
  view.mode.textContent = mode === "kiosk" ? "Kiosk" : "Phone";
}
setMode();

/** The server's settings; `?reset=SECONDS` overrides the kiosk's reset delay (for tests). */
const settings = serverConfig().then((config) => {
  const override = Number(new URLSearchParams(location.search).get("reset"));
  const resetSecs = Number.isFinite(override) && override > 0 ? override : config.kiosk_reset_secs;
  return { ...config, resetSecs };
});
settings.catch(() => showStartError("The help desk cannot be reached. Try again later."));

/** One conversation: its connection, what it shows, and its timers. */
class Conversation {
  constructor(identity, participantOptions) {
    this.subject = identity.subject;
    this.sessionId = null;
    this.closed = false;
    /** seq -> li, for every entry shown. */
    this.shown = new Map();
    /** Own messages not yet matched to an entry: {body, li}. */
    this.unplaced = [];
    /** Other participants' horizons: subject -> {delivered, read}. */
    this.horizons = new Map();
    /** subject -> timer, for agents shown typing. */
    this.typers = new Map();
    this.shownSeq = 0;
    this.receiptSent = { delivered: 0, read: 0 };
    this.receiptTimer = null;
    this.typingOn = false;
    this.typingSentAt = 0;
    this.typingIdle = null;
    this.participant = new Participant({
      ...participantOptions,
      subject: identity.subject,
      token: identity.token,
      handlers: {
        entry: (sessionId, entry) => sessionId === this.sessionId && this.place(entry),
        receipts: (state) => this.receipts(state),
        typing: (sessionId, subject, typing, kind) => sessionId === this.sessionId && kind === "typing" && this.agentTyping(subject, typing),
        connection: (state) => showConnection(state),
        // After every reconnection the gateway may have said "offline" for us: say it again.
        subscribed: () => this.announce(),
        closed: (sessionId) => sessionId === this.sessionId && this.close(),
      },
    });
    /** Set once the session's topics are subscribed: presence is said from then on. */
    this.following = false;
    // The token is renewed before it expires, and the connection moves to the new one.
    this.renewal = new TokenRenewal(identity, async (renewed) => {
      if (conversation !== this) return;
      await this.participant.useToken(renewed.token);
      if (conversation === this) this.announce();
    });
  }

  /**
   * Connects again with `offline` in this session as the will (the session was not known when
   * the first connection opened it), then follows the session and says "online".
   */
  async follow() {
    await this.participant.useWill(this.participant.presenceWill(this.sessionId));
    if (conversation !== this) return;
    await this.participant.follow(this.sessionId);
    this.following = true;
    this.announce();
  }

  /** Our presence: "away" while the page is hidden, "online" while it can be seen. */
  announce() {
    if (!this.following || this.closed) return;
    this.participant.presence(this.sessionId, document.visibilityState === "hidden" ? "away" : "online");
  }

  /** Shows an entry of the stream in `seq` order (entries may arrive out of order). */
  place(entry) {
    if (this.shown.has(entry.seq)) return;
    let li;
    if (entry.kind === "message" && entry.sender === this.subject) {
      // Our own message, perhaps before its acknowledgement: take over the bubble shown
      // since it was sent rather than showing it twice.
      const index = this.unplaced.findIndex((own) => own.body === entry.body);
      li = index >= 0 ? this.unplaced.splice(index, 1)[0].li : ownBubble(entry.body, this.subject);
      li.dataset.seq = String(entry.seq);
    } else if (entry.kind === "message") {
      li = theirBubble(entry);
      this.agentTyping(entry.sender, false);
    } else if (entry.kind === "event") {
      const text = applicantEventText(entry);
      if (text === null) {
        this.shownSeq = Math.max(this.shownSeq, entry.seq);
        return;
      }
      li = streamItem();
      li.dataset.seq = String(entry.seq);
      li.dataset.kind = "event";
      li.dataset.sender = entry.sender;
      li.textContent = text;
    } else {
      return; // Nothing else is for applicants (notes never reach them).
    }
    this.shown.set(entry.seq, li);
    insertBySeq(view.messages, li, entry.seq);
    if (li.classList.contains("own")) this.refreshStatus(li);
    this.shownSeq = Math.max(this.shownSeq, entry.seq);
    this.scheduleReceipt();
  }

  /** Sends a message; its bubble says "sending" until the acknowledgement. */
  async send(body) {
    const li = ownBubble(body, this.subject);
    const own = { body, li };
    this.unplaced.push(own);
    view.messages.append(li);
    this.typing(false);
    const ack = await this.participant.submit(this.sessionId, { type: "message", body });
    if (conversation !== this) return; // Reset meanwhile: nothing left to show it on.
    if (ack.status !== "accepted") {
      this.unplaced.splice(this.unplaced.indexOf(own), 1);
      setStatus(li, "failed", `Not sent: ${ack.message || ack.reason}`);
      return;
    }
    const index = this.unplaced.indexOf(own);
    if (index < 0) return; // Its entry arrived first and took the bubble over.
    this.unplaced.splice(index, 1);
    if (this.shown.has(ack.seq)) {
      li.remove();
      return;
    }
    li.dataset.seq = String(ack.seq);
    this.shown.set(ack.seq, li);
    insertBySeq(view.messages, li, ack.seq);
    this.refreshStatus(li);
  }

  /** Another participant's horizon moved: our messages it covers are delivered or read. */
  receipts(state) {
    if (state.session_id !== this.sessionId || state.subject === this.subject) return;
    const before = this.horizons.get(state.subject) || { delivered: 0, read: 0 };
    this.horizons.set(state.subject, {
      delivered: Math.max(before.delivered, state.delivered_seq),
      read: Math.max(before.read, state.read_seq),
    });
    for (const li of view.messages.querySelectorAll("li.own[data-seq]")) this.refreshStatus(li);
  }

  refreshStatus(li) {
    const seq = Number(li.dataset.seq);
    let status = "sent";
    for (const horizon of this.horizons.values()) {
      if (horizon.read >= seq) status = "read";
      else if (horizon.delivered >= seq && status !== "read") status = "delivered";
    }
    if (li.dataset.status !== status) setStatus(li, status);
  }

  /** Tells the others what this page has shown, once the stream is quiet for a moment. */
  scheduleReceipt() {
    if (this.closed || this.receiptTimer) return;
    this.receiptTimer = setTimeout(() => {
      this.receiptTimer = null;
      // Shown is delivered; it is read only if someone can see the page.
      const read = document.visibilityState === "visible" ? this.shownSeq : this.receiptSent.read;
      if (this.closed || (this.shownSeq <= this.receiptSent.delivered && read <= this.receiptSent.read)) return;
      this.receiptSent = { delivered: this.shownSeq, read };
      this.participant.submit(this.sessionId, { type: "receipt", delivered_seq: this.shownSeq, read_seq: read });
    }, RECEIPT_DELAY_MS);
  }

  agentTyping(subject, typing) {
    clearTimeout(this.typers.get(subject));
    this.typers.delete(subject);
    if (typing && !this.closed) {
      this.typers.set(subject, setTimeout(() => this.agentTyping(subject, false), TYPING_SHOWN_MS));
    }
    view.agentTyping.hidden = this.typers.size === 0;
  }

  /** Our own typing indicator: on while keys are pressed, off after a pause or a send. */
  typing(on) {
    clearTimeout(this.typingIdle);
    if (!this.sessionId || this.closed) return;
    if (!on) {
      if (this.typingOn) this.participant.typing(this.sessionId, false);
      this.typingOn = false;
      return;
    }
    const now = Date.now();
    if (!this.typingOn || now - this.typingSentAt >= TYPING_REPEAT_MS) {
      this.participant.typing(this.sessionId, true);
      this.typingSentAt = now;
    }
    this.typingOn = true;
    this.typingIdle = setTimeout(() => this.typing(false), TYPING_IDLE_MS);
  }

  /** The session closed (the shared module may say so more than once). */
  close() {
    if (this.closed) return;
    this.typing(false);
    this.closed = true;
    // Nothing more to say in it: its token is left to expire.
    this.renewal.stop();
    // The gateway forgets a closed session's members after a while, and checks a will when it
    // connects: a reconnection with this one would then be refused.
    this.participant.dropWill();
    for (const subject of [...this.typers.keys()]) this.agentTyping(subject, false);
    const closedEntry = this.participant.entries(this.sessionId)
      .find((entry) => entry.kind === "event" && entry.event && entry.event.type === "closed");
    showClosed(!closedEntry || closedEntry.event.survey_offered !== false);
  }

  /** Ends the connection and every timer; the object is dropped after this. */
  dispose() {
    this.renewal.stop();
    clearTimeout(this.receiptTimer);
    clearTimeout(this.typingIdle);
    for (const timer of this.typers.values()) clearTimeout(timer);
    // No more events from it: a closing connection would otherwise show "offline".
    this.participant.handlers = {};
    // Gone from an open conversation: say so before the connection ends (a clean end sends no
    // will), so the desk shows it and the server can close the session as abandoned.
    const open = this.following && !this.closed;
    this.participant.end(open ? { leaving: this.sessionId } : {});
  }
}

/** The conversation on screen, if any. */
let conversation = null;
let starting = false;

/** The connection's state, shown while there is a conversation (the start screen has none). */
function showConnection(state, { shown = true } = {}) {
  view.connection.hidden = !shown;
  view.connection.dataset.state = state;
  view.connection.textContent = CONNECTION_TEXT[state] || state;
}

function showStartError(text) {
  view.startError.textContent = text;
}

/** Why an applicant token was refused, in words for the person at the screen. */
function tokenRefusal(error) {
  if (error.status === 429) {
    const wait = (error.problem && error.problem.retry_after) || 60;
    return `Too many requests, try again in ${wait} s`;
  }
  if (error.status === 401 && credential) return "This kiosk is not enrolled any more. Please ask a member of staff.";
  if (error.status === 401) return "Chat from a phone is not available. Please visit the help desk.";
  return "The help desk cannot be reached. Try again later.";
}

async function start() {
  if (starting || conversation) return;
  starting = true;
  view.start.disabled = true;
  showStartError("");
  disarmReset();
  try {
    const config = await settings.catch(() => null);
    if (!config) {
      showStartError("The help desk cannot be reached. Try again later.");
      return;
    }
    let identity;
    try {
      identity = await api("/v1/applicant-tokens", { method: "POST", token: credential || undefined });
    } catch (error) {
      showStartError(tokenRefusal(error));
      return;
    }
    const current = new Conversation(identity, { url: config.mqtt_url });
    conversation = current;
    try {
      await current.participant.ready;
    } catch {
      showStartError("The help desk cannot be reached. Try again later.");
      resetConversation();
      return;
    }
    const firstMessage = view.firstMessage.value.trim();
    const ack = await current.participant.open({
      channel: identity.channel,
      ...(identity.team ? { topic: identity.team } : {}),
      ...(firstMessage ? { first_message: firstMessage } : {}),
    });
    if (conversation !== current) return;
    if (ack.status !== "accepted") {
      showStartError(`The conversation could not start: ${ack.message || ack.reason}`);
      resetConversation();
      return;
    }
    current.sessionId = ack.session_id;
    document.body.dataset.session = ack.session_id;
    view.startView.hidden = true;
    view.chatView.hidden = false;
    view.composerForm.hidden = false;
    view.composer.focus();
    idle.restart();
    // Refused only if the gateway forgot the session meanwhile: say so on the connection
    // line rather than leave an unhandled rejection.
    await current.follow().catch(() => showConnection("offline"));
  } finally {
    starting = false;
    view.start.disabled = false;
  }
}

function showClosed(surveyOffered) {
  const hadFocus = view.composerForm.contains(document.activeElement);
  view.composerForm.hidden = true;
  view.agentTyping.hidden = true;
  view.startOver.hidden = false;
  if (surveyOffered) {
    view.survey.hidden = false;
    view.survey.querySelector("input[name=rating]").focus();
  } else {
    view.surveyThanks.textContent = "The conversation has ended. Thank you.";
    view.surveyThanks.hidden = false;
    if (hadFocus || document.activeElement === document.body) view.surveyThanks.focus();
  }
  armReset();
}

async function submitSurvey(event) {
  event.preventDefault();
  const current = conversation;
  if (!current) return;
  const chosen = view.survey.querySelector("input[name=rating]:checked");
  if (!chosen) {
    view.surveyError.textContent = "Choose a rating from 1 to 5.";
    view.survey.querySelector("input[name=rating]").focus();
    return;
  }
  view.surveyError.textContent = "";
  const comment = view.surveyComment.value.trim();
  const submit = $("survey-submit");
  submit.disabled = true;
  const ack = await current.participant.submit(current.sessionId, {
    type: "survey",
    rating: Number(chosen.value),
    ...(comment ? { comment } : {}),
  });
  submit.disabled = false;
  if (conversation !== current) return;
  if (ack.status !== "accepted" && FINAL_REFUSALS.includes(ack.reason)) {
    // Answered already, or the conversation's time for answers is over (the server may also
    // refuse the publish itself): asking again would be refused again.
    view.survey.hidden = true;
    view.surveyThanks.textContent = "Your answer could not be recorded: this conversation no longer takes answers. Thank you all the same.";
    view.surveyThanks.hidden = false;
    view.surveyThanks.focus();
    return;
  }
  if (ack.status !== "accepted") {
    view.surveyError.textContent = `Your answer was not saved: ${ack.message || ack.reason}. You can try again.`;
    return;
  }
  view.survey.hidden = true;
  view.surveyThanks.textContent = "Thank you for your answer. The conversation has ended.";
  view.surveyThanks.hidden = false;
  view.surveyThanks.focus();
}

/** Ends the conversation, if any, and clears everything it showed. */
function resetConversation() {
  if (conversation) conversation.dispose();
  conversation = null;
  document.body.dataset.session = "";
  showConnection("offline", { shown: false });
  view.messages.replaceChildren();
  view.agentTyping.hidden = true;
  view.composer.value = "";
  view.composerForm.hidden = false;
  view.survey.reset();
  view.survey.hidden = true;
  view.surveyError.textContent = "";
  view.surveyThanks.hidden = true;
  view.surveyThanks.textContent = "";
  view.startOver.hidden = true;
  view.chatView.hidden = true;
  view.startView.hidden = false;
}

/** The start screen, empty, for the next person. */
function startOver({ focus }) {
  resetConversation();
  view.firstMessage.value = "";
  showStartError("");
  if (focus) view.firstMessage.focus();
}

/**
 * A kiosk, for the next person: the screen, the connection, and whatever the page (or a
 * library it runs) kept in the browser's storage, except the kiosk's credential. The next
 * conversation starts with a new applicant token, so a new identity.
 */
function clearForNextPerson() {
  idle.stop();
  disarmReset();
  startOver({ focus: false });
  view.enrolNotice.hidden = true;
  view.enrolNotice.textContent = "";
  sessionStorage.clear();
  for (const key of Object.keys(localStorage)) if (key !== KIOSK_KEY) localStorage.removeItem(key);
  if (indexedDB.databases) {
    indexedDB.databases()
      .then((databases) => databases.forEach(({ name }) => name && indexedDB.deleteDatabase(name)))
      .catch(() => {});
  }
  if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
}

// A kiosk left alone after a finished conversation (on its closed screen, or on the start
// screen someone went back to) resets itself, so the next person sees nothing of it. Any
// activity on the page restarts the wait.
let resetTimer = null;
let resetArmed = false;

async function armReset() {
  if (mode !== "kiosk") return;
  resetArmed = true;
  const { resetSecs } = await settings;
  if (!resetArmed) return;
  clearTimeout(resetTimer);
  resetTimer = setTimeout(clearForNextPerson, resetSecs * 1000);
}

function disarmReset() {
  resetArmed = false;
  clearTimeout(resetTimer);
  resetTimer = null;
}

for (const type of ["keydown", "pointerdown", "input"]) {
  document.addEventListener(type, () => resetArmed && armReset(), { capture: true, passive: true });
}

view.start.addEventListener("click", () => start());
view.composerForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const body = view.composer.value.trim();
  if (!body || !conversation || !conversation.sessionId || conversation.closed) return;
  view.composer.value = "";
  conversation.send(body);
});
view.composer.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; an input method composing text keeps its Enter.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    view.composerForm.requestSubmit();
  }
});
view.composer.addEventListener("input", () => {
  if (conversation) conversation.typing(view.composer.value.trim() !== "");
});
view.survey.addEventListener("submit", submitSurvey);
view.startOver.addEventListener("click", () => {
  startOver({ focus: true });
  // On a kiosk the start screen still waits for the next person: reset it if left alone.
  if (mode === "kiosk") armReset();
});
document.addEventListener("visibilitychange", () => {
  if (conversation && conversation.sessionId) {
    conversation.scheduleReceipt();
    conversation.announce();
  }
});

// ---- A kiosk left alone -------------------------------------------------------------------

/** Whether a kiosk has something of someone's on screen: an open conversation, or a draft. A
    finished conversation is cleared by the reset above, without asking. */
function somethingToForget() {
  if (mode !== "kiosk") return false;
  if (conversation) return !conversation.closed;
  return view.firstMessage.value.trim() !== "" || starting;
}

// Replaced by the server's settings below; until they arrive nothing is watched.
let idle = { restart() {}, stop() {} };
settings.then(({ kiosk_idle_secs: idleSecs, kiosk_idle_warning_secs: warningSecs }) => {
  idle = new IdleWatch({
    idleMs: idleSecs * 1000,
    warningMs: warningSecs * 1000,
    watching: somethingToForget,
    clear: clearForNextPerson,
    dialog: view.idleDialog,
    countdown: $("idle-countdown"),
    stay: $("idle-stay"),
    clearNow: $("idle-clear"),
  });
  idle.restart();
}, () => {});

// ---- Enrolment links ---------------------------------------------------------------------

const enrolment = {
  view,
  busy: () => Boolean(conversation || starting),
  enrolled: () => Boolean(credential),
  enrol(newCredential) {
    localStorage.setItem(KIOSK_KEY, newCredential);
    credential = newCredential;
    setMode();
  },
};
enrolFromLink(enrolment);
// A link opened in a tab that already shows the page changes only the fragment.
window.addEventListener("hashchange", () => enrolFromLink(enrolment));
