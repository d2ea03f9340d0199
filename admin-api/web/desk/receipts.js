// Receipts: what the applicant has received and read of the desk's replies, and what this desk
// tells the others it has received and shown.

import { api } from "/web/shared/courtchat.js";
import { isClosed, isMember, page, state } from "./state.js";

/** Receipts go at most once a second per session (the pipeline's rate limit is 5/s). */
const RECEIPT_DELAY_MS = 1_000;

export function onReceipts(receipt) {
  if (!state.receipts.has(receipt.session_id)) state.receipts.set(receipt.session_id, new Map());
  const known = state.receipts.get(receipt.session_id);
  const before = known.get(receipt.subject) || { delivered_seq: 0, read_seq: 0 };
  // Receipts only move forward; a late, older state must not move a reply back.
  known.set(receipt.subject, {
    delivered_seq: Math.max(before.delivered_seq, receipt.delivered_seq),
    read_seq: Math.max(before.read_seq, receipt.read_seq),
  });
  if (receipt.session_id === state.open) page.renderEntries(state.open);
}

/** The receipts topic is not retained: what was said before we subscribed is in the transcript. */
export async function loadReceipts(sessionId) {
  if (!state.auth) return;
  try {
    const transcript = await api(`/v1/sessions/${encodeURIComponent(sessionId)}/transcript`, { token: state.auth.token });
    if (transcript.session) state.sessions.set(sessionId, { ...state.sessions.get(sessionId), ...transcript.session });
    for (const r of transcript.receipts || []) onReceipts({ session_id: sessionId, ...r });
    if (sessionId === state.open) page.renderConversation();
  } catch {
    // Not readable (yet): the live receipts still arrive.
  }
}

export function receiptRecord(sessionId) {
  if (!state.sentReceipts.has(sessionId)) state.sentReceipts.set(sessionId, { delivered: 0, read: 0, timer: null, unseen: 0 });
  return state.sentReceipts.get(sessionId);
}

export function unseenCount(sessionId) {
  const record = state.sentReceipts.get(sessionId);
  return record ? record.unseen || 0 : 0;
}

/** Says, at most once a second, what reached this desk (delivered) and what is on screen (read). */
export function scheduleReceipt(sessionId) {
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
