// The people around a page under test, as real clients of the server: members of staff and
// applicants over MQTT 5 (MQTT.js in Node, as a desk or a phone would be), and the admin API
// over HTTP. Each answers on its own ack topic; `submit` waits for the acknowledgement.
import mqtt from "mqtt";

const WAIT_MS = 15_000;

export function expect(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
}

/** A JSON request to the admin API at `base`; resolves with {status, body}. */
export async function http(base, path, { method = "GET", token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Signs `username` in; resolves with the token. */
export async function signIn(base, username, password) {
  const { status, body } = await http(base, "/v1/login", { method: "POST", body: { username, password } });
  expect(status === 200, `${username} signs in (got ${status})`);
  return body.token;
}

/**
 * One MQTT 5 connection as `subject` with `token`: `submit(topic, action)` publishes with a
 * fresh client_msg_id and resolves with the acknowledgement; `until(test, what)` waits for a
 * publish received; `publish(topic, payload)` publishes raw (resolves false when the gateway
 * refuses it).
 */
export async function connect(mqttUrl, subject, token) {
  const client = await mqtt.connectAsync(mqttUrl, {
    clientId: subject, username: subject, password: token, protocolVersion: 5, reconnectPeriod: 0,
  });
  const waiting = new Map();
  const seen = [];
  const watchers = [];
  client.on("message", (topic, payload) => {
    let data;
    try {
      data = JSON.parse(payload.toString());
    } catch {
      return;
    }
    if (topic === `cc/v1/clients/${subject}/ack`) {
      waiting.get(data.client_msg_id)?.(data);
      return;
    }
    seen.push({ topic, data });
    for (const watch of [...watchers]) watch();
  });
  await client.subscribeAsync(`cc/v1/clients/${subject}/ack`, { qos: 1 });
  let counter = 0;
  return {
    subject,
    client,
    async submit(topic, action) {
      counter += 1;
      const id = `${subject}-${counter}`;
      const answer = new Promise((resolve, reject) => {
        waiting.set(id, resolve);
        setTimeout(() => reject(new Error(`${subject}: no answer to ${action.type || "open"}`)), WAIT_MS);
      });
      await client.publishAsync(topic, JSON.stringify({ v: 1, client_msg_id: id, ...action }), { qos: 1 });
      return answer;
    },
    async publish(topic, payload, qos = 1) {
      // A gateway may answer a refused publish by ending the connection: that is false too.
      const closed = new Promise((resolve) => client.once("close", () => resolve(false)));
      const sent = client.publishAsync(topic, typeof payload === "string" ? payload : JSON.stringify(payload), { qos });
      return Promise.race([sent.then(() => true, () => false), closed]);
    },
    isConnected() {
      return client.connected;
    },
    subscribe(topics) {
      return client.subscribeAsync(topics, { qos: 1 });
    },
    until(test, what) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = seen.find(test);
          if (!found) return false;
          const index = watchers.indexOf(check);
          if (index >= 0) watchers.splice(index, 1);
          resolve(found);
          return true;
        };
        if (check()) return;
        watchers.push(check);
        setTimeout(() => reject(new Error(`${subject} never saw ${what}`)), WAIT_MS);
      });
    },
    end: () => client.endAsync(),
  };
}

/** A member of staff over MQTT; `act(session, action)` submits to a session and expects it
    accepted. */
export async function staff(mqttUrl, name, token) {
  const connection = await connect(mqttUrl, name, token);
  return {
    ...connection,
    async act(session, action) {
      const ack = await connection.submit(`cc/v1/sessions/${session}/submit/${name}`, action);
      expect(ack.status === "accepted", `${name}'s ${action.type} is accepted: ${JSON.stringify(ack)}`);
      return ack;
    },
  };
}

/** An applicant on the public phone path: a token from the API, a connection, a session. */
export async function applicant(base, mqttUrl, firstMessage) {
  const { status, body } = await http(base, "/v1/applicant-tokens", { method: "POST" });
  expect(status === 200, `an applicant token (got ${status})`);
  const connection = await connect(mqttUrl, body.subject, body.token);
  const ack = await connection.submit(`cc/v1/open/${body.subject}`, {
    channel: body.channel,
    ...(firstMessage ? { first_message: firstMessage } : {}),
  });
  expect(ack.status === "accepted", `the session opens: ${JSON.stringify(ack)}`);
  const session = ack.session_id;
  // There, as the applicant page says it (the server ends a session whose applicant is gone).
  await connection.publish(`cc/v1/sessions/${session}/presence/${body.subject}`, { v: 1, status: "online" });
  return {
    ...connection,
    session,
    async write(text) {
      const answer = await connection.submit(`cc/v1/sessions/${session}/submit/${body.subject}`, { type: "message", body: text });
      expect(answer.status === "accepted", `the applicant's message is accepted: ${JSON.stringify(answer)}`);
      return answer;
    },
  };
}
