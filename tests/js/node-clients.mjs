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

async function roundTrip(kind, url, protocolVersion) {
  const clientId = `js-node-${kind}-v${protocolVersion}`;
  const client = mqtt.connect(url, {
    clientId,
    username: clientId,
    password: config.tokens[clientId],
    protocolVersion,
    ca: config.ca,
    reconnectPeriod: 0,
    connectTimeout: TIMEOUT_MS,
  });
  try {
    await withTimeout(new Promise((resolve, reject) => {
      client.once("connect", resolve);
      client.once("error", reject);
    }), `${clientId} connect`);
    const topic = `sandbox/js/${kind}/${protocolVersion}`;
    const granted = await client.subscribeAsync(topic, { qos: 1 });
    // MQTT.js rejects a SUBACK failure; the code is on the packet it carries.
    const deniedCode = await client.subscribeAsync("cc/v1/queue", { qos: 1 }).then(
      (granted) => granted[0].qos,
      (error) => error.packet?.granted?.[0] ?? String(error),
    );
    const received = withTimeout(new Promise((resolve) => {
      client.once("message", (t, payload, packet) => resolve({ t, payload: payload.toString(), packet }));
    }), `${clientId} message`);
    const properties = protocolVersion === 5 ? { contentType: "text/plain", userProperties: { trace: clientId } } : undefined;
    await client.publishAsync(topic, `hello from ${clientId}`, { qos: 1, properties });
    const message = await received;
    return {
      kind,
      protocolVersion,
      ok: true,
      grantedQos: granted[0].qos,
      deniedCode,
      payload: message.payload,
      deliveredQos: message.packet.qos,
      contentType: message.packet.properties?.contentType ?? null,
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
