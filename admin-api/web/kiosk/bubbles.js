// The applicant page's stream items: its own messages (with their status: sending, sent,
// delivered, read, or why not sent), others' messages and events, kept in `seq` order. Text is
// always set as text, never as markup.

const STATUS_TEXT = { sending: "Sending…", sent: "Sent", delivered: "Delivered", read: "Read" };

/**
 * An item of the stream. The stream is a log (role="log"), which takes away the list's
 * semantics from its items: they say so (role="none"), or they would be list items outside a
 * list for assistive technology.
 */
export function streamItem() {
  const li = document.createElement("li");
  li.setAttribute("role", "none");
  return li;
}

/** A message of our own, `subject`'s, shown as sending until its acknowledgement. */
export function ownBubble(body, subject) {
  const li = streamItem();
  li.className = "own";
  li.dataset.kind = "message";
  li.dataset.sender = subject || "";
  const label = document.createElement("span");
  label.className = "visually-hidden";
  label.textContent = "You: ";
  const text = document.createElement("span");
  text.className = "body";
  text.textContent = body;
  const status = document.createElement("span");
  status.className = "status";
  li.append(label, text, status);
  setStatus(li, "sending");
  return li;
}

/** Someone else's message: their name (the entry's sender), then what they wrote. */
export function theirBubble(entry) {
  const li = streamItem();
  li.className = "theirs";
  li.dataset.seq = String(entry.seq);
  li.dataset.kind = "message";
  li.dataset.sender = entry.sender;
  const sender = document.createElement("span");
  sender.className = "sender";
  sender.textContent = `${entry.sender}:`;
  const text = document.createElement("span");
  text.className = "body";
  text.textContent = entry.body;
  li.append(sender, text);
  return li;
}

/** A message of our own's status, said in words. */
export function setStatus(li, status, text) {
  li.dataset.status = status;
  li.querySelector(".status").textContent = text || STATUS_TEXT[status];
}

/** Inserts `li` before the first entry with a higher seq; unacknowledged bubbles stay last. */
export function insertBySeq(list, li, seq) {
  for (const other of list.children) {
    if (other === li) continue;
    if (!other.dataset.seq || Number(other.dataset.seq) > seq) {
      list.insertBefore(li, other);
      return;
    }
  }
  list.append(li);
}
