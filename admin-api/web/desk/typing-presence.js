// Typing and presence in the conversation on screen: who is typing a reply or a note, who is
// there (presence shown as the desk's own words for the protocol's values, never a payload's
// text), and this desk's own typing and presence.

import { $, applicantOf, isClosed, mayAnnounce, me, participantsOf, state } from "./state.js";

/** A typing indicator lasts this long unless its sender says it again. */
const TYPING_SHOWN_MS = 8_000;
/** While someone types, their indicator is said again this often; idle this long ends it. */
const TYPING_REPEAT_MS = 3_000;
const TYPING_IDLE_MS = 3_000;
/** Presence is said again this often while a session is followed; staff presence not heard for
    PRESENCE_STALE_MS is shown as unknown (a desk's will is about availability, not presence). */
export const PRESENCE_REPEAT_MS = 30_000;
const PRESENCE_STALE_MS = 75_000;
/** Presence as the desk says it: fixed words for the protocol's values, nothing else. */
const PRESENCE_TEXT = { online: "online", away: "away", offline: "offline" };

export function onTyping(sessionId, subject, typing, kind) {
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

export function renderTyping() {
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

export function onPresence(sessionId, subject, status) {
  // Only the protocol's values are kept; a payload's own text is never shown.
  if (!Object.hasOwn(PRESENCE_TEXT, status)) return;
  if (!state.presence.has(sessionId)) state.presence.set(sessionId, new Map());
  state.presence.get(sessionId).set(subject, { status, at: Date.now() });
  if (sessionId === state.open) renderPresence();
}

export function announcePresence() {
  if (!state.participant) return;
  for (const sessionId of state.followed.keys()) if (mayAnnounce(sessionId) && !isClosed(sessionId)) state.participant.presence(sessionId, "online");
}

export function renderPresence() {
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
export function typingPublisher(textarea, kind) {
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
