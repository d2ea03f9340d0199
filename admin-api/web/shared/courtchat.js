// The courtchat protocol for browser pages (the agent desk and the applicant page), over
// MQTT.js and MQTT 5 over WebSocket, as schemas/PROTOCOL.md says a correct client behaves:
// every submission carries a client_msg_id and is resubmitted with the same id until its
// acknowledgement arrives; entries are kept in `seq` order per session, each topic's
// `prev_seq` is checked, and a gap (or a reconnect) is filled with a paged resync, so a page
// shows every entry once, in the session's one order.

import mqtt from "/web/vendor/mqtt.esm.js";

const TOPIC = "cc/v1";
/** How long to wait for an acknowledgement before resubmitting (the same id is safe). */
const RESUBMIT_MS = 4000;
/** Resync pages are up to 64 KiB; give the client room for them (PROTOCOL.md, "Packet size"). */
const MAX_PACKET = 256 * 1024;

/** Where the MQTT WebSocket listener is, as the server that served this page says. */
export async function serverConfig() {
  const response = await fetch("/web/config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`configuration: ${response.status}`);
  const config = await response.json();
  if (config.mqtt_url) return config;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return { ...config, mqtt_url: `${scheme}://${location.hostname}:${config.mqtt_port}${config.mqtt_path}` };
}

/** A JSON request to the admin API; throws an Error with the problem's detail on failure. */
export async function api(path, { method = "GET", token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((data && (data.detail || data.title)) || `HTTP ${response.status}`);
    error.status = response.status;
    error.problem = data;
    throw error;
  }
  return data;
}

let counter = 0;
/** A client message id unique to this page load. */
export function newId(prefix) {
  counter += 1;
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `${prefix}-${Date.now().toString(36)}-${random}-${counter}`;
}

/** One session's entries as this participant may see them, in `seq` order. */
class Stream {
  constructor(sessionId) {
    this.sessionId = sessionId;
    /** seq -> entry */
    this.entries = new Map();
    /** The last entry seen on each topic ("messages", "notes"), for prev_seq. */
    this.last = { messages: 0, notes: 0 };
    this.lastSeq = 0;
  }

  /** Adds an entry; false when it was already there. */
  add(entry) {
    if (this.entries.has(entry.seq)) return false;
    this.entries.set(entry.seq, entry);
    this.lastSeq = Math.max(this.lastSeq, entry.seq);
    return true;
  }

  ordered() {
    return [...this.entries.values()].sort((a, b) => a.seq - b.seq);
  }
}

/**
 * A connection as one participant: `subject` with `token` as the MQTT password. Events, each
 * a function in `handlers`: `entry(sessionId, entry)` for every new entry in order (after a
 * resync too), `lock(state)`, `receipts(state)`, `typing(sessionId, subject, typing, kind)`,
 * `presence(sessionId, subject, status)`, `queue(update)`, `assignment(notice)`,
 * `connection(state)` ("online", "offline", "reconnecting"), `closed(sessionId)`,
 * `error(error, sessionId?)` (a session that could not be followed again after a reconnect).
 */
export class Participant {
  constructor({ url, subject, token, staff = false, will, handlers = {} }) {
    this.subject = subject;
    this.staff = staff;
    this.handlers = handlers;
    this.streams = new Map();
    this.pending = new Map();
    this.client = mqtt.connect(url, {
      clientId: subject,
      username: subject,
      password: token,
      protocolVersion: 5,
      clean: true,
      reconnectPeriod: 2000,
      connectTimeout: 10000,
      properties: { maximumPacketSize: MAX_PACKET },
      will,
    });
    this.ready = new Promise((resolve, reject) => {
      this.client.once("connect", resolve);
      this.client.once("error", reject);
    });
    this.client.on("connect", () => {
      this.#connected().catch((error) => this.#emit("error", error));
    });
    this.client.on("reconnect", () => this.#emit("connection", "reconnecting"));
    this.client.on("offline", () => this.#emit("connection", "offline"));
    this.client.on("close", () => this.#emit("connection", "offline"));
    this.client.on("message", (topic, payload) => this.#message(topic, payload));
    this.connectedOnce = false;
  }

  #emit(name, ...args) {
    const handler = this.handlers[name];
    if (handler) handler(...args);
  }

  async #connected() {
    this.#emit("connection", "online");
    // A clean session: subscriptions are gone after a reconnect, so make them again and fill
    // whatever was missed while away.
    const topics = [`${TOPIC}/clients/${this.subject}/ack`];
    if (this.staff) topics.push(`${TOPIC}/queue`, `${TOPIC}/staff/${this.subject}/assignments`);
    await this.client.subscribeAsync(topics, { qos: 1 });
    const reconnect = this.connectedOnce;
    this.connectedOnce = true;
    for (const sessionId of [...this.streams.keys()]) {
      // One session the gateway no longer lets us follow (left, or long closed) must not keep
      // the others from being followed again.
      try {
        await this.#subscribeSession(sessionId);
        if (reconnect) await this.resync(sessionId);
      } catch (error) {
        this.#emit("error", error, sessionId);
      }
    }
    // Submissions that were never answered go again, under their own ids.
    for (const pending of this.pending.values()) pending.send();
  }

  #message(topic, payload) {
    let data;
    try {
      data = JSON.parse(payload.toString());
    } catch {
      return;
    }
    const parts = topic.split("/");
    if (parts[2] === "clients" && parts[4] === "ack") return this.#answer(data);
    if (parts[2] === "queue") return this.#emit("queue", data);
    if (parts[2] === "staff" && parts[4] === "assignments") return this.#emit("assignment", data);
    if (parts[2] !== "sessions") return;
    const sessionId = parts[3];
    const kind = parts[4];
    if (kind === "messages" || kind === "notes") return this.#entry(sessionId, kind, data);
    if (kind === "lock") return this.#emit("lock", data);
    if (kind === "receipts") return this.#emit("receipts", data);
    if (kind === "typing" || kind === "note-typing") {
      if (parts[5] !== this.subject) this.#emit("typing", sessionId, parts[5], data.typing, kind);
      return;
    }
    if (kind === "presence") this.#emit("presence", sessionId, parts[5], data.status);
  }

  #answer(ack) {
    const pending = this.pending.get(ack.client_msg_id);
    if (!pending) return;
    // A resync answer is a page; follow it to the end before answering.
    if (ack.entries) {
      pending.pages.push(ack);
      if (ack.next_from_seq !== undefined && ack.next_from_seq !== null) {
        clearTimeout(pending.timer);
        this.pending.delete(ack.client_msg_id);
        const next = this.#submitRaw(pending.sessionId, { type: "resync", from_seq: ack.next_from_seq, to_seq: pending.toSeq }, pending.pages);
        next.then(pending.resolve, pending.reject);
        return;
      }
    }
    this.pending.delete(ack.client_msg_id);
    clearTimeout(pending.timer);
    pending.resolve(ack.entries ? pending.pages : ack);
  }

  #entry(sessionId, topic, entry) {
    const stream = this.streams.get(sessionId);
    if (!stream) return;
    const expected = stream.last[topic];
    if (entry.prev_seq > expected && !stream.entries.has(entry.prev_seq)) {
      // A gap on this topic: something was missed. Fill it, then take this entry in order.
      this.resync(sessionId, expected + 1);
      return;
    }
    stream.last[topic] = Math.max(stream.last[topic], entry.seq);
    this.#take(stream, entry);
  }

  /** Takes a new entry: announced once, and the session's end with it. */
  #take(stream, entry) {
    if (!stream.add(entry)) return;
    this.#emit("entry", stream.sessionId, entry);
    if (entry.kind === "event" && entry.event && entry.event.type === "closed") this.#emit("closed", stream.sessionId);
  }

  async #subscribeSession(sessionId) {
    const base = `${TOPIC}/sessions/${sessionId}`;
    const topics = [`${base}/messages`, `${base}/receipts`, `${base}/typing/+`, `${base}/presence/+`];
    if (this.staff) topics.push(`${base}/notes`, `${base}/lock`, `${base}/note-typing/+`);
    const granted = await this.client.subscribeAsync(topics, { qos: 1 });
    const refused = granted.filter((g) => g.qos > 2);
    if (refused.length) throw new Error(`not allowed to follow session ${sessionId}`);
  }

  /** Follows a session: its topics, then everything from the start (or from `fromSeq`). */
  async follow(sessionId) {
    if (!this.streams.has(sessionId)) this.streams.set(sessionId, new Stream(sessionId));
    await this.#subscribeSession(sessionId);
    await this.resync(sessionId);
  }

  /** Stops following a session. */
  async unfollow(sessionId) {
    const base = `${TOPIC}/sessions/${sessionId}`;
    this.streams.delete(sessionId);
    const topics = [`${base}/messages`, `${base}/receipts`, `${base}/typing/+`, `${base}/presence/+`];
    if (this.staff) topics.push(`${base}/notes`, `${base}/lock`, `${base}/note-typing/+`);
    await this.client.unsubscribeAsync(topics).catch(() => {});
  }

  /** The session's entries this participant has, in order. */
  entries(sessionId) {
    const stream = this.streams.get(sessionId);
    return stream ? stream.ordered() : [];
  }

  lastSeq(sessionId) {
    const stream = this.streams.get(sessionId);
    return stream ? stream.lastSeq : 0;
  }

  /** Fetches entries from `fromSeq` (after the last one held, by default) and takes them in order. */
  async resync(sessionId, fromSeq) {
    const stream = this.streams.get(sessionId);
    if (!stream) return;
    const from = fromSeq ?? stream.lastSeq + 1;
    const pages = await this.#submitRaw(sessionId, { type: "resync", from_seq: from }, []);
    if (!Array.isArray(pages)) return;
    for (const page of pages) {
      for (const entry of page.entries) {
        const topic = entry.kind === "note" ? "notes" : "messages";
        stream.last[topic] = Math.max(stream.last[topic], entry.seq);
        this.#take(stream, entry);
      }
    }
  }

  #submitRaw(sessionId, action, pages) {
    const id = newId(action.type);
    const topic = sessionId === null ? `${TOPIC}/staff/${this.subject}/submit` : `${TOPIC}/sessions/${sessionId}/submit/${this.subject}`;
    // The tracked id last: an action that names one of its own must not take the answer's key.
    return this.#send(id, topic, { v: 1, ...action, client_msg_id: id }, { sessionId, pages, toSeq: action.to_seq });
  }

  #send(id, topic, payload, extra = {}) {
    return new Promise((resolve, reject) => {
      const pending = {
        ...extra,
        resolve,
        reject,
        timer: null,
        send: () => {
          clearTimeout(pending.timer);
          if (this.client.connected) this.client.publish(topic, JSON.stringify(payload), { qos: 1 });
          // Until the answer arrives, the same submission again: it is never stored twice.
          pending.timer = setTimeout(() => pending.send(), RESUBMIT_MS);
        },
      };
      this.pending.set(id, pending);
      pending.send();
    });
  }

  /** Submits an action to a session; resolves with its acknowledgement (accepted or not). */
  submit(sessionId, action) {
    return this.#submitRaw(sessionId, action, []);
  }

  /** Asks for a new session (applicants); resolves with the acknowledgement. */
  open(request) {
    const id = newId("open");
    return this.#send(id, `${TOPIC}/open/${this.subject}`, { v: 1, ...request, client_msg_id: id });
  }

  /** Says whether this member of staff takes sessions. */
  availability(status) {
    return this.#submitRaw(null, { type: "availability", status }, []);
  }

  /** Publishes this participant's typing indicator (`kind`: "typing" or "note-typing"). */
  typing(sessionId, typing, kind = "typing") {
    if (!this.client.connected) return;
    this.client.publish(`${TOPIC}/sessions/${sessionId}/${kind}/${this.subject}`, JSON.stringify({ v: 1, typing }), { qos: 0 });
  }

  presence(sessionId, status) {
    if (!this.client.connected) return;
    this.client.publish(`${TOPIC}/sessions/${sessionId}/presence/${this.subject}`, JSON.stringify({ v: 1, status }), { qos: 1 });
  }

  /** Ends the connection; pending submissions are dropped. */
  end() {
    for (const pending of this.pending.values()) clearTimeout(pending.timer);
    this.pending.clear();
    this.client.end(true);
  }
}

/** Text for an event entry, for people. */
export function describeEvent(entry) {
  const event = entry.event || {};
  switch (event.type) {
    case "opened": return "Conversation started";
    case "joined": return `${event.subject} joined`;
    case "left": return `${event.subject} left`;
    case "transferred": return event.to_agent ? `Transferred to ${event.to_agent}` : `Returned to the ${event.to_team} queue`;
    case "escalated": return event.reason ? `Escalated: ${event.reason}` : "Escalated to a supervisor";
    case "status_changed": return `Status: ${event.status}`;
    case "closed": return event.reason ? `Conversation closed: ${event.reason}` : "Conversation closed";
    default: return "Event";
  }
}
