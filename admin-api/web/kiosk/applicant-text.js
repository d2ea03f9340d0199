// What the applicant page says for each event of the stream. Staff write reasons for staff
// (why a conversation was escalated or closed, where it was routed): none of that is for the
// applicant, so every event has a fixed, neutral sentence here, and no field of an event's
// payload but a participant's name is ever shown. A payload that still carries a `reason` (an
// older server, or one that was tampered with) shows exactly what one without it shows.

/** The sentence for an event entry, or null for an event the applicant is not shown. */
export function applicantEventText(entry) {
  const event = (entry && entry.event) || {};
  switch (event.type) {
    case "opened":
      return "Conversation started";
    // A participant's name is what their messages show anyway.
    case "joined":
      return typeof event.subject === "string" ? `${event.subject} joined the conversation` : null;
    case "left":
      return typeof event.subject === "string" ? `${event.subject} left the conversation` : null;
    // To an agent or back to a team's queue: where it went is the desk's business.
    case "transferred":
      return "Your conversation was passed on to a colleague";
    case "escalated":
      return "Your conversation was passed to a supervisor";
    case "status_changed":
      return statusText(event.status);
    case "closed":
      return entry.sender === "system" ? "The conversation was closed" : "An agent closed the conversation";
    default:
      return null;
  }
}

function statusText(status) {
  switch (status) {
    case "queued":
      return "Waiting for the next available agent";
    case "active":
      return "An agent is with you";
    // The `escalated` and `closed` events that come with these say it in words.
    default:
      return null;
  }
}
