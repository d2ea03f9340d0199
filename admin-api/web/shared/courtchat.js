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
/** The presence values of PROTOCOL.md: anything else on a presence topic is ignored, never shown. */
export const PRESENCE = Object.freeze(["online", "away", "offline"]);
/** A PUBACK reason code from this value on is a refusal (MQTT 5: 0x87 "not authorized"). */
const PUBACK_REFUSED = 0x80;

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
    /** Told "closed": nothing more will come, so it is never subscribed or resynced again
        (the gateway forgets a closed session's members, and would refuse and record it). */
    this.closed = false;
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
 * `presence(sessionId, subject, status)` (only the values of PRESENCE), `queue(update)`,
 * `assignment(notice)`, `connection(state)` ("online", "offline", "reconnecting"),
 * `subscribed()` (after every (re)connection, once the sessions followed are subscribed
 * again), `closed(sessionId)`, `error(error, sessionId?)` (a session that could not be
 * followed again after a reconnect).
 */
export class Participant {
  constructor({ url, subject, token, staff = false, will, handlers = {} }) {
    this.subject = subject;
    this.staff = staff;
    this.handlers = handlers;
    this.streams = new Map();
    this.pending = new Map();
    this.connectedOnce = false;
    this.options = {
      clientId: subject,
      username: subject,
      password: token,
      protocolVersion: 5,
      clean: true,
      // Subscriptions are made again by #connected, which knows what is still to follow;
      // MQTT.js's own resubscription would ask again for sessions long closed.
      resubscribe: false,
      reconnectPeriod: 2000,
      connectTimeout: 10000,
      properties: { maximumPacketSize: MAX_PACKET },
    };
    this.url = url;
    this.#open(will);
  }

  /** A new MQTT client; events of a client this one replaced are ignored. */
  #open(will) {
    const client = mqtt.connect(this.url, { ...this.options, will });
    this.client = client;
    this.ready = new Promise((resolve, reject) => {
      client.once("connect", resolve);
      client.once("error", reject);
    });
    const current = (fn) => (...args) => {
      if (this.client === client) fn(...args);
    };
    client.on("connect", current(() => {
      this.#connected().catch((error) => this.#emit("error", error));
    }));
    client.on("reconnect", current(() => this.#emit("connection", "reconnecting")));
    client.on("offline", current(() => this.#emit("connection", "offline")));
    client.on("close", current(() => this.#emit("connection", "offline")));
    client.on("message", current((topic, payload) => this.#message(topic, payload)));
  }

  /**
   * Connects again with `will` as the MQTT will, which is fixed when a connection is made: an
   * applicant learns its session (and so its presence topic) only after its first connection
   * opened it. Resolves once connected; what is followed is subscribed again.
   */
  async useWill(will) {
    const old = this.client;
    this.client = null;
    // The old connection ends first, or the new one (the same client id) would take it over.
    await old.endAsync().catch(() => {});
    this.#open(will);
    await this.ready;
  }

  /**
   * Connects again with `token` as the MQTT password: a renewed token for the same subject. The
   * gateway checks a token when a connection is made and ends the connection when it expires,
   * so the page moves to the new one while the old still works; what is followed is subscribed
   * again and resynced, as after any reconnection, so nothing is missed.
   */
  async useToken(token) {
    this.options.password = token;
    await this.useWill(this.client ? this.client.options.will : undefined);
  }

  /** Reconnects from now on without a will: the gateway checks a will when it connects, and
      one on a session the gateway has forgotten (closed, access over) would be refused. */
  dropWill() {
    if (this.client) this.client.options.will = undefined;
  }

  get connected() {
    return Boolean(this.client && this.client.connected);
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
    for (const [sessionId, stream] of [...this.streams]) {
      // A closed session has nothing more to say, and its access ends: never subscribed again.
      if (stream.closed) continue;
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
    this.#emit("subscribed");
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
    // Only a known value is passed on: a status is shown as fixed words, never as sent.
    if (kind === "presence" && PRESENCE.includes(data.status)) this.#emit("presence", sessionId, parts[5], data.status);
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
    if (entry.kind === "event" && entry.event && entry.event.type === "closed") {
      stream.closed = true;
      this.#emit("closed", stream.sessionId);
    }
  }

  /** Whether this participant was told that the session closed. */
  isClosed(sessionId) {
    const stream = this.streams.get(sessionId);
    return Boolean(stream && stream.closed);
  }

  async #subscribeSession(sessionId) {
    const base = `${TOPIC}/sessions/${sessionId}`;
    const topics = [`${base}/messages`, `${base}/receipts`, `${base}/typing/+`, `${base}/presence/+`];
    if (this.staff) topics.push(`${base}/notes`, `${base}/lock`, `${base}/note-typing/+`);
    if (!this.client) throw new Error("not connected");
    const granted = await this.client.subscribeAsync(topics, { qos: 1 });
    const refused = granted.filter((g) => g.qos > 2);
    if (refused.length) throw new Error(`not allowed to follow session ${sessionId}`);
  }

  /** Follows a session: its topics, then everything from the start (or from `fromSeq`). */
  async follow(sessionId) {
    if (!this.streams.has(sessionId)) this.streams.set(sessionId, new Stream(sessionId));
    // Closed, and all of it here: nothing to subscribe to (and the gateway may refuse it).
    if (this.streams.get(sessionId).closed) return;
    await this.#subscribeSession(sessionId);
    await this.resync(sessionId);
  }

  /** Stops following a session. */
  async unfollow(sessionId) {
    const base = `${TOPIC}/sessions/${sessionId}`;
    this.streams.delete(sessionId);
    const topics = [`${base}/messages`, `${base}/receipts`, `${base}/typing/+`, `${base}/presence/+`];
    if (this.staff) topics.push(`${base}/notes`, `${base}/lock`, `${base}/note-typing/+`);
    if (this.client) await this.client.unsubscribeAsync(topics).catch(() => {});
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
          if (this.connected) {
            this.client.publish(topic, JSON.stringify(payload), { qos: 1 }, (error) => {
              // The gateway refused the publish itself (not a member any more: a session it
              // forgot, a token that lost its rights): no answer will ever come, so resending
              // would only be refused again. Answered here as the pipeline would refuse it.
              if (error && error.code >= PUBACK_REFUSED && this.pending.get(id) === pending) {
                this.pending.delete(id);
                clearTimeout(pending.timer);
                pending.resolve({ v: 1, client_msg_id: id, status: "rejected", reason: "not_allowed", refused_by_gateway: true });
              }
            });
          }
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
    if (!this.connected) return;
    this.client.publish(`${TOPIC}/sessions/${sessionId}/${kind}/${this.subject}`, JSON.stringify({ v: 1, typing }), { qos: 0 });
  }

  /** Publishes this participant's presence in a session (one of PRESENCE). */
  presence(sessionId, status) {
    if (!this.connected || !PRESENCE.includes(status)) return;
    this.client.publish(`${TOPIC}/sessions/${sessionId}/presence/${this.subject}`, ...presencePublish(status));
  }

  /** The will that says `offline` in `sessionId` when this connection drops unannounced. */
  presenceWill(sessionId) {
    const [payload, { qos }] = presencePublish("offline");
    return { topic: `${TOPIC}/sessions/${sessionId}/presence/${this.subject}`, payload, qos, retain: false };
  }

  /** Ends the connection; pending submissions are dropped. `leaving`: a last presence
      (`offline`) in that session first, sent before the connection closes. */
  end({ leaving } = {}) {
    for (const pending of this.pending.values()) clearTimeout(pending.timer);
    this.pending.clear();
    const client = this.client;
    if (!client) return;
    this.client = null;
    if (leaving && client.connected) {
      client.publish(`${TOPIC}/sessions/${leaving}/presence/${this.subject}`, ...presencePublish("offline"));
      // Not forced, so the publish goes before DISCONNECT; forced if the network is gone.
      client.end(false);
      setTimeout(() => client.end(true), 2000);
      return;
    }
    client.end(true);
  }
}

function presencePublish(status) {
  return [JSON.stringify({ v: 1, status }), { qos: 1 }];
}

/** Text for an event entry, for people. */
export function describeEvent(entry) {
  const event = entry.event || {};
  switch (event.type) {
    case "opened": return "Conversation started";
    case "joined": return `${event.subject} joined`;
    case "left": return `${event.subject} left`;
    // The live event may leave the team out (routing is not for the applicant, who reads the
    // same topic); a resync or the transcript has it.
    case "transferred": return event.to_agent ? `Transferred to ${event.to_agent}` : event.to_team ? `Returned to the ${event.to_team} queue` : "Returned to the queue";
    case "escalated": return event.reason ? `Escalated: ${event.reason}` : "Escalated to a supervisor";
    case "status_changed": return `Status: ${event.status}`;
    case "closed": return event.reason ? `Conversation closed: ${event.reason}` : "Conversation closed";
    default: return "Event";
  }
}
