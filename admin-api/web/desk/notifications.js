// Notifications while the desk's tab is in the background: a desktop notification (if
// allowed) and a count in the title, which clears when the tab is looked at again.

import { $, page, state } from "./state.js";

/** While the tab is in the background: a desktop notification (if allowed) and a count in the
    title, which clears when the tab is looked at again. */
export function notify(title, body, sessionId) {
  if (!document.hidden) return;
  state.unread += 1;
  showTitle();
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const notification = new Notification(title, { body: body || "", tag: `courtchat-${sessionId}` });
  notification.addEventListener("click", () => {
    window.focus();
    page.openConversation(sessionId);
    notification.close();
  });
}

export function showTitle() {
  document.title = state.unread > 0 ? `(${state.unread}) Agent desk · courtchat` : "Agent desk · courtchat";
}

export async function askNotifications() {
  if (!("Notification" in window)) return;
  await Notification.requestPermission();
  $("notify").hidden = Notification.permission !== "default";
}
