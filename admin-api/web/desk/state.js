// What the parts of the agent desk share: its state, the page's elements and the helpers that
// write into them, who is signed in, who is in a session, and the redraws a part may ask of the
// page (`page`, filled in by desk.js, so that no part imports the page's script back).

/** Everything the desk knows; reset on sign-out. */
export const state = {
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

export const isSupervisor = () => state.person && (state.person.role === "supervisor" || state.person.role === "admin");
export const me = () => (state.auth ? state.auth.username : "");

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
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
export function say(id, message) {
  const node = $(id);
  node.textContent = message || "";
  node.hidden = !message;
}

export function time(at) {
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** A refused acknowledgement as people read it. */
export function refusal(ack) {
  return ack.message || (ack.reason ? ack.reason.replaceAll("_", " ") : "refused");
}

/** The applicant's subject: from the session list, or the sender of the `opened` event. */
export function applicantOf(sessionId) {
  const session = state.sessions.get(sessionId);
  if (session && session.applicant) return session.applicant;
  const opened = state.participant && state.participant.entries(sessionId).find((e) => e.kind === "event" && e.event && e.event.type === "opened");
  return opened ? opened.sender : null;
}

/** Who is in the session now, replayed from its events. */
export function participantsOf(sessionId) {
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

export const isMember = (sessionId) => state.followed.has(sessionId) && participantsOf(sessionId).has(me());
/** Supervisors may publish typing and presence anywhere; others only as members. */
export const mayAnnounce = (sessionId) => isSupervisor() || isMember(sessionId);
/** Told "closed": such a session is never subscribed again (Participant), nor announced to. */
export const isClosed = (sessionId) => Boolean(state.participant && state.participant.isClosed(sessionId));

/** What the page draws, for the parts that change what it shows. */
export const page = {
  renderConversation() {},
  renderEntries() {},
  renderLists() {},
  openConversation() {},
};
