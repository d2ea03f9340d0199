// The reply lock of the conversation on screen: who holds it and for how long, and the
// buttons that acquire, renew, release or take it over.

import { $, isClosed, isMember, isSupervisor, me, page, refusal, say, state } from "./state.js";

export function onLock(lock) {
  state.locks.set(lock.session_id, lock);
  if (lock.session_id === state.open) {
    // A lock that became ours or free answers an earlier refusal.
    if (!lock.holder || lock.holder === me()) say("lock-error", "");
    page.renderConversation();
  }
}

export function leaseLeft(lock) {
  if (!lock || !lock.holder || !lock.expires_at) return null;
  return Math.max(0, Math.ceil((new Date(lock.expires_at).getTime() - Date.now()) / 1000));
}

export function renderLock() {
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

export async function lockOp(op) {
  const sessionId = state.open;
  say("lock-error", "");
  // The pipeline takes lock requests from participants only: a supervisor watching a session
  // joins it first, so that "Take over" is one click.
  if (op === "takeover" && !isMember(sessionId)) {
    const joined = await state.participant.submit(sessionId, { type: "join" });
    if (joined.status !== "accepted") return say("lock-error", `Join: ${refusal(joined)}`);
    state.joinedHere.add(sessionId);
    state.mine.add(sessionId);
    page.renderLists();
  }
  const ack = await state.participant.submit(sessionId, { type: "lock", op });
  if (ack.status !== "accepted") say("lock-error", refusal(ack));
}
