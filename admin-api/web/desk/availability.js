// Whether this member of staff takes sessions: said over MQTT, shown on its button, and after a
// reconnect checked against the server's view (the will may have said "away" meanwhile).

import { api } from "/web/shared/courtchat.js";
import { $, me, refusal, say, state } from "./state.js";

export function showAvailability(status) {
  const button = $("availability");
  button.dataset.state = status;
  button.textContent = status === "available" ? "Available" : "Away";
  button.setAttribute("aria-pressed", String(status === "available"));
}

export async function setAvailability(status) {
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
export async function confirmAvailability() {
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
