// The agent desk: an agent or supervisor signs in with the admin API, then works over one MQTT
// connection (shared/courtchat.js's Participant): the queue, their sessions, availability, and
// one open conversation with its reply lock, typing, presence, notes and receipts.
//
// The protocol's guarantees live in Participant (resubmission under the same id, ordered
// entries, resync after a gap or a reconnect); this file only renders what it holds. The stream
// is always drawn from `participant.entries()`, sorted by seq and keyed by it, so an entry that
// arrives twice or out of order (messages and notes are two topics) is drawn once, in place.
//
// Sections: state · page elements · sign-in · connection · availability · session lists ·
// conversation (stream, lock, typing and presence, receipts) · composers and actions ·
// notifications · start.

import { Participant, api, describeEvent, newId, serverConfig } from "/web/shared/courtchat.js";

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/** sessionStorage, not localStorage: closing the tab signs out. */
const STORAGE_KEY = "courtchat.desk";
/** The queue and the session lists are fetched again this often, besides on every change. */
const REFRESH_MS = 10_000;
/** A typing indicator lasts this long unless its sender says it again. */
const TYPING_SHOWN_MS = 8_000;
/** While someone types, their indicator is said again this often; idle this long ends it. */
const TYPING_REPEAT_MS = 3_000;
const TYPING_IDLE_MS = 3_000;
/** Presence is said again this often while a session is followed; staff presence not heard for
    PRESENCE_STALE_MS is shown as unknown (a desk's will is about availability, not presence). */
const PRESENCE_REPEAT_MS = 30_000;
const PRESENCE_STALE_MS = 75_000;
/** Receipts go at most once a second per session (the pipeline's rate limit is 5/s). */
const RECEIPT_DELAY_MS = 1_000;
/** How long Sign out waits for the server to end the token before the page forgets it anyway. */
const LOGOUT_WAIT_MS = 5_000;
/** Presence as the desk says it: fixed words for the protocol's values, nothing else. */
const PRESENCE_TEXT = { online: "online", away: "away", offline: "offline" };

const state = {
  config: null,
  /** {token, expires_at, username} of the signed-in person, or null. */
  auth: null,
  /** GET /v1/people/{me}. */
  person: null,
  participant: null,
  /** What the person asked for ("available" or "away"), re-said after a reconnect. */
  wantAvailability: "away",
  /** Session summaries by id, from every list and assignment seen. */
  sessions: new Map(),
  /** Ids in "My sessions": assigned to me (from the API), or joined from this page. */
  mine: new Set(),
  joinedHere: new Set(),
  queue: [],
  all: [],
  /** Sessions this page follows (subscribed and resynced), and the last seq at follow time:
      entries after it are news (notifications); entries up to it are history. */
  followed: new Map(),
  open: null,
  locks: new Map(),
  /** sessionId -> Map subject -> {delivered_seq, read_seq} */
  receipts: new Map(),
  /** sessionId -> Map "subject|kind" -> timer */
  typing: new Map(),
  /** sessionId -> Map subject -> {status, at} */
  presence: new Map(),
  /** sessionId -> {delivered, read, timer} for the receipts this desk sends. */
  sentReceipts: new Map(),
  unread: 0,
  timers: [],
  expiryTimer: null,
};

const isSupervisor = () => state.person && (state.person.role === "supervisor" || state.person.role === "admin");
const me = () => (state.auth ? state.auth.username : "");

// ---------------------------------------------------------------------------------------------
// Page elements
// ---------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name.startsWith("aria-") || name === "datetime" || name === "type") node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Shows `message` in an error line (or hides it when empty). */
function say(id, message) {
  const node = $(id);
  node.textContent = message || "";
  node.hidden = !message;
}

function time(at) {
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** A refused acknowledgement as people read it. */
function refusal(ack) {
  return ack.message || (ack.reason ? ack.reason.replaceAll("_", " ") : "refused");
}

// ---------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  say("sign-in-error", "");
  const username = $("username").value;
  const password = $("password").value;
  if (!username || !password) {
    say("sign-in-error", "Enter your username and password.");
    return;
  }
  $("sign-in").disabled = true;
  try {
    const answer = await api("/v1/login", { method: "POST", body: { username, password } });
    state.auth = { token: answer.token, expires_at: answer.expires_at, username };
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state.auth));
    $("password").value = "";
    await startDesk();
  } catch (error) {
    let message = error.message;
    // A throttled sign-in says how long to wait: the problem's retry_after, in seconds.
    if (error.status === 429) {
      const wait = error.problem && error.problem.retry_after;
      message = wait ? `Too many sign-in attempts: wait ${wait} s and try again.` : "Too many sign-in attempts: wait and try again.";
    }
    say("sign-in-error", message);
  } finally {
    $("sign-in").disabled = false;
  }
}

/** Sign out asked for: the connection ends, the server ends the token (`POST /v1/logout`, so
    that a copy of it is worth nothing), then the page forgets it. A server without the route
    (404) or out of reach still leaves the page signed out. */
async function signOutAsked() {
  const auth = state.auth;
  endConnection();
  if (auth) {
    const asked = api("/v1/logout", { method: "POST", token: auth.token }).catch(() => {});
    await Promise.race([asked, new Promise((resolve) => setTimeout(resolve, LOGOUT_WAIT_MS))]);
  }
  signOut();
}

/** Ends the MQTT connection, saying "offline" where this desk said it was there. */
function endConnection() {
  if (!state.participant) return;
  for (const sessionId of state.followed.keys()) if (mayAnnounce(sessionId) && !isClosed(sessionId)) state.participant.presence(sessionId, "offline");
  state.participant.end();
  state.participant = null;
}

function signOut(reason) {
  if (state.participant) {
    endConnection();
  }
  for (const timer of state.timers) clearInterval(timer);
  clearTimeout(state.expiryTimer);
  for (const receipt of state.sentReceipts.values()) clearTimeout(receipt.timer);
  sessionStorage.removeItem(STORAGE_KEY);
  Object.assign(state, {
    auth: null, person: null, participant: null, wantAvailability: "away", open: null, queue: [], all: [], unread: 0,
    timers: [], expiryTimer: null,
  });
  for (const key of ["sessions", "joinedHere", "followed", "locks", "receipts", "typing", "presence", "sentReceipts"]) state[key].clear();
  state.mine.clear();
  $("entries").replaceChildren();
  for (const list of ["my-sessions", "queue", "all-sessions"]) $(list).replaceChildren();
  wasOnline = false;
  showConnection("offline");
  showTitle();
  $("desk-view").hidden = true;
  $("sign-in-view").hidden = false;
  $("sign-out").hidden = true;
  $("notify").hidden = true;
  $("whoami").hidden = true;
  showConversation();
  say("sign-in-error", typeof reason === "string" ? reason : "");
  $("username").focus();
}

/** A stored sign-in that has not expired, or null. */
function storedAuth() {
  try {
    const auth = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    if (auth && auth.token && new Date(auth.expires_at).getTime() > Date.now()) return auth;
  } catch {
    // A damaged entry is no sign-in.
  }
  sessionStorage.removeItem(STORAGE_KEY);
  return null;
}

async function startDesk() {
  const token = state.auth.token;
  try {
    state.person = await api(`/v1/people/${encodeURIComponent(me())}`, { token });
  } catch (error) {
    signOut(error.status === 401 ? "Your sign-in has ended: sign in again." : error.message);
    return;
  }
  if (state.person.role === "admin") {
    signOut("Admins take no conversations: use the admin API.");
    return;
  }
  state.wantAvailability = state.person.available ? "available" : "away";
  showAvailability(state.wantAvailability);
  $("sign-in-view").hidden = true;
  $("desk-view").hidden = false;
  $("sign-out").hidden = false;
  $("whoami").hidden = false;
  $("whoami").textContent = `${state.person.display_name || me()} (${state.person.role})`;
  $("all-sessions-section").hidden = !isSupervisor();
  $("lock-takeover").hidden = !isSupervisor();
  $("notify").hidden = !("Notification" in window) || Notification.permission !== "default";
  // The server ends the MQTT connection when the token expires; the page says so at that time.
  const left = new Date(state.auth.expires_at).getTime() - Date.now();
  state.expiryTimer = setTimeout(() => signOut("Your sign-in has expired: sign in again."), Math.max(0, Math.min(left, 2 ** 31 - 1)));
  connect();
  await refreshLists();
  state.timers.push(setInterval(refreshLists, REFRESH_MS));
  state.timers.push(setInterval(tick, 1000));
  state.timers.push(setInterval(announcePresence, PRESENCE_REPEAT_MS));
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

function connect() {
  // The will: if this desk's connection drops without a goodbye, the server hears "away" from
  // it and stops offering it sessions (PROTOCOL.md, "Availability and assignments").
  const willId = `will-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
  const participant = new Participant({
    url: state.config.mqtt_url,
    subject: me(),
    token: state.auth.token,
    staff: true,
    will: {
      topic: `cc/v1/staff/${me()}/submit`,
      payload: JSON.stringify({ v: 1, client_msg_id: willId, type: "availability", status: "away" }),
      qos: 1,
      retain: false,
    },
    handlers: {
      entry: onEntry,
      lock: onLock,
      receipts: onReceipts,
      typing: onTyping,
      presence: onPresence,
      queue: () => refreshSoon(),
      assignment: onAssignment,
      connection: onConnection,
      closed: onClosed,
    },
  });
  state.participant = participant;
  participant.ready.catch((error) => {
    if (state.participant === participant) showConnection("offline", `Cannot connect: ${error.message}`);
  });
}

let wasOnline = false;
function onConnection(connection) {
  showConnection(connection);
  if (connection !== "online") return;
  const reconnect = wasOnline;
  wasOnline = true;
  if (!reconnect) return;
  // Participant resubscribes and resyncs the followed sessions itself. What it cannot know: the
  // will may have said "away" while this desk was gone, assignments may have come meanwhile,
  // and receipts are not retained.
  if (state.wantAvailability === "available") setAvailability("available");
  setTimeout(confirmAvailability, 3000);
  refreshLists();
  // A closed session's receipts moved no more: nothing to fetch again.
  for (const sessionId of state.followed.keys()) if (!isClosed(sessionId)) loadReceipts(sessionId);
  announcePresence();
}

function showConnection(connection, detail) {
  const node = $("connection");
  node.dataset.state = connection;
  const text = { online: "Online", offline: "Offline", reconnecting: "Reconnecting…" }[connection] || connection;
  node.textContent = detail ? `${text}: ${detail}` : text;
}

// ---------------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------------

function showAvailability(status) {
  const button = $("availability");
  button.dataset.state = status;
  button.textContent = status === "available" ? "Available" : "Away";
  button.setAttribute("aria-pressed", String(status === "available"));
}

async function setAvailability(status) {
  state.wantAvailability = status;
  const button = $("availability");
  button.setAttribute("aria-busy", "true");
  const ack = await state.participant.availability(status);
  button.removeAttribute("aria-busy");
  if (ack.status === "accepted") {
    showAvailability(status);
    say("action-error", "");
  } else {
    say("action-error", `Availability: ${refusal(ack)}`);
  }
}

/** After a reconnect, the server's view wins: the will may have landed after our "available". */
async function confirmAvailability() {
  if (!state.auth) return;
  try {
    const person = await api(`/v1/people/${encodeURIComponent(me())}`, { token: state.auth.token });
    const actual = person.available ? "available" : "away";
    if (actual !== state.wantAvailability) await setAvailability(state.wantAvailability);
    else showAvailability(actual);
  } catch {
    // The next reconnect tries again.
  }
}

// ---------------------------------------------------------------------------------------------
// Session lists
// ---------------------------------------------------------------------------------------------

let refreshTimer = null;
/** Many queue updates come at once; one refresh answers them all. */
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshLists, 300);
}

async function openSessions(token) {
  const pages = await Promise.all(["active", "escalated"].map((s) => api(`/v1/sessions?state=${s}&limit=200`, { token })));
  return pages.flatMap((page) => page.items);
}

async function refreshLists() {
  if (!state.auth) return;
  const token = state.auth.token;
  try {
    const [queue, open] = await Promise.all([api("/v1/queue?limit=200", { token }), openSessions(token)]);
    for (const session of [...queue.items, ...open]) state.sessions.set(session.id, session);
    state.queue = queue.items;
    // Agents get the sessions they took part in; supervisors get every open one.
    state.all = isSupervisor() ? open : [];
    const openIds = new Set(open.map((s) => s.id));
    for (const session of open) if (session.assigned_agent === me()) state.mine.add(session.id);
    for (const id of [...state.mine]) {
      const session = state.sessions.get(id);
      const stillMine = openIds.has(id) && (session.assigned_agent === me() || state.joinedHere.has(id));
      if (!stillMine && !isRecentAssignment(id)) state.mine.delete(id);
    }
  } catch (error) {
    if (error.status === 401) return signOut("Your sign-in has ended: sign in again.");
    return; // Offline: the next refresh tries again.
  }
  for (const id of state.mine) follow(id);
  renderLists();
}

/** An assignment that the list read just before it may not show yet. */
const assignedAt = new Map();
function isRecentAssignment(id) {
  return Date.now() - (assignedAt.get(id) || 0) < 5000;
}

function renderLists() {
  renderList("my-sessions", [...state.mine].map((id) => state.sessions.get(id) || { id, state: "active" }));
  renderList("queue", state.queue);
  if (isSupervisor()) renderList("all-sessions", state.all);
}

function renderList(id, sessions) {
  const list = $(id);
  $(`${id}-empty`).hidden = sessions.length > 0;
  list.replaceChildren(...sessions.map((session) => {
    const waiting = session.state === "queued";
    const label = [session.applicant || session.id, session.team, session.state === "escalated" ? "escalated" : null,
      !waiting && session.assigned_agent && id === "all-sessions" ? `with ${session.assigned_agent}` : null].filter(Boolean).join(" · ");
    const button = el("button", { type: "button", class: "session-button", "aria-current": session.id === state.open ? "true" : null },
      label);
    button.addEventListener("click", () => openConversation(session.id));
    const unseen = unseenCount(session.id);
    return el("li", { "data-session": session.id, "data-state": session.state }, button,
      unseen ? el("span", { class: "badge", "aria-label": `${unseen} new` }, String(unseen)) : null);
  }));
}

function onAssignment(notice) {
  assignedAt.set(notice.session_id, Date.now());
  const known = state.sessions.get(notice.session_id) || {};
  state.sessions.set(notice.session_id, { ...known, id: notice.session_id, state: "active", channel: notice.channel, team: notice.team, assigned_agent: notice.agent });
  state.mine.add(notice.session_id);
  notify("New session assigned", `A ${notice.channel} session${notice.team ? ` for ${notice.team}` : ""} is yours.`, notice.session_id);
  follow(notice.session_id);
  renderLists();
  refreshSoon();
}

// ---------------------------------------------------------------------------------------------
// Conversation: following, opening, and the stream
// ---------------------------------------------------------------------------------------------

/** Follows a session once: subscribes, resyncs from 1, remembers where history ends. False
    when the gateway refuses (not a participant). */
async function follow(sessionId) {
  if (state.followed.has(sessionId)) return state.followed.get(sessionId).ready;
  const entry = { baseline: Infinity, ready: null };
  state.followed.set(sessionId, entry);
  entry.ready = (async () => {
    try {
      await state.participant.follow(sessionId);
    } catch {
      state.followed.delete(sessionId);
      await state.participant.unfollow(sessionId);
      return false;
    }
    entry.baseline = state.participant.lastSeq(sessionId);
    loadReceipts(sessionId);
    if (mayAnnounce(sessionId)) state.participant.presence(sessionId, "online");
    if (sessionId === state.open) renderConversation();
    return true;
  })();
  return entry.ready;
}

async function unfollow(sessionId) {
  if (!state.followed.has(sessionId)) return;
  state.followed.delete(sessionId);
  await state.participant.unfollow(sessionId);
}

async function openConversation(sessionId) {
  const previous = state.open;
  state.open = sessionId;
  // A closed conversation left behind is not kept (it is never subscribed again anyway).
  if (previous && previous !== sessionId && state.participant && isClosed(previous)) unfollow(previous);
  const seen = state.sentReceipts.get(sessionId);
  if (seen) seen.unseen = 0;
  say("lock-error", "");
  say("action-error", "");
  $("entries").replaceChildren();
  showConversation();
  renderLists();
  const session = state.sessions.get(sessionId);
  // A session waiting in the queue is not readable until joined; the rest are followed.
  if (!session || session.state !== "queued" || isSupervisor()) await follow(sessionId);
  if (state.open === sessionId) renderConversation();
}

function showConversation() {
  const open = state.open;
  $("conversation").dataset.session = open || "";
  $("conversation-empty").hidden = Boolean(open);
  $("conversation-body").hidden = !open;
  $("conversation-title").textContent = open ? `Conversation with ${applicantOf(open) || "applicant"}` : "No conversation open";
}

/** The applicant's subject: from the session list, or the sender of the `opened` event. */
function applicantOf(sessionId) {
  const session = state.sessions.get(sessionId);
  if (session && session.applicant) return session.applicant;
  const opened = state.participant && state.participant.entries(sessionId).find((e) => e.kind === "event" && e.event && e.event.type === "opened");
  return opened ? opened.sender : null;
}

/** Who is in the session now, replayed from its events. */
function participantsOf(sessionId) {
  const people = new Set();
  const applicant = applicantOf(sessionId);
  if (applicant) people.add(applicant);
  for (const entry of state.participant.entries(sessionId)) {
    const event = entry.kind === "event" ? entry.event : null;
    if (!event) continue;
    if (event.type === "joined") people.add(event.subject);
    if (event.type === "left") people.delete(event.subject);
    if (event.type === "transferred") {
      if (event.from) people.delete(event.from);
      if (event.to_agent) people.add(event.to_agent);
    }
  }
  return people;
}

const isMember = (sessionId) => state.followed.has(sessionId) && participantsOf(sessionId).has(me());
/** Supervisors may publish typing and presence anywhere; others only as members. */
const mayAnnounce = (sessionId) => isSupervisor() || isMember(sessionId);
/** Told "closed": such a session is never subscribed again (Participant), nor announced to. */
const isClosed = (sessionId) => Boolean(state.participant && state.participant.isClosed(sessionId));

function onEntry(sessionId, entry) {
  const followed = state.followed.get(sessionId);
  const news = followed && entry.seq > followed.baseline;
  if (news && entry.kind === "message" && entry.sender === applicantOf(sessionId)) {
    const receipt = receiptRecord(sessionId);
    if (sessionId !== state.open || document.hidden) receipt.unseen = (receipt.unseen || 0) + 1;
    notify(`Message from ${entry.sender}`, entry.body, sessionId);
    if (sessionId !== state.open) renderLists();
  }
  if (news && entry.kind === "event" && ["transferred", "left"].includes(entry.event.type)) refreshSoon();
  if (sessionId === state.open) renderConversation();
  scheduleReceipt(sessionId);
}

function onClosed(sessionId) {
  if (state.mine.delete(sessionId)) renderLists();
  refreshSoon();
  if (sessionId === state.open) renderConversation();
  // Closed and not on screen: nothing more will come, and it is not kept.
  else unfollow(sessionId);
}

function renderConversation() {
  const sessionId = state.open;
  if (!sessionId || !state.participant) return;
  showConversation();
  const member = isMember(sessionId);
  const followed = state.followed.has(sessionId);
  const closed = isClosed(sessionId);
  const session = state.sessions.get(sessionId);
  $("conversation-meta").textContent = [session && session.channel, session && session.team && `team ${session.team}`,
    closed ? "closed" : session && session.state, sessionId].filter(Boolean).join(" · ");
  $("not-member").hidden = followed || closed;
  renderEntries(sessionId);
  renderLock();
  renderTyping();
  renderPresence();
  for (const id of ["reply", "send-reply", "note", "send-note", "leave", "transfer", "transfer-to", "transfer-kind", "escalate", "escalate-reason", "close", "close-reason"]) {
    $(id).disabled = closed || !(member || (isSupervisor() && ["transfer", "transfer-to", "transfer-kind", "close", "close-reason"].includes(id)));
  }
  $("leave").disabled = closed || !member;
  $("join").disabled = closed || member;
  $("join").hidden = member;
  $("leave").hidden = !member;
  scheduleReceipt(sessionId);
}

function renderEntries(sessionId) {
  const list = $("entries");
  const applicant = applicantOf(sessionId);
  const receipt = (state.receipts.get(sessionId) || new Map()).get(applicant) || { delivered_seq: 0, read_seq: 0 };
  const drawn = new Map([...list.children].map((li) => [Number(li.dataset.seq), li]));
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  let previous = null;
  // Entries in seq order; each is drawn once and put after the one before it, so an entry that
  // came late (a resync filling a gap) lands in its place.
  for (const entry of state.participant.entries(sessionId)) {
    let li = drawn.get(entry.seq);
    if (!li) {
      li = drawEntry(entry, applicant);
      const next = previous ? previous.nextSibling : list.firstChild;
      list.insertBefore(li, next);
    }
    if (li.dataset.receipt) showReceipt(li, entry.seq, receipt);
    previous = li;
  }
  if (nearBottom) list.scrollTop = list.scrollHeight;
}

function drawEntry(entry, applicant) {
  const at = el("time", { datetime: entry.at }, time(entry.at));
  if (entry.kind === "event") {
    return el("li", { class: "entry event", "data-seq": entry.seq, "data-kind": "event", "data-sender": entry.sender },
      el("span", {}, describeEvent(entry)), " ", at);
  }
  if (entry.kind === "note") {
    return el("li", { class: "entry note", "data-seq": entry.seq, "data-kind": "note", "data-sender": entry.sender },
      el("p", { class: "entry-head" }, el("strong", { class: "note-label" }, "Internal note"), ` · ${entry.sender} `, at),
      el("p", { class: "entry-body" }, entry.body));
  }
  const fromApplicant = entry.sender === applicant;
  const li = el("li", {
    class: `entry message ${fromApplicant ? "from-applicant" : "from-staff"}${entry.sender === me() ? " mine" : ""}`,
    "data-seq": entry.seq, "data-kind": "message", "data-sender": entry.sender,
  },
  el("p", { class: "entry-head" }, el("strong", {}, fromApplicant ? `${entry.sender} (applicant)` : entry.sender), " ", at),
  el("p", { class: "entry-body" }, entry.body));
  if (!fromApplicant) {
    li.dataset.receipt = "sent";
    li.append(el("p", { class: "receipt small" }, "Sent"));
  }
  return li;
}

function showReceipt(li, seq, receipt) {
  const value = receipt.read_seq >= seq ? "read" : receipt.delivered_seq >= seq ? "delivered" : "sent";
  if (li.dataset.receipt === value) return;
  li.dataset.receipt = value;
  li.querySelector(".receipt").textContent = { sent: "Sent", delivered: "Delivered", read: "Read" }[value];
}

// ---------------------------------------------------------------------------------------------
// Conversation: the reply lock
// ---------------------------------------------------------------------------------------------

function onLock(lock) {
  state.locks.set(lock.session_id, lock);
  if (lock.session_id === state.open) {
    // A lock that became ours or free answers an earlier refusal.
    if (!lock.holder || lock.holder === me()) say("lock-error", "");
    renderConversation();
  }
}

function leaseLeft(lock) {
  if (!lock || !lock.holder || !lock.expires_at) return null;
  return Math.max(0, Math.ceil((new Date(lock.expires_at).getTime() - Date.now()) / 1000));
}

function renderLock() {
  const sessionId = state.open;
  const lock = state.locks.get(sessionId);
  const left = leaseLeft(lock);
  const held = lock && lock.holder && left !== 0;
  $("lock-holder").textContent = held ? lock.holder : "free";
  $("lock-expires").textContent = held ? (left === null ? "" : `(${left} s left)`) : "";
  const mine = held && lock.holder === me();
  const member = isMember(sessionId);
  const closed = isClosed(sessionId);
  $("lock-acquire").disabled = closed || !member || mine;
  $("lock-release").disabled = closed || !mine;
  $("lock-renew").disabled = closed || !mine;
  $("lock-takeover").disabled = closed || !isSupervisor() || !state.followed.has(sessionId) || mine;
}

/** Once a second: the lease countdown and stale presence. */
function tick() {
  if (!state.open) return;
  renderLock();
  renderPresence();
}

async function lockOp(op) {
  const sessionId = state.open;
  say("lock-error", "");
  // The pipeline takes lock requests from participants only: a supervisor watching a session
  // joins it first, so that "Take over" is one click.
  if (op === "takeover" && !isMember(sessionId)) {
    const joined = await state.participant.submit(sessionId, { type: "join" });
    if (joined.status !== "accepted") return say("lock-error", `Join: ${refusal(joined)}`);
    state.joinedHere.add(sessionId);
    state.mine.add(sessionId);
    renderLists();
  }
  const ack = await state.participant.submit(sessionId, { type: "lock", op });
  if (ack.status !== "accepted") say("lock-error", refusal(ack));
}

// ---------------------------------------------------------------------------------------------
// Conversation: typing and presence
// ---------------------------------------------------------------------------------------------

function onTyping(sessionId, subject, typing, kind) {
  if (!state.typing.has(sessionId)) state.typing.set(sessionId, new Map());
  const shown = state.typing.get(sessionId);
  const key = `${subject}|${kind}`;
  clearTimeout(shown.get(key));
  shown.delete(key);
  if (typing) {
    shown.set(key, setTimeout(() => {
      shown.delete(key);
      if (sessionId === state.open) renderTyping();
    }, TYPING_SHOWN_MS));
  }
  if (sessionId === state.open) renderTyping();
}

function renderTyping() {
  const shown = state.typing.get(state.open) || new Map();
  const replying = [];
  const noting = [];
  for (const key of shown.keys()) {
    const [subject, kind] = key.split("|");
    (kind === "note-typing" ? noting : replying).push(subject);
  }
  const parts = [];
  if (replying.length) parts.push(`${replying.join(", ")} ${replying.length > 1 ? "are" : "is"} typing`);
  if (noting.length) parts.push(`${noting.join(", ")} ${noting.length > 1 ? "are" : "is"} writing an internal note`);
  const text = parts.join("; ");
  if ($("typing").textContent !== text) $("typing").textContent = text;
}

function onPresence(sessionId, subject, status) {
  // Only the protocol's values are kept; a payload's own text is never shown.
  if (!Object.hasOwn(PRESENCE_TEXT, status)) return;
  if (!state.presence.has(sessionId)) state.presence.set(sessionId, new Map());
  state.presence.get(sessionId).set(subject, { status, at: Date.now() });
  if (sessionId === state.open) renderPresence();
}

function announcePresence() {
  if (!state.participant) return;
  for (const sessionId of state.followed.keys()) if (mayAnnounce(sessionId) && !isClosed(sessionId)) state.participant.presence(sessionId, "online");
}

function renderPresence() {
  const sessionId = state.open;
  if (!sessionId || !state.participant) return;
  const heard = state.presence.get(sessionId) || new Map();
  const applicant = applicantOf(sessionId);
  const people = [...participantsOf(sessionId)].map((subject) => {
    if (subject === me()) return `${subject} (you)`;
    const last = heard.get(subject);
    // Staff say "online" again every PRESENCE_REPEAT_MS; silence past that is not presence.
    const stale = last && subject !== applicant && Date.now() - last.at > PRESENCE_STALE_MS;
    const status = !last || stale ? "not seen" : PRESENCE_TEXT[last.status];
    return `${subject}${subject === applicant ? " (applicant)" : ""}: ${status}`;
  });
  const text = people.length ? `In this conversation: ${people.join(", ")}` : "";
  if ($("presence").textContent !== text) $("presence").textContent = text;
}

/** Publishes our own typing of `kind` while `textarea` changes, and its end when it idles. */
function typingPublisher(textarea, kind) {
  let typing = false;
  let lastSaid = 0;
  let idle = null;
  let sessionId = null;
  const stop = () => {
    clearTimeout(idle);
    if (typing && state.participant && sessionId) state.participant.typing(sessionId, false, kind);
    typing = false;
  };
  textarea.addEventListener("input", () => {
    if (!state.open || !mayAnnounce(state.open)) return;
    if (sessionId !== state.open) stop();
    sessionId = state.open;
    const now = Date.now();
    if (!typing || now - lastSaid > TYPING_REPEAT_MS) {
      state.participant.typing(sessionId, textarea.value.length > 0, kind);
      typing = textarea.value.length > 0;
      lastSaid = now;
    }
    clearTimeout(idle);
    idle = setTimeout(stop, TYPING_IDLE_MS);
  });
  textarea.addEventListener("blur", stop);
  return stop;
}

// ---------------------------------------------------------------------------------------------
// Conversation: receipts
// ---------------------------------------------------------------------------------------------

function onReceipts(receipt) {
  if (!state.receipts.has(receipt.session_id)) state.receipts.set(receipt.session_id, new Map());
  const known = state.receipts.get(receipt.session_id);
  const before = known.get(receipt.subject) || { delivered_seq: 0, read_seq: 0 };
  // Receipts only move forward; a late, older state must not move a reply back.
  known.set(receipt.subject, {
    delivered_seq: Math.max(before.delivered_seq, receipt.delivered_seq),
    read_seq: Math.max(before.read_seq, receipt.read_seq),
  });
  if (receipt.session_id === state.open) renderEntries(state.open);
}

/** The receipts topic is not retained: what was said before we subscribed is in the transcript. */
async function loadReceipts(sessionId) {
  if (!state.auth) return;
  try {
    const transcript = await api(`/v1/sessions/${encodeURIComponent(sessionId)}/transcript`, { token: state.auth.token });
    if (transcript.session) state.sessions.set(sessionId, { ...state.sessions.get(sessionId), ...transcript.session });
    for (const r of transcript.receipts || []) onReceipts({ session_id: sessionId, ...r });
    if (sessionId === state.open) renderConversation();
  } catch {
    // Not readable (yet): the live receipts still arrive.
  }
}

function receiptRecord(sessionId) {
  if (!state.sentReceipts.has(sessionId)) state.sentReceipts.set(sessionId, { delivered: 0, read: 0, timer: null, unseen: 0 });
  return state.sentReceipts.get(sessionId);
}

function unseenCount(sessionId) {
  const record = state.sentReceipts.get(sessionId);
  return record ? record.unseen || 0 : 0;
}

/** Says, at most once a second, what reached this desk (delivered) and what is on screen (read). */
function scheduleReceipt(sessionId) {
  const record = receiptRecord(sessionId);
  if (record.timer || !state.participant || !isMember(sessionId) || isClosed(sessionId)) return;
  record.timer = setTimeout(async () => {
    record.timer = null;
    if (!state.participant || !isMember(sessionId) || isClosed(sessionId)) return;
    const last = state.participant.lastSeq(sessionId);
    const shown = sessionId === state.open && !document.hidden ? last : record.read;
    if (last <= record.delivered && shown <= record.read) return;
    const ack = await state.participant.submit(sessionId, { type: "receipt", delivered_seq: last, read_seq: shown });
    if (ack.status === "accepted") {
      record.delivered = Math.max(record.delivered, last);
      record.read = Math.max(record.read, shown);
    }
  }, RECEIPT_DELAY_MS);
}

// ---------------------------------------------------------------------------------------------
// Composers and actions
// ---------------------------------------------------------------------------------------------

function composer(formId, textareaId, type, stopTyping) {
  $(formId).addEventListener("submit", async (event) => {
    event.preventDefault();
    const sessionId = state.open;
    const textarea = $(textareaId);
    const body = textarea.value.trim();
    if (!sessionId || !body) return;
    say("action-error", "");
    stopTyping();
    const button = $(formId).querySelector("button");
    button.disabled = true;
    try {
      const ack = await state.participant.submit(sessionId, { type, body });
      if (ack.status === "accepted") {
        // Only what was sent goes: the person may have typed on meanwhile.
        if (textarea.value.trim() === body) textarea.value = "";
      } else {
        say("action-error", `${type === "note" ? "Note" : "Reply"} not sent: ${refusal(ack)}`);
      }
    } finally {
      button.disabled = false;
      renderConversation();
    }
  });
  // Ctrl+Enter (or Cmd+Enter) sends; Enter alone is a new line.
  $(textareaId).addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $(formId).requestSubmit();
    }
  });
}

/** Submits a session action and shows a refusal; resolves with the acknowledgement. */
async function act(action, label) {
  const sessionId = state.open;
  if (!sessionId) return null;
  say("action-error", "");
  const ack = await state.participant.submit(sessionId, action);
  if (ack.status !== "accepted") say("action-error", `${label}: ${refusal(ack)}`);
  return ack;
}

async function join() {
  const sessionId = state.open;
  const ack = await act({ type: "join" }, "Join");
  if (!ack || ack.status !== "accepted") return;
  state.joinedHere.add(sessionId);
  state.mine.add(sessionId);
  // The membership is in place before the acknowledgement; a refused earlier follow is retried.
  await follow(sessionId);
  if (mayAnnounce(sessionId)) state.participant.presence(sessionId, "online");
  renderLists();
  renderConversation();
  refreshSoon();
}

async function leave() {
  const sessionId = state.open;
  state.participant.presence(sessionId, "offline");
  const ack = await act({ type: "leave" }, "Leave");
  if (!ack || ack.status !== "accepted") return;
  dropSession(sessionId);
}

/** After leaving or transferring away: out of "My sessions", no longer followed. */
async function dropSession(sessionId) {
  state.joinedHere.delete(sessionId);
  state.mine.delete(sessionId);
  if (!isSupervisor()) await unfollow(sessionId);
  renderLists();
  renderConversation();
  refreshSoon();
}

async function transfer() {
  const target = $("transfer-to").value.trim();
  if (!target) {
    say("action-error", "Transfer: name an agent or a team.");
    $("transfer-to").focus();
    return;
  }
  const sessionId = state.open;
  const toTeam = $("transfer-kind").value === "team";
  const ack = await act(toTeam ? { type: "transfer", to_team: target } : { type: "transfer", to_agent: target }, "Transfer");
  if (ack && ack.status === "accepted") {
    $("transfer-to").value = "";
    if (toTeam || target !== me()) dropSession(sessionId);
  }
}

async function escalate() {
  const reason = $("escalate-reason").value.trim();
  const ack = await act(reason ? { type: "escalate", reason } : { type: "escalate" }, "Escalate");
  if (ack && ack.status === "accepted") $("escalate-reason").value = "";
  refreshSoon();
}

async function close() {
  const reason = $("close-reason").value.trim();
  const ack = await act(reason ? { type: "close", reason } : { type: "close" }, "Close");
  if (ack && ack.status === "accepted") $("close-reason").value = "";
  refreshSoon();
}

// ---------------------------------------------------------------------------------------------
// Notifications and the title
// ---------------------------------------------------------------------------------------------

/** While the tab is in the background: a desktop notification (if allowed) and a count in the
    title, which clears when the tab is looked at again. */
function notify(title, body, sessionId) {
  if (!document.hidden) return;
  state.unread += 1;
  showTitle();
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const notification = new Notification(title, { body: body || "", tag: `courtchat-${sessionId}` });
  notification.addEventListener("click", () => {
    window.focus();
    openConversation(sessionId);
    notification.close();
  });
}

function showTitle() {
  document.title = state.unread > 0 ? `(${state.unread}) Agent desk · courtchat` : "Agent desk · courtchat";
}

async function askNotifications() {
  if (!("Notification" in window)) return;
  await Notification.requestPermission();
  $("notify").hidden = Notification.permission !== "default";
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  state.unread = 0;
  showTitle();
  if (state.open) {
    receiptRecord(state.open).unseen = 0;
    scheduleReceipt(state.open);
    renderLists();
  }
});

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

function guarded(fn) {
  // A handler's failure (the connection dropped mid-action) is shown, not left unhandled.
  return (...args) => Promise.resolve().then(() => fn(...args)).catch((error) => say("action-error", error.message));
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", guarded(signOutAsked));
  $("notify").addEventListener("click", guarded(askNotifications));
  $("availability").addEventListener("click", guarded(() => setAvailability($("availability").dataset.state === "available" ? "away" : "available")));
  $("open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("open-session-id").value.trim();
    if (id) guarded(openConversation)(id);
  });
  $("lock-acquire").addEventListener("click", guarded(() => lockOp("acquire")));
  $("lock-release").addEventListener("click", guarded(() => lockOp("release")));
  $("lock-renew").addEventListener("click", guarded(() => lockOp("renew")));
  $("lock-takeover").addEventListener("click", guarded(() => lockOp("takeover")));
  composer("reply-form", "reply", "message", typingPublisher($("reply"), "typing"));
  composer("note-form", "note", "note", typingPublisher($("note"), "note-typing"));
  $("join").addEventListener("click", guarded(join));
  $("leave").addEventListener("click", guarded(leave));
  $("transfer").addEventListener("click", guarded(transfer));
  $("escalate").addEventListener("click", guarded(escalate));
  $("close").addEventListener("click", guarded(close));

  try {
    state.config = await serverConfig();
  } catch (error) {
    say("sign-in-error", `The desk cannot start: ${error.message}`);
    return;
  }
  state.auth = storedAuth();
  if (state.auth) await startDesk();
  else $("username").focus();
}

start();
