// MQTT.js in Node against a running courtchat: every listener kind, MQTT 3.1.1 and 5.0.
// Driven by tests/tests/e2e/mqttjs.rs, which passes the addresses, the CA certificate and one
// token per client id as JSON in argv[2], and reads one JSON line of results from stdout.
import mqtt from "mqtt";

const config = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 10_000;

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
}

// Each client subscribes at QoS 2 and publishes to itself two QoS 2 messages and a QoS 1 one.
// MQTT 5 clients also ask for a longer keep alive than the server's maximum, allow topic
// aliases, give their subscription an identifier and send properties, to see what comes back.
async function roundTrip(kind, url, protocolVersion) {
  const clientId = `js-node-${kind}-v${protocolVersion}`;
  const v5 = protocolVersion === 5;
  const client = mqtt.connect(url, {
    clientId,
    username: clientId,
    password: config.tokens[clientId],
    protocolVersion,
    ca: config.ca,
    reconnectPeriod: 0,
    connectTimeout: TIMEOUT_MS,
    keepalive: v5 ? 600 : 60,
    properties: v5 ? { topicAliasMaximum: 4 } : undefined,
  });
  try {
    const connack = await withTimeout(new Promise((resolve, reject) => {
      client.once("connect", resolve);
      client.once("error", reject);
    }), `${clientId} connect`);
    const topic = `sandbox/js/${kind}/${protocolVersion}`;
    const granted = await client.subscribeAsync(topic, {
      qos: 2,
      properties: v5 ? { subscriptionIdentifier: 42 } : undefined,
    });
    // MQTT.js rejects a SUBACK failure; the code is on the packet it carries.
    const deniedCode = await client.subscribeAsync("cc/v1/queue", { qos: 1 }).then(
      (granted) => granted[0].qos,
      (error) => error.packet?.granted?.[0] ?? String(error),
    );
    const received = withTimeout(new Promise((resolve) => {
      const messages = [];
      client.on("message", (t, payload, packet) => {
        messages.push({ t, payload: payload.toString(), packet });
        if (messages.length === 3) resolve(messages);
      });
    }), `${clientId} messages`);
    const properties = v5
      ? {
          contentType: "text/plain",
          payloadFormatIndicator: true,
          responseTopic: `${topic}/replies`,
          correlationData: Buffer.from("req-1"),
          userProperties: { trace: clientId },
        }
      : undefined;
    for (const [n, qos] of [[1, 2], [2, 2], [3, 1]]) {
      await client.publishAsync(topic, `hello ${n} from ${clientId}`, { qos, properties });
    }
    // MQTT.js hands a QoS 2 message over at PUBREL, so the order of arrival is not the order sent.
    const messages = (await received).sort((a, b) => a.payload.localeCompare(b.payload));
    const [message] = messages;
    const props = message.packet.properties ?? {};
    return {
      kind,
      protocolVersion,
      ok: true,
      grantedQos: granted[0].qos,
      deniedCode,
      payload: message.payload,
      deliveredQos: messages.map((m) => m.packet.qos),
      topics: messages.map((m) => m.t),
      topicAliases: messages.map((m) => m.packet.properties?.topicAlias ?? null),
      subscriptionIdentifiers: [].concat(props.subscriptionIdentifier ?? []),
      serverKeepAlive: connack.properties?.serverKeepAlive ?? null,
      contentType: props.contentType ?? null,
      payloadFormatIndicator: props.payloadFormatIndicator ?? null,
      responseTopic: props.responseTopic ?? null,
      correlationData: props.correlationData?.toString() ?? null,
      userProperties: props.userProperties ?? null,
    };
  } catch (error) {
    return { kind, protocolVersion, ok: false, error: String(error) };
  } finally {
    client.end(true);
  }
}

const results = [];
for (const [kind, url] of Object.entries(config.urls)) {
  for (const protocolVersion of [4, 5]) {
    results.push(await roundTrip(kind, url, protocolVersion));
  }
}
console.log(JSON.stringify(results));
process.exit(0);
