// MQTT.js in Node against a running courtchat, over WebSocket as a browser connects, with MQTT
// 3.1.1 and 5.0: a shared subscription's messages split between its members, a retained message
// with its properties, and a persistent session's messages kept while it was away.
// Driven by tests/tests/e2e/mqttjs.rs: configuration as JSON in argv[2], one JSON line of
// results on stdout.
import mqtt from "mqtt";

const config = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 10_000;
const QUIET_MS = 400;

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Connects `clientId`; every message it receives (from the start) is collected in `messages`.
async function connect(clientId, protocolVersion, options = {}) {
  const client = mqtt.connect(config.url, {
    clientId,
    username: clientId,
    password: config.tokens[clientId],
    protocolVersion,
    reconnectPeriod: 0,
    connectTimeout: TIMEOUT_MS,
    ...options,
  });
  client.messages = [];
  client.on("message", (topic, payload, packet) => {
    client.messages.push({
      topic,
      payload: payload.toString(),
      qos: packet.qos,
      retain: packet.retain,
      userProperties: packet.properties?.userProperties ?? null,
      contentType: packet.properties?.contentType ?? null,
    });
  });
  client.connack = await withTimeout(new Promise((resolve, reject) => {
    client.once("connect", resolve);
    client.once("error", reject);
  }), `${clientId} connect`);
  return client;
}

async function scenario(protocolVersion) {
  const id = (name) => `js-${name}-v${protocolVersion}`;
  const v5 = protocolVersion === 5;
  const clients = [];
  try {
    const publisher = await connect(id("pub"), protocolVersion);
    clients.push(publisher);

    // Shared subscription: four messages, two to each member.
    const shared = `sandbox/js/shared/${protocolVersion}`;
    const members = [await connect(id("member-a"), protocolVersion), await connect(id("member-b"), protocolVersion)];
    clients.push(...members);
    const sharedGranted = [];
    for (const member of members) {
      const granted = await member.subscribeAsync(`$share/js/${shared}`, { qos: 1 });
      sharedGranted.push(granted[0].qos);
    }
    for (const n of [0, 1, 2, 3]) {
      await publisher.publishAsync(shared, `job ${n}`, { qos: 1 });
    }
    await sleep(QUIET_MS);
    const sharedCounts = members.map((member) => member.messages.length);

    // Retained message, with its user properties (MQTT 5) in order.
    const retainedTopic = `sandbox/js/retained/${protocolVersion}`;
    const properties = v5 ? { contentType: "text/plain", userProperties: { b: ["2", "3"], a: "1" } } : undefined;
    await publisher.publishAsync(retainedTopic, "kept", { qos: 1, retain: true, properties });
    const reader = await connect(id("reader"), protocolVersion);
    clients.push(reader);
    await reader.subscribeAsync(retainedTopic, { qos: 1 });
    await sleep(QUIET_MS);
    const retained = reader.messages[0] ?? null;

    // Persistent session: what is published while the client is away, QoS 0 included.
    const queueTopic = `sandbox/js/queue/${protocolVersion}`;
    const persistent = v5 ? { clean: false, properties: { sessionExpiryInterval: 60 } } : { clean: false };
    const away = await connect(id("away"), protocolVersion, persistent);
    await away.subscribeAsync(queueTopic, { qos: 1 });
    await away.endAsync();
    await sleep(QUIET_MS);
    await publisher.publishAsync(queueTopic, "first", { qos: 1 });
    await publisher.publishAsync(queueTopic, "second", { qos: 0 });
    await publisher.publishAsync(queueTopic, "third", { qos: 1 });
    const back = await connect(id("away"), protocolVersion, persistent);
    clients.push(back);
    await sleep(QUIET_MS);

    return {
      protocolVersion,
      ok: true,
      sharedGranted,
      sharedCounts,
      retained,
      sessionPresent: back.connack.sessionPresent,
      queued: back.messages.map((m) => [m.payload, m.qos]),
    };
  } catch (error) {
    return { protocolVersion, ok: false, error: String(error) };
  } finally {
    for (const client of clients) {
      client.end(true);
    }
  }
}

const results = [];
for (const protocolVersion of [4, 5]) {
  results.push(await scenario(protocolVersion));
}
console.log(JSON.stringify(results));
process.exit(0);
