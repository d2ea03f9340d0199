// The agent desk: an agent or supervisor signs in with the admin API, then works over one MQTT
// connection (shared/courtchat.js's Participant): the queue, their sessions, availability, and
// one open conversation with its reply lock, typing, presence, notes and receipts.
//
// The protocol's guarantees live in Participant (resubmission under the same id, ordered
// entries, resync after a gap or a reconnect); this file only renders what it holds. The stream
// is always drawn from `participant.entries()`, sorted by seq and keyed by it, so an entry that
// arrives twice or out of order (messages and notes are two topics) is drawn once, in place.
//
// Sections here: sign-in · connection · session lists · conversation (following, opening, the
// stream) · composers and actions · start. By concern, in modules of their own: what they all
// share (state.js), availability, how an entry is drawn (entries.js), the reply lock,
// typing and presence, receipts, and notifications.

import { Participant, api, serverConfig } from "/web/shared/courtchat.js";
import { $, applicantOf, el, isClosed, isMember, isSupervisor, mayAnnounce, me, page, refusal, say, state } from "./state.js";
import { lockOp, onLock, renderLock } from "./lock.js";
import { PRESENCE_REPEAT_MS, announcePresence, onPresence, onTyping, renderPresence, renderTyping, typingPublisher } from "./typing-presence.js";
import { loadReceipts, onReceipts, receiptRecord, scheduleReceipt, unseenCount } from "./receipts.js";
import { askNotifications, notify, showTitle } from "./notifications.js";
import { confirmAvailability, setAvailability, showAvailability } from "./availability.js";
import { drawEntry, showReceipt } from "./entries.js";
import { collectSignIn, endProviderSession, offerSignIn } from "./provider-sign-in.js";

// ---------------------------------------------------------------------------------------------
// State (the shared part is in state.js)
// ---------------------------------------------------------------------------------------------

/** sessionStorage, not localStorage: closing the tab signs out. */
const STORAGE_KEY = "courtchat.desk";
/** The queue and the session lists are fetched again this often, besides on every change. */
const REFRESH_MS = 10_000;
/** How long Sign out waits for the server to end the token before the page forgets it anyway. */
const LOGOUT_WAIT_MS = 5_000;

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
  endProviderSession(auth);
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

/** Once a second: the lease countdown and stale presence. */
function tick() {
  if (!state.open) return;
  renderLock();
  renderPresence();
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
  offerSignIn(state.config, $);
  try {
    const handed = await collectSignIn();
    if (handed) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(handed));
  } catch (error) {
    say("sign-in-error", `Sign-in failed: ${error.message}`);
  }
  state.auth = storedAuth();
  if (state.auth) await startDesk();
  else if (state.config.password_sign_in !== false) $("username").focus();
}

Object.assign(page, { renderConversation, renderEntries, renderLists, openConversation });
start();
