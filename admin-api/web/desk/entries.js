// How one entry of a conversation is drawn on the desk: events in the desk's words, internal
// notes set apart, messages with their sender and, for staff replies, whether the applicant
// has received and read them. Text is always set as text, never as markup.

import { describeEvent } from "/web/shared/courtchat.js";
import { el, me, time } from "./state.js";

export function drawEntry(entry, applicant) {
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

export function showReceipt(li, seq, receipt) {
  const value = receipt.read_seq >= seq ? "read" : receipt.delivered_seq >= seq ? "delivered" : "sent";
  if (li.dataset.receipt === value) return;
  li.dataset.receipt = value;
  li.querySelector(".receipt").textContent = { sent: "Sent", delivered: "Delivered", read: "Read" }[value];
}
